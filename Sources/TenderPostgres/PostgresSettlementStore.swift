import Foundation
public import Logging
public import PostgresNIO
public import TenderCore
public import Tracing

/// `SettlementStore` on PostgreSQL (the `settlement_checks` table of migration 7).
public struct PostgresSettlementStore: SettlementStore {
  private let client: PostgresClient
  private let logger: Logger
  private let tracer: any Tracer

  public init(client: PostgresClient, logger: Logger, tracer: any Tracer = NoOpTracer()) {
    self.client = client
    self.logger = logger
    self.tracer = tracer
  }

  public func duePayments(quietFor: Duration, limit: Int) async throws -> [(PaymentRecord, checks: Int)] {
    try await traced(self.tracer, "settlement.due_payments") {
      let rows = try await self.client.query(
        PostgresQuery(
          unsafeSQL: """
            SELECT \(PostgresPaymentStore.columns), checks FROM (
              SELECT p.*, coalesce(c.checks, 0) AS checks
              FROM payments p LEFT JOIN settlement_checks c ON c.object_id = p.payment_id
              WHERE p.status = 'processing' AND p.provider_payment_id IS NOT NULL
                AND p.update_time < now() - $1 * interval '1 millisecond'
                AND (c.object_id IS NULL OR (c.abandon_time IS NULL AND c.next_check_time <= now()))
                AND NOT EXISTS (SELECT 1 FROM idempotency_keys k WHERE k.payment_id = p.payment_id AND k.recovery_point <> 'finished')
              ORDER BY p.update_time LIMIT $2
            ) AS due
            """,
          binds: Self.binds(PostgresIdempotencyStore.milliseconds(quietFor), limit)
        ),
        logger: self.logger
      )
      var due: [(PaymentRecord, checks: Int)] = []
      for try await row in rows {
        due.append((try PostgresPaymentStore.decode(row).0, checks: try row.makeRandomAccess()["checks"].decode(Int.self)))
      }
      return due
    }
  }

  public func dueRefunds(quietFor: Duration, limit: Int) async throws -> [(RefundRecord, checks: Int)] {
    try await traced(self.tracer, "settlement.due_refunds") {
      let rows = try await self.client.query(
        PostgresQuery(
          unsafeSQL: """
            SELECT \(PostgresRefundStore.columns), checks FROM (
              SELECT r.*, coalesce(c.checks, 0) AS checks
              FROM refunds r LEFT JOIN settlement_checks c ON c.object_id = r.refund_id
              WHERE r.status = 'pending' AND r.provider_refund_id IS NOT NULL
                AND r.update_time < now() - $1 * interval '1 millisecond'
                AND (c.object_id IS NULL OR (c.abandon_time IS NULL AND c.next_check_time <= now()))
                AND NOT EXISTS (SELECT 1 FROM idempotency_keys k WHERE k.refund_id = r.refund_id AND k.recovery_point <> 'finished')
              ORDER BY r.update_time LIMIT $2
            ) AS due
            """,
          binds: Self.binds(PostgresIdempotencyStore.milliseconds(quietFor), limit)
        ),
        logger: self.logger
      )
      var due: [(RefundRecord, checks: Int)] = []
      for try await row in rows {
        due.append((try PostgresRefundStore.decode(row).0, checks: try row.makeRandomAccess()["checks"].decode(Int.self)))
      }
      return due
    }
  }

  public func postpone(objectID: String, checks: Int, next: Duration, abandon: Bool) async throws {
    try await traced(self.tracer, "settlement.postpone") {
      try await self.client.query(
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
    try await traced(self.tracer, "settlement.settled") {
      try await self.client.query("DELETE FROM settlement_checks WHERE object_id = \(objectID)", logger: self.logger)
    }
  }

  static func binds(_ milliseconds: Int64, _ limit: Int) -> PostgresBindings {
    var binds = PostgresBindings()
    binds.append(milliseconds)
    binds.append(limit)
    return binds
  }
}
