public import Logging
public import PostgresNIO
public import TenderCore

/// Feed signals from PostgreSQL: `NOTIFY` on `tender_payment_events` from each replica's
/// `PostgresEventAnnouncer` once payment events committed (payload: the newest writing
/// transaction's id), and on `tender_standing` from the triggers of migration 9 (`token:`,
/// `client:` or `merchant:` and an id). One pooled connection is held for `LISTEN` while it runs.
public struct PostgresFeedSignals: FeedSignals {
  public static let eventsChannel = "tender_payment_events"
  public static let standingChannel = "tender_standing"

  private let client: PostgresClient
  private let logger: Logger

  public init(client: PostgresClient, logger: Logger) {
    self.client = client
    self.logger = logger
  }

  public func listen(_ receive: @escaping @Sendable (FeedSignal) -> Void) async throws {
    try await self.client.withConnection { connection in
      try await connection.listen(on: Self.eventsChannel) { events in
        try await connection.listen(on: Self.standingChannel) { standing in
          // Both channels are listened to: whatever happened before is read afresh.
          receive(.resynchronize)
          try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
              for try await notification in events {
                receive(.events(transaction: Int64(notification.payload)))
              }
            }
            group.addTask {
              for try await notification in standing {
                if let change = Self.change(notification.payload) { receive(.standing(change)) }
              }
            }
            // Either sequence ending means the connection is gone.
            try await group.next()
            group.cancelAll()
            throw PostgresFeedSignalsEnded()
          }
        }
      }
    }
  }

  static func change(_ payload: String) -> StandingChange? {
    guard let colon = payload.firstIndex(of: ":") else { return nil }
    let id = String(payload[payload.index(after: colon)...])
    switch payload[..<colon] {
    case "token": return .token(id)
    case "client": return .client(id)
    case "merchant": return .merchant(id)
    default: return nil
    }
  }
}

/// The `LISTEN` connection stopped delivering notifications.
struct PostgresFeedSignalsEnded: Error, CustomStringConvertible {
  var description: String { "the LISTEN connection ended" }
}
