public import Logging
public import PostgresNIO
public import ServiceLifecycle
import Synchronization
import TenderCore

/// Tells every replica's event feed (through `NOTIFY` on `PostgresFeedSignals.eventsChannel`)
/// that payment events were committed, once they are, from outside the transactions that wrote
/// them.
///
/// A `NOTIFY` holds one lock of the whole database from its transaction's commit until that
/// commit is flushed, so payment transactions that each notified could never share a flush: each
/// waited for the one before (migration 10 dropped that trigger). Here the stores report the
/// newest transaction a call wrote events in once it has committed, and one announcement names
/// the newest of those reported since the last: at most one per `interval`, however many
/// payments commit meanwhile. Signals carry nothing anyone relies on (a feed reads the events
/// themselves, and reads anyway every few seconds), so an announcement lost to a failure or a
/// crash only delays other replicas' streams.
public final class PostgresEventAnnouncer: Service, Sendable {
  private let client: PostgresClient
  private let interval: Duration
  private let logger: Logger
  /// The newest committed transaction not yet announced.
  private let pending = Mutex<Int64?>(nil)
  private let wakeUps: AsyncStream<Void>
  private let wake: AsyncStream<Void>.Continuation

  public init(client: PostgresClient, interval: Duration = .milliseconds(10), logger: Logger) {
    self.client = client
    self.interval = interval
    self.logger = logger
    (self.wakeUps, self.wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
  }

  /// Notes that `transaction` committed payment events.
  public func committed(transaction: Int64) {
    self.pending.withLock { $0 = max($0 ?? transaction, transaction) }
    self.wake.yield()
  }

  public func run() async throws {
    await withGracefulShutdownHandler {
      for await _ in self.wakeUps {
        await self.announcePending()
        // What commits meanwhile waits for the next announcement.
        try? await Sleep.for(self.interval)
      }
    } onGracefulShutdown: {
      self.wake.finish()
    }
    // What the last calls committed.
    await self.announcePending()
  }

  private func announcePending() async {
    let pending = self.pending.withLock { pending in
      defer { pending = nil }
      return pending
    }
    guard let transaction = pending else { return }
    do {
      try await self.client.query(
        "SELECT pg_notify(\(PostgresFeedSignals.eventsChannel), \(String(transaction)))", logger: self.logger)
    } catch {
      self.logger.warning(
        "could not announce committed payment events; other replicas read them at their next safety read",
        metadata: ["problem": "\(String(reflecting: error))"])
    }
  }
}

/// The newest transaction a store call wrote payment events in, noted inside the call's
/// transaction and announced once the call has returned (committed).
final class WrittenEvents: Sendable {
  @TaskLocal static var current: WrittenEvents?
  private let newest = Mutex<Int64?>(nil)

  /// Notes that the current store call's transaction `transaction` wrote payment events.
  static func record(transaction: Int64) {
    Self.current?.newest.withLock { $0 = max($0 ?? transaction, transaction) }
  }

  /// Runs one store call and announces what it wrote when it returns; nothing when it throws.
  static func announcing<T: Sendable>(
    to announcer: PostgresEventAnnouncer, _ body: () async throws -> T
  ) async throws -> T {
    let written = WrittenEvents()
    let result = try await Self.$current.withValue(written) { try await body() }
    if let transaction = written.newest.withLock({ $0 }) { announcer.committed(transaction: transaction) }
    return result
  }
}
