import Foundation
public import Logging
public import PostgresNIO
public import TenderCore
public import Tracing

/// `WebhookInbox` on PostgreSQL (the `webhook_inbox` table of migration 8). Applying an event
/// locks its inbox row first (skipping one another applier holds), then the payment or refund,
/// and marks the row in the same transaction as the change.
public struct PostgresWebhookInbox: WebhookInbox {
  private let client: PostgresClient
  private let logger: Logger
  private let database: DatabaseCalls

  public init(
    client: PostgresClient, logger: Logger, tracer: any Tracer = NoOpTracer(),
    callTimeout: Duration? = PostgresStores.defaultCallTimeout, movements: MoneyMovements? = nil,
    announcer: PostgresEventAnnouncer? = nil
  ) {
    self.client = client
    self.logger = logger
    self.database = DatabaseCalls(tracer: tracer, timeout: callTimeout, movements: movements, announcer: announcer)
  }

  public func receive(_ event: WebhookEvent) async throws -> Bool {
    try await self.database.run("webhooks.receive") {
      let rows = try await self.client.query(
        """
        INSERT INTO webhook_inbox (provider, event_id, event_type, body, signed_time)
        VALUES (\(event.provider), \(event.eventID), \(event.type), \(ByteBuffer(bytes: event.body)), \(event.signedTime))
        ON CONFLICT (provider, event_id) DO NOTHING
        RETURNING 1
        """,
        logger: self.logger
      )
      return try await rows.decode(Int.self).reduce(0, +) == 1
    }
  }

  public func due(limit: Int) async throws -> [WebhookEvent] {
    try await self.database.run("webhooks.due") {
      let rows = try await self.client.query(
        """
        SELECT provider, event_id, event_type, body, signed_time, attempts FROM webhook_inbox
        WHERE state = 'received' AND next_attempt_time <= now()
        ORDER BY next_attempt_time, receive_time LIMIT \(limit)
        """,
        logger: self.logger
      )
      var events: [WebhookEvent] = []
      for try await (provider, id, type, body, signed, attempts) in rows.decode(
        (String, String, String, ByteBuffer, Date, Int).self)
      {
        events.append(
          WebhookEvent(
            provider: provider, eventID: id, type: type, body: Array(buffer: body), signedTime: signed,
            attempts: attempts))
      }
      return events
    }
  }

  public func applyToPayment(
    _ event: WebhookEvent,
    providerPaymentID: String,
    tenderPaymentID: PaymentID?,
    _ change: @escaping @Sendable (inout PaymentRecord) -> WebhookOutcome
  ) async throws -> WebhookOutcome? {
    let logger = self.logger
    return try await self.database.run("webhooks.apply_payment", recordsMovements: true) {
      try await unwrappingTransactionError {
        try await self.client.withTransaction(logger: logger) { connection -> WebhookOutcome? in
          guard try await Self.lock(event, connection, logger: logger) else { return .already }
          let found = try await connection.query(
            """
            SELECT payment_id, merchant_id FROM payments
            WHERE provider_payment_id = \(providerPaymentID) OR (payment_id = \(tenderPaymentID?.rawValue) AND provider_payment_id IS NULL)
            ORDER BY provider_payment_id NULLS LAST LIMIT 1
            """,
            logger: logger
          )
          var target: (String, String)?
          for try await row in found.decode((String, String).self) { target = row }
          guard let (id, merchant) = target,
            let record = try await PostgresPaymentStore.lock(
              PaymentID(unchecked: id), merchant: MerchantID(unchecked: merchant), connection, logger: logger)
          else { return nil }
          var outcome = WebhookOutcome.already
          _ = try await PostgresPaymentStore.change(record, connection, logger: logger, step: nil) { payment in
            if payment.providerPaymentID == nil { payment.providerPaymentID = providerPaymentID }
            outcome = change(&payment)
          }
          try await Self.mark(event, outcome: outcome, connection, logger: logger)
          return outcome
        }
      }
    }
  }

