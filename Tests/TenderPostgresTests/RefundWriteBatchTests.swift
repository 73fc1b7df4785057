import Foundation
import Logging
import PostgresNIO
import TenderCore
@testable import TenderPostgres
import TenderTesting
import Testing

/// New keyed refunds written in batches (group commit): each request gets what it would have got
/// alone, and a batch never reserves more than a payment allows.
extension RefundFastPathTests {
  static func claiming(
    _ refund: RefundRecord, key: String, expectRefunded: Int64? = nil
  ) -> PostgresRefundStore.InsertClaiming {
    PostgresRefundStore.InsertClaiming(
      refund: refund, expectRefunded: expectRefunded, request: Self.request(key), lockMilliseconds: 30_000,
      providerKey: Self.call(refund, key: key).providerKey)
  }

  @Test("A batch claims each free key with its refund and reservation in one transaction")
  func batchClaims() async throws {
    try await self.withStores { refunds, payments, client in
      let first = try await self.payment(payments, 100)
      let second = try await self.payment(payments, 100)
      let answers = try await PostgresRefundStore.insertClaiming(
        [
          Self.claiming(Self.refund(first, 30), key: "b1"),
          Self.claiming(Self.refund(second, 100), key: "b2", expectRefunded: 0),
        ],
        client: client, logger: self.logger
      ).map { try $0.get() }
      let written = answers.compactMap { $0 }
      #expect(written.count == 2 && Set(written.map(\.eventTransaction)).count == 1)
      #expect(try await self.footprint(client) == [2, 2, 2, 2, 130])
      #expect(try await payments.payment(second.id, merchant: second.merchantID)?.ledger.refundedMinorUnits == 100)
    }
  }

  @Test(
    "A batch with a refund its payment no longer allows is written request by request: only that one takes the general path"
  )
  func batchWithARefusal() async throws {
    try await self.withStores { refunds, payments, client in
      let taken = try await self.payment(payments, 100)
      #expect(try await self.claim(refunds, Self.refund(taken, 10), key: "b0") != nil)
      let first = try await self.payment(payments, 100)
      let stale = try await self.payment(payments, 100)
      _ = try await self.claim(refunds, Self.refund(stale, 20), key: "s0")
      let held = try await self.payment(payments, 100, captured: false)
      let last = try await self.payment(payments, 100)
      let before = try await self.footprint(client)

      let requests = [
        Self.claiming(Self.refund(first, 30), key: "b1"),
        // "Everything left" as read when nothing was refunded; 20 is by now.
        Self.claiming(Self.refund(stale, 100), key: "b2", expectRefunded: 0),
        // Not captured.
        Self.claiming(Self.refund(held, 10), key: "b3"),
        // The key exists.
        Self.claiming(Self.refund(taken, 10), key: "b0"),
        Self.claiming(Self.refund(last, 70), key: "b4"),
      ]
      let answers = try await PostgresRefundStore.insertClaiming(requests, client: client, logger: self.logger)
        .map { try $0.get() }
      #expect(answers.map { $0 != nil } == [true, false, false, false, true])
      #expect(
        try await self.footprint(client) == [
          before[0] + 2, before[1] + 2, before[2] + 2, before[3] + 2, before[4] + 100,
        ])
      #expect(try await payments.payment(stale.id, merchant: stale.merchantID)?.ledger.refundedMinorUnits == 20)
      // The refused keys are still free for the general path.
      #expect(try await self.claim(refunds, Self.refund(stale, 80), key: "b2", expectRefunded: 20) != nil)
    }
  }

  @Test("A batch settles each refund whose key is still its owner's; the others stay pending")
  func batchFinishes() async throws {
    try await self.withStores { refunds, payments, client in
      let payment = try await self.payment(payments, 100)
      let other = try await self.payment(payments, 100)
      let refunded = [Self.refund(payment, 40), Self.refund(other, 25)]
      let rows = try await PostgresRefundStore.insertClaiming(
        [Self.claiming(refunded[0], key: "f1"), Self.claiming(refunded[1], key: "f2")], client: client,
        logger: self.logger
      ).map { try #require(try $0.get()) }
      let finishes = refunded.enumerated().map { index, refund in
        var final = refund
        final.providerRefundID = "re_\(index)"
        try! final.succeeded()
        final.updateTime = PostgresTime.now()
        return PostgresRefundStore.FinishPending(
          refund: final,
          owner: KeyOwner(merchant: refund.merchantID, key: "f\(index + 1)", token: index == 0 ? 1 : 2),
          response: StoredResponse(code: 0, message: [UInt8(index)], details: []),
          call: ProviderCallEnd(requestID: rows[index].requestID, outcome: .succeeded))
      }
      let answers = try await PostgresRefundStore.finishPending(finishes, client: client, logger: self.logger)
        .map { try $0.get() }
      #expect(answers.map(\.written) == [true, false])
      #expect(answers[0].eventTransaction != nil && answers[1].eventTransaction == nil)
      #expect(try await refunds.refund(refunded[0].id, merchant: refunded[0].merchantID)?.status == .succeeded)
      #expect(try await refunds.refund(refunded[1].id, merchant: refunded[1].merchantID)?.status == .pending)
      let points = try await client.query("SELECT idempotency_key, recovery_point FROM idempotency_keys ORDER BY 1")
        .decode((String, String).self).reduce(into: []) { $0.append($1.1) }
      #expect(points == ["finished", "refund_created"])
      let events = try await client.query("SELECT type FROM payment_events WHERE type = 'refund_succeeded'")
        .decode(String.self).reduce(into: []) { $0.append($1) }
      #expect(events.count == 1)
    }
  }

  @Test("Concurrent refunds of a few payments through the store: never more than captured, each settled once")
  func concurrentBatches() async throws {
    try await self.withStores { refunds, payments, client in
      var captured: [PaymentRecord] = []
      for _ in 0..<4 { captured.append(try await self.payment(payments, 100)) }
      let settled = try await withThrowingTaskGroup(of: Int64.self) { group in
        for index in 0..<40 {
          let payment = captured[index % 4]
          group.addTask {
            let refund = Self.refund(payment, 15)
            let key = "c\(index)"
            guard let requestID = try await self.claim(refunds, refund, key: key) else { return 0 }
            var final = refund
            try final.succeeded()
            final.updateTime = PostgresTime.now()
            let written = try await refunds.finishPending(
              final, owner: KeyOwner(merchant: refund.merchantID, key: key, token: 1),
              response: StoredResponse(code: 0, message: [], details: []),
              call: ProviderCallEnd(requestID: requestID, outcome: .succeeded))
            return written ? 15 : -1_000
          }
        }
        return try await group.reduce(0, +)
      }
      // Six refunds of 15 fit in each 100: 4 × 90.
      #expect(settled == 360)
      for payment in captured {
        #expect(try await payments.payment(payment.id, merchant: payment.merchantID)?.ledger.refundedMinorUnits == 90)
      }
      let footprint = try await self.footprint(client)
      #expect(footprint == [24, 24, 24, 48, 360])
    }
  }
}
