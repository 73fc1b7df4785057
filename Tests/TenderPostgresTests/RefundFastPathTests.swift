import Foundation
import Logging
import PostgresNIO
import TenderCore
import TenderPostgres
import TenderTesting
import Testing

/// The two statements of a new keyed refund (`KeyedRefundCreation`): each writes all it says or
/// nothing, so the general path can always take over.
@Suite("A new keyed refund in two statements, against a real PostgreSQL")
struct RefundFastPathTests {
  let logger = Logger(label: "tender.test.refunds")
  static let method = "/tender.refunds.v1.RefundService/CreateRefund"

  func withStores(
    _ body: (PostgresRefundStore, PostgresPaymentStore, PostgresClient) async throws -> Void
  ) async throws {
    let url = try await TestPostgres.makeDatabase()
    try await withPostgresClient(url) { client in
      for merchant in ["mer_a", "mer_b"] {
        try await client.query("INSERT INTO merchants (merchant_id, display_name) VALUES (\(merchant), \(merchant))")
      }
      try await body(
        PostgresRefundStore(client: client, logger: self.logger),
        PostgresPaymentStore(client: client, logger: self.logger),
        client)
    }
  }

  static func request(_ key: String, merchant: String = "mer_a") -> IdempotencyRequest {
    IdempotencyRequest(
      merchant: MerchantID(merchant)!, key: key, method: Self.method, fingerprint: Array(repeating: 7, count: 32))
  }

  static func refund(_ payment: PaymentRecord, _ amount: Int64, merchant: String = "mer_a") -> RefundRecord {
    let now = PostgresTime.now()
    return RefundRecord(
      id: .random(), merchantID: MerchantID(merchant)!, paymentID: payment.id,
      amount: Money(minorUnits: amount, currency: payment.ledger.amount.currency), status: .pending,
      reason: .requestedByCustomer, failureMessage: nil, metadata: ["ticket": "T-1"], providerRefundID: nil,
      createTime: now, updateTime: now)
  }

  static func call(_ refund: RefundRecord, key: String) -> ProviderCall {
    ProviderCall(
      merchant: refund.merchantID, payment: refund.paymentID, refund: refund.id, operation: .createRefund,
      providerKey: "tender_\(key)", amountMinorUnits: refund.amount.minorUnits)
  }

  func claim(
    _ refunds: PostgresRefundStore, _ refund: RefundRecord, key: String, expectRefunded: Int64? = nil
  ) async throws -> Int64? {
    try await refunds.insertClaiming(
      refund, expectRefunded: expectRefunded, request: Self.request(key, merchant: refund.merchantID.rawValue),
      lockFor: .seconds(30), call: Self.call(refund, key: key))
  }

  /// A captured payment of `amount` (automatic capture), or one authorized for capture.
  func payment(_ payments: PostgresPaymentStore, _ amount: Int64, captured: Bool = true) async throws -> PaymentRecord {
    let time = PostgresTime.now()
    let payment = PaymentRecord(
      id: .random(), merchantID: MerchantID("mer_a")!,
      ledger: PaymentLedger(
        amount: Money(minorUnits: amount, currency: Currency(code: "EUR")!),
        captureMethod: captured ? .automatic : .manual),
      paymentMethod: "pm_card_visa", customerReference: "", description: "", metadata: [:], providerPaymentID: nil,
      createTime: time, updateTime: time)
    _ = try await payments.insert(payment)
    let updated = try await payments.update(payment.id, merchant: payment.merchantID) { record in
      try record.ledger.providerAuthorized()
      record.providerPaymentID = "pi_test"
    }
    return try #require(updated).0
  }

  /// Row counts that any write of a refund changes.
  func footprint(_ client: PostgresClient) async throws -> [Int64] {
    let rows = try await client.query(
      """
      SELECT (SELECT count(*) FROM idempotency_keys), (SELECT count(*) FROM refunds), (SELECT count(*) FROM provider_requests),
        (SELECT count(*) FROM payment_events WHERE refund_id IS NOT NULL), (SELECT coalesce(sum(refunded_minor), 0)::bigint FROM payments)
      """)
    for try await (keys, refunds, calls, events, refunded) in rows.decode((Int64, Int64, Int64, Int64, Int64).self) {
      return [keys, refunds, calls, events, refunded]
    }
    return []
  }

