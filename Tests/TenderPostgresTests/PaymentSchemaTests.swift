import Logging
import PostgresNIO
import TenderPostgres
import TenderTesting
import Testing

/// The database backs the domain's invariants on its own: a bug in a store, or a hand-written
/// UPDATE, still cannot refund more than was captured or write a second record for one key.
@Suite("Payment schema constraints against a real PostgreSQL")
struct PaymentSchemaTests {
  let logger = Logger(label: "tender.test.schema")

  /// Runs `sql`; returns the SQLSTATE it failed with, or nil when it succeeded.
  static func sqlState(_ client: PostgresClient, _ sql: String) async -> String? {
    do {
      try await client.query(PostgresQuery(unsafeSQL: sql))
      return nil
    } catch let error as PSQLError {
      return error.serverInfo?[.sqlState]
    } catch {
      return "not a PSQLError: \(error)"
    }
  }

  func withSchema(_ body: (PostgresClient) async throws -> Void) async throws {
    let url = try await TestPostgres.makeDatabase()
    try await withPostgresClient(url) { client in
      try await client.query("INSERT INTO merchants (merchant_id, display_name) VALUES ('mer_a', 'A')")
      try await client.query(
        """
        INSERT INTO payments (payment_id, merchant_id, status, capture_method, currency, amount_minor, captured_minor, payment_method)
        VALUES ('pay_1', 'mer_a', 'succeeded', 'automatic', 'EUR', 100, 100, 'pm_card_visa')
        """
      )
      try await body(client)
    }
  }

  @Test("Amounts and the refund ceiling are constraints: refunded ≤ captured ≤ amount, amounts positive")
  func amountConstraints() async throws {
    try await self.withSchema { client in
      let checkViolation = "23514"
      #expect(
        await Self.sqlState(client, "UPDATE payments SET refunded_minor = 101 WHERE payment_id = 'pay_1'")
          == checkViolation)
      #expect(await Self.sqlState(client, "UPDATE payments SET refunded_minor = 100 WHERE payment_id = 'pay_1'") == nil)
      #expect(
        await Self.sqlState(client, "UPDATE payments SET captured_minor = 101 WHERE payment_id = 'pay_1'")
          == checkViolation)
      #expect(
        await Self.sqlState(
          client,
          """
          INSERT INTO payments (payment_id, merchant_id, status, capture_method, currency, amount_minor, payment_method)
          VALUES ('pay_2', 'mer_a', 'processing', 'automatic', 'EUR', 0, 'pm_card_visa')
          """) == checkViolation)
      #expect(
        await Self.sqlState(
          client,
          """
          INSERT INTO payments (payment_id, merchant_id, status, capture_method, currency, amount_minor, payment_method)
          VALUES ('pay_3', 'mer_a', 'failed', 'automatic', 'EUR', 10, 'pm_card_visa')
          """) == checkViolation)
      // Money captured only on succeeded payments; a hold only while capture is required.
      #expect(
        await Self.sqlState(
          client,
          """
          INSERT INTO payments (payment_id, merchant_id, status, capture_method, currency, amount_minor, captured_minor, payment_method)
          VALUES ('pay_4', 'mer_a', 'canceled', 'manual', 'EUR', 10, 10, 'pm_card_visa')
          """) == checkViolation)
      #expect(
        await Self.sqlState(
          client,
          """
          INSERT INTO payments (payment_id, merchant_id, status, capture_method, currency, amount_minor, capturable_minor, payment_method)
          VALUES ('pay_5', 'mer_a', 'processing', 'manual', 'EUR', 10, 10, 'pm_card_visa')
          """) == checkViolation)
      #expect(
        await Self.sqlState(
          client,
          """
          INSERT INTO refunds (refund_id, merchant_id, payment_id, status, currency, amount_minor, reason)
          VALUES ('re_1', 'mer_a', 'pay_1', 'pending', 'EUR', -1, 'duplicate')
          """) == checkViolation)
    }
  }

  @Test("One idempotency record per merchant and key; another merchant may use the same key")
  func idempotencyKeyUniqueness() async throws {
    try await self.withSchema { client in
      try await client.query("INSERT INTO merchants (merchant_id, display_name) VALUES ('mer_b', 'B')")
      let insert = { (merchant: String) in
        """
        INSERT INTO idempotency_keys (merchant_id, idempotency_key, method, request_fingerprint, recovery_point, locked_until)
        VALUES ('\(merchant)', 'order-42', 'tender.payments.v1.PaymentService/CreatePayment', decode(repeat('ab', 32), 'hex'), 'started', now() + interval '30 seconds')
        """
      }
      #expect(await Self.sqlState(client, insert("mer_a")) == nil)
      #expect(await Self.sqlState(client, insert("mer_a")) == "23505")
      #expect(await Self.sqlState(client, insert("mer_b")) == nil)
      // A finished record holds a response and no lock.
      #expect(
        await Self.sqlState(
          client, "UPDATE idempotency_keys SET recovery_point = 'finished' WHERE merchant_id = 'mer_a'") == "23514")
      #expect(
        await Self.sqlState(
          client,
          "UPDATE idempotency_keys SET recovery_point = 'finished', response_code = 0, locked_until = NULL WHERE merchant_id = 'mer_a'"
        ) == nil)
    }
  }

  @Test("The payment event log is append-only")
  func appendOnlyEvents() async throws {
    try await self.withSchema { client in
      try await client.query(
        """
        INSERT INTO payment_events (merchant_id, payment_id, type, to_status, amount_minor)
        VALUES ('mer_a', 'pay_1', 'payment_created', 'processing', 100)
        """
      )
      #expect(await Self.sqlState(client, "UPDATE payment_events SET amount_minor = 5") == "23001")
      #expect(await Self.sqlState(client, "DELETE FROM payment_events") == "23001")
      #expect(
        await Self.sqlState(
          client,
          "INSERT INTO payment_events (event_id, merchant_id, payment_id, type) VALUES (1, 'mer_a', 'pay_1', 'payment_succeeded')"
        ) == "428C9")
    }
  }
}