  public func applyToRefunds(
    _ event: WebhookEvent, _ refunds: [(providerRefundID: String, outcome: RefundOutcome)]
  ) async throws -> WebhookOutcome? {
    let logger = self.logger
    return try await self.database.run("webhooks.apply_refunds", recordsMovements: true) {
      try await unwrappingTransactionError {
        try await self.client.withTransaction(logger: logger) { connection -> WebhookOutcome? in
          guard try await Self.lock(event, connection, logger: logger) else { return .already }
          var outcomes: [WebhookOutcome] = []
          for (providerRefundID, outcome) in refunds {
            let found = try await connection.query(
              "SELECT refund_id, merchant_id, status FROM refunds WHERE provider_refund_id = \(providerRefundID) LIMIT 1",
              logger: logger
            )
            var target: (String, String, String)?
            for try await row in found.decode((String, String, String).self) { target = row }
            guard let (id, merchant, status) = target else { continue }
            if status == RefundStatus.pending.rawValue {
              _ = try await PostgresRefundStore.settle(
                RefundID(unchecked: id), merchant: MerchantID(unchecked: merchant), outcome: outcome, step: nil,
                connection, logger: logger)
              if case .pending = outcome { outcomes.append(.already) } else { outcomes.append(.applied) }
            } else {
              // A final refund never moves again; news of another final state is stale.
              switch (status, outcome) {
              case ("succeeded", .succeeded), ("failed", .failed): outcomes.append(.already)
              default: outcomes.append(.stale)
              }
            }
          }
          guard !outcomes.isEmpty else { return nil }
          let result: WebhookOutcome =
            outcomes.contains(.applied) ? .applied : outcomes.contains(.stale) ? .stale : .already
          try await Self.mark(event, outcome: result, connection, logger: logger)
          return result
        }
      }
    }
  }

  public func finish(_ event: WebhookEvent, outcome: WebhookOutcome) async throws {
    _ = try await self.database.run("webhooks.finish") {
      try await self.client.query(
        """
        UPDATE webhook_inbox SET state = 'done', outcome = \(outcome.rawValue), apply_time = now()
        WHERE provider = \(event.provider) AND event_id = \(event.eventID) AND state = 'received'
        """,
        logger: self.logger
      )
    }
  }

  public func postpone(_ event: WebhookEvent, next: Duration, park: Bool) async throws {
    _ = try await self.database.run("webhooks.postpone") {
      try await self.client.query(
        """
        UPDATE webhook_inbox SET attempts = attempts + 1,
          next_attempt_time = now() + \(PostgresIdempotencyStore.milliseconds(next)) * interval '1 millisecond',
          state = CASE WHEN \(park) THEN 'parked' ELSE state END
        WHERE provider = \(event.provider) AND event_id = \(event.eventID) AND state = 'received'
        """,
        logger: self.logger
      )
    }
  }

  public func backlog() async throws -> (waiting: Int, parked: Int) {
    try await self.database.run("webhooks.backlog") {
      let rows = try await self.client.query(
        "SELECT count(*) FILTER (WHERE state = 'received')::bigint, count(*) FILTER (WHERE state = 'parked')::bigint FROM webhook_inbox",
        logger: self.logger
      )
      for try await (waiting, parked) in rows.decode((Int64, Int64).self) { return (Int(waiting), Int(parked)) }
      return (0, 0)
    }
  }

  /// Locks the event's row if it is still to be applied; false when it is done, parked, or
  /// being applied by someone else right now.
  static func lock(_ event: WebhookEvent, _ connection: PostgresConnection, logger: Logger) async throws -> Bool {
    let rows = try await connection.query(
      """
      SELECT 1 FROM webhook_inbox WHERE provider = \(event.provider) AND event_id = \(event.eventID) AND state = 'received'
      FOR UPDATE SKIP LOCKED
      """,
      logger: logger
    )
    return try await rows.decode(Int.self).reduce(0, +) == 1
  }

  static func mark(
    _ event: WebhookEvent, outcome: WebhookOutcome, _ connection: PostgresConnection, logger: Logger
  ) async throws {
    try await connection.query(
      """
      UPDATE webhook_inbox SET state = 'done', outcome = \(outcome.rawValue), apply_time = now()
      WHERE provider = \(event.provider) AND event_id = \(event.eventID)
      """,
      logger: logger
    )
  }
}