  @Test("The first statement claims the key, reserves the amount and records the refund, its event and the call")
  func claimsAndReserves() async throws {
    try await self.withStores { refunds, payments, client in
      let payment = try await self.payment(payments, 100)
      let refund = Self.refund(payment, 30)
      let requestID = try #require(try await self.claim(refunds, refund, key: "k1"))

      let key = try await client.query(
        """
        SELECT recovery_point, owner_token, provider_attempted, payment_id, refund_id, locked_until > now()
        FROM idempotency_keys WHERE merchant_id = 'mer_a' AND idempotency_key = 'k1'
        """
      ).decode((String, Int64, Bool, String, String, Bool).self).reduce(into: []) { $0.append($1) }
      #expect(key.count == 1)
      #expect(key.first?.0 == "refund_created" && key.first?.1 == 1 && key.first?.2 == true)
      #expect(key.first?.3 == payment.id.rawValue && key.first?.4 == refund.id.rawValue && key.first?.5 == true)

      let stored = try #require(try await refunds.refund(refund.id, merchant: refund.merchantID))
      #expect(stored.status == .pending && stored.amount.minorUnits == 30 && stored.reason == .requestedByCustomer)
      #expect(stored.metadata == ["ticket": "T-1"] && stored.createTime == refund.createTime)
      #expect(try await payments.payment(payment.id, merchant: payment.merchantID)?.ledger.refundedMinorUnits == 30)

      let call = try await client.query(
        "SELECT operation, outcome, refund_id, amount_minor, provider_idempotency_key FROM provider_requests WHERE request_id = \(requestID)"
      ).decode((String, String, String, Int64, String).self).reduce(into: []) { $0.append($1) }
      #expect(call.count == 1)
      #expect(call.first?.0 == "create_refund" && call.first?.1 == "unknown" && call.first?.2 == refund.id.rawValue)
      #expect(call.first?.3 == 30 && call.first?.4 == "tender_k1")
      let events = try await client.query(
        "SELECT type, amount_minor FROM payment_events WHERE refund_id = \(refund.id.rawValue)"
      ).decode((String, Int64).self).reduce(into: []) { $0.append($1) }
      #expect(events.map(\.0) == ["refund_created"] && events.map(\.1) == [30])
    }
  }

  @Test("The first statement writes nothing when the key exists or the payment no longer allows the refund")
  func claimWritesNothing() async throws {
    try await self.withStores { refunds, payments, client in
      let payment = try await self.payment(payments, 100)
      #expect(try await self.claim(refunds, Self.refund(payment, 30), key: "k1") != nil)
      let before = try await self.footprint(client)
      #expect(before == [1, 1, 1, 1, 30])

      // The key exists (another refund under the same key).
      #expect(try await self.claim(refunds, Self.refund(payment, 10), key: "k1") == nil)
      // More than is left (70).
      #expect(try await self.claim(refunds, Self.refund(payment, 71), key: "k2") == nil)
      // "Everything left" as read when 0 was refunded; 30 is refunded by now.
      #expect(try await self.claim(refunds, Self.refund(payment, 100), key: "k3", expectRefunded: 0) == nil)
      // Not captured.
      let held = try await self.payment(payments, 100, captured: false)
      #expect(try await self.claim(refunds, Self.refund(held, 10), key: "k4") == nil)
      // Another merchant's payment.
      #expect(try await self.claim(refunds, Self.refund(payment, 10, merchant: "mer_b"), key: "k5") == nil)
      // Another currency than the payment's.
      let dollars = RefundRecord(
        id: .random(), merchantID: payment.merchantID, paymentID: payment.id,
        amount: Money(minorUnits: 10, currency: Currency(code: "USD")!), status: .pending, reason: nil,
        failureMessage: nil, metadata: [:], providerRefundID: nil, createTime: Date(), updateTime: Date())
      #expect(try await self.claim(refunds, dollars, key: "k6") == nil)

      #expect(try await self.footprint(client) == before)
      // Each of those keys is still free for the general path.
      #expect(try await self.claim(refunds, Self.refund(payment, 70), key: "k2", expectRefunded: 30) != nil)
      #expect(try await self.footprint(client) == [2, 2, 2, 2, 100])
    }
  }

