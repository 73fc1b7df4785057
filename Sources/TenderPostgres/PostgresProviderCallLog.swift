import Foundation
public import Logging
public import PostgresNIO
public import TenderCore
public import Tracing

/// `ProviderCallLog` on PostgreSQL: the `provider_requests` table of migrations 5 and 6, written
/// before each provider call and ended with its outcome. Every statement on the table is here
/// (the fast path's claiming and finishing statements in PostgresPaymentStore aside, which write
/// it in the same round trip as the payment).
public struct PostgresProviderCallLog: ProviderCallLog {
  private let client: PostgresClient
  private let logger: Logger
  private let database: DatabaseCalls

  public init(
    client: PostgresClient, logger: Logger, tracer: any Tracer = NoOpTracer(),
    callTimeout: Duration? = PostgresStores.defaultCallTimeout
  ) {
    self.client = client
    self.logger = logger
    self.database = DatabaseCalls(tracer: tracer, timeout: callTimeout)
  }

  public func begin(_ call: ProviderCall, owner: KeyOwner, lockFor: Duration) async throws -> Int64 {
    precondition(owner.merchant == call.merchant, "the key of the call's merchant")
    return try await self.database.run("provider_calls.begin") {
      let rows = try await self.client.query(
        """
        WITH owner AS (
          UPDATE idempotency_keys SET provider_attempted = true,
            locked_until = now() + \(PostgresIdempotencyStore.milliseconds(lockFor)) * interval '1 millisecond', update_time = now()
          WHERE merchant_id = \(owner.merchant.rawValue) AND idempotency_key = \(owner.key) AND owner_token = \(owner.token)
            AND recovery_point <> 'finished'
          RETURNING merchant_id
        )
        INSERT INTO provider_requests (merchant_id, payment_id, refund_id, operation, provider_idempotency_key, outcome, amount_minor)
        SELECT merchant_id, \(call.payment.rawValue), \(call.refund?.rawValue), \(call.operation.rawValue), \(call.providerKey), 'unknown',
          \(call.amountMinorUnits)
        FROM owner
        RETURNING request_id
        """,
        logger: self.logger
      )
      for try await id in rows.decode(Int64.self) { return id }
      throw FencedOut(owner)
    }
  }

  public func end(_ call: ProviderCallEnd, owner: KeyOwner) async throws {
    _ = try await self.database.run("provider_calls.end") {
      try await self.client.query(
        """
        UPDATE provider_requests SET outcome = \(call.outcome.rawValue), finish_time = now()
        WHERE request_id = \(call.requestID) AND finish_time IS NULL AND EXISTS (
          SELECT 1 FROM idempotency_keys WHERE merchant_id = \(owner.merchant.rawValue) AND idempotency_key = \(owner.key)
            AND owner_token = \(owner.token) AND recovery_point <> 'finished'
        )
        """,
        logger: self.logger
      )
    }
  }

  public func latest(merchant: MerchantID, providerKey: String) async throws -> ProviderCall? {
    try await self.database.run("provider_calls.latest") {
      let rows = try await self.client.query(
        """
        SELECT payment_id, refund_id, operation, outcome, amount_minor FROM provider_requests
        WHERE merchant_id = \(merchant.rawValue) AND provider_idempotency_key = \(providerKey)
        ORDER BY request_id DESC LIMIT 1
        """,
        logger: self.logger
      )
      for try await (payment, refund, operation, outcome, amount) in rows.decode(
        (String?, String?, String, String, Int64?).self)
      {
        guard let payment, let operation = ProviderCall.Operation(rawValue: operation),
          let outcome = ProviderCall.Outcome(rawValue: outcome)
        else {
          throw StoredDataError(what: "provider request")
        }
        return ProviderCall(
          merchant: merchant, payment: PaymentID(unchecked: payment), refund: refund.map(RefundID.init(unchecked:)),
          operation: operation,
          providerKey: providerKey, outcome: outcome, amountMinorUnits: amount
        )
      }
      return nil
    }
  }

  /// Ends a call inside the transaction that applies its outcome.
  static func finish(_ call: ProviderCallEnd, _ connection: PostgresConnection, logger: Logger) async throws {
    try await connection.query(
      "UPDATE provider_requests SET outcome = \(call.outcome.rawValue), finish_time = now() WHERE request_id = \(call.requestID)",
      logger: logger
    )
  }
}
