import Foundation
public import Logging
public import PostgresNIO
public import TenderCore
public import Tracing

/// `SettlementStore` on PostgreSQL (the `settlement_checks` table of migration 7).
public struct PostgresSettlementStore: SettlementStore {
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

  public func duePayments(quietFor: Duration, limit: Int) async throws -> [(PaymentRecord, checks: Int)] {
    try await self.due(
      "settlement.due_payments", table: "payments", id: "payment_id", open: "processing",
      providerID: "provider_payment_id",
      columns: PostgresPaymentStore.columns, quietFor: quietFor, limit: limit
    ) { try PostgresPaymentStore.decode($0).0 }
  }

  public func dueRefunds(quietFor: Duration, limit: Int) async throws -> [(RefundRecord, checks: Int)] {
    try await self.due(
      "settlement.due_refunds", table: "refunds", id: "refund_id", open: "pending", providerID: "provider_refund_id",
      columns: PostgresRefundStore.columns, quietFor: quietFor, limit: limit
    ) { try PostgresRefundStore.decode($0).0 }
  }

  /// Rows of `table` still `open` at the provider, quiet for `quietFor`, whose check is due and on
  /// which no keyed operation is open (those are the completer's), oldest change first.
  private func due<Record: Sendable>(
    _ span: String,
    table: String,
    id: String,
    open: String,
    providerID: String,
    columns: String,
    quietFor: Duration,
    limit: Int,
    decode: @escaping @Sendable (PostgresRow) throws -> Record
  ) async throws -> [(Record, checks: Int)] {
    try await self.database.run(span) {
      // Open keys are found by payment (the partial index `idempotency_keys_open`); a refund's
      // key names its payment as well as the refund.
      let rows = try await self.client.query(
        PostgresQuery(
          unsafeSQL: """
            SELECT \(columns), checks FROM (
              SELECT o.*, coalesce(c.checks, 0) AS checks
              FROM \(table) o LEFT JOIN settlement_checks c ON c.object_id = o.\(id)
              WHERE o.status = '\(open)' AND o.\(providerID) IS NOT NULL
                AND o.update_time < now() - $1 * interval '1 millisecond'
                AND (c.object_id IS NULL OR (c.abandon_time IS NULL AND c.next_check_time <= now()))
                AND NOT EXISTS (
                  SELECT 1 FROM idempotency_keys k
                  WHERE k.payment_id = o.payment_id AND k.\(id) = o.\(id) AND k.recovery_point <> 'finished')
              ORDER BY o.update_time LIMIT $2
            ) AS due
            """,
          binds: Self.binds(PostgresIdempotencyStore.milliseconds(quietFor), limit)
        ),
        logger: self.logger
      )
      var due: [(Record, checks: Int)] = []
      for try await row in rows {
        due.append((try decode(row), checks: try row.makeRandomAccess()["checks"].decode(Int.self)))
      }
      return due
    }
  }

  public func postpone(objectID: String, checks: Int, next: Duration, abandon: Bool) async throws {
    try await self.database.run("settlement.postpone") {
      _ = try await self.client.query(
        """
        INSERT INTO settlement_checks (object_id, checks, next_check_time, abandon_time)
        VALUES (\(objectID), \(checks), now() + \(PostgresIdempotencyStore.milliseconds(next)) * interval '1 millisecond', CASE WHEN \(abandon) THEN now() END)
        ON CONFLICT (object_id) DO UPDATE SET checks = excluded.checks, next_check_time = excluded.next_check_time,
          abandon_time = coalesce(settlement_checks.abandon_time, excluded.abandon_time), update_time = now()
        """,
        logger: self.logger
      )
    }
  }

  public func settled(objectID: String) async throws {
    try await self.database.run("settlement.settled") {
      _ = try await self.client.query(
        "DELETE FROM settlement_checks WHERE object_id = \(objectID)", logger: self.logger)
    }
  }

  public func backlog() async throws -> SettlementBacklog {
    try await self.database.run("settlement.backlog") {
      // Both counts come from the partial indexes of open rows (payments_open, refunds_open).
      let rows = try await self.client.query(
        """
        SELECT (SELECT count(*) FROM payments WHERE status = 'processing')::bigint,
          (SELECT (extract(epoch FROM now() - min(update_time)) * 1000)::bigint FROM payments WHERE status = 'processing'),
          (SELECT count(*) FROM refunds WHERE status = 'pending')::bigint,
          (SELECT (extract(epoch FROM now() - min(update_time)) * 1000)::bigint FROM refunds WHERE status = 'pending')
        """,
        logger: self.logger
      )
      for try await (payments, paymentAge, refunds, refundAge) in rows.decode((Int64, Int64?, Int64, Int64?).self) {
        return SettlementBacklog(
          payments: Int(payments), refunds: Int(refunds),
          oldestPaymentAge: paymentAge.map { .milliseconds(max(0, $0)) },
          oldestRefundAge: refundAge.map { .milliseconds(max(0, $0)) })
      }
      throw StoredDataError(what: "no settlement backlog returned")
    }
  }

  static func binds(_ milliseconds: Int64, _ limit: Int) -> PostgresBindings {
    var binds = PostgresBindings()
    binds.append(milliseconds)
    binds.append(limit)
    return binds
  }
}