  @Test("Concurrent first statements on one payment never reserve more than was captured")
  func concurrentClaims() async throws {
    try await self.withStores { refunds, payments, client in
      let payment = try await self.payment(payments, 100)
      let granted = try await withThrowingTaskGroup(of: Int.self) { group in
        for index in 0..<24 {
          group.addTask {
            try await self.claim(refunds, Self.refund(payment, 10), key: "c\(index)") != nil ? 1 : 0
          }
        }
        return try await group.reduce(0, +)
      }
      #expect(granted <= 10)
      let footprint = try await self.footprint(client)
      #expect(footprint == [Int64(granted), Int64(granted), Int64(granted), Int64(granted), Int64(granted) * 10])
      // What is left can still be refunded.
      let left = 100 - Int64(granted) * 10
      if left > 0 {
        #expect(try await self.claim(refunds, Self.refund(payment, left), key: "rest") != nil)
      }
      #expect(try await payments.payment(payment.id, merchant: payment.merchantID)?.ledger.refundedMinorUnits == 100)
    }
  }

  @Test("The second statement settles the refund with the key's answer, only for the key's owner and a pending refund")
  func finishes() async throws {
    try await self.withStores { refunds, payments, client in
      let payment = try await self.payment(payments, 100)
      let refund = Self.refund(payment, 40)
      let requestID = try #require(try await self.claim(refunds, refund, key: "k1"))
      var final = refund
      final.providerRefundID = "re_provider"
      try final.succeeded()
      final.updateTime = PostgresTime.now()
      let response = StoredResponse(code: 0, message: [1, 2, 3], details: [])
      let ended = ProviderCallEnd(requestID: requestID, outcome: .succeeded)
      let before = try await self.footprint(client)

      // Another owner holds the key (a takeover): nothing is written.
      let stranger = KeyOwner(merchant: refund.merchantID, key: "k1", token: 2)
      #expect(try await !refunds.finishPending(final, owner: stranger, response: response, call: ended))
      #expect(try await refunds.refund(refund.id, merchant: refund.merchantID)?.status == .pending)
      #expect(try await self.footprint(client) == before)

      let owner = KeyOwner(merchant: refund.merchantID, key: "k1", token: 1)
      #expect(try await refunds.finishPending(final, owner: owner, response: response, call: ended))
      let stored = try #require(try await refunds.refund(refund.id, merchant: refund.merchantID))
      #expect(stored.status == .succeeded && stored.providerRefundID == "re_provider")
      #expect(stored.updateTime == final.updateTime)
      let key = try await client.query(
        "SELECT recovery_point, response_code, response_message, locked_until IS NULL FROM idempotency_keys WHERE idempotency_key = 'k1'"
      ).decode((String, Int32, ByteBuffer, Bool).self).reduce(into: []) { $0.append($1) }
      #expect(key.first?.0 == "finished" && key.first?.1 == 0 && key.first?.3 == true)
      #expect(key.first.map { Array($0.2.readableBytesView) } == [1, 2, 3])
      let call = try await client.query(
        "SELECT outcome, finish_time IS NOT NULL FROM provider_requests WHERE request_id = \(requestID)"
      ).decode((String, Bool).self).reduce(into: []) { $0.append($1) }
      #expect(call.first?.0 == "succeeded" && call.first?.1 == true)
      let events = try await client.query(
        "SELECT type FROM payment_events WHERE refund_id = \(refund.id.rawValue) ORDER BY event_id"
      ).decode(String.self).reduce(into: []) { $0.append($1) }
      #expect(events == ["refund_created", "refund_succeeded"])
      #expect(try await payments.payment(payment.id, merchant: payment.merchantID)?.ledger.refundedMinorUnits == 40)

      // Finished: a second settlement writes nothing.
      #expect(try await !refunds.finishPending(final, owner: owner, response: response, call: ended))

      // A refund the provider took on but has not finished stays pending, without an event.
      let later = Self.refund(payment, 10)
      let laterCall = try #require(try await self.claim(refunds, later, key: "k2"))
      var pending = later
      pending.providerRefundID = "re_later"
      pending.updateTime = PostgresTime.now()
      #expect(
        try await refunds.finishPending(
          pending, owner: KeyOwner(merchant: later.merchantID, key: "k2", token: 1), response: response,
          call: ProviderCallEnd(requestID: laterCall, outcome: .sent)))
      let laterStored = try await refunds.refund(later.id, merchant: later.merchantID)
      #expect(laterStored?.status == .pending && laterStored?.providerRefundID == "re_later")
      let laterEvents = try await client.query(
        "SELECT type FROM payment_events WHERE refund_id = \(later.id.rawValue)"
      ).decode(String.self).reduce(into: []) { $0.append($1) }
      #expect(laterEvents == ["refund_created"])
    }
  }
}
