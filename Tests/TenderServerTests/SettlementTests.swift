import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import PostgresNIO
import Prometheus
import SwiftProtobuf
import TenderAPI
import TenderProviderSim
import TenderServer
import TenderTesting
import Testing

/// The reconciler settles what the provider had not finished when it answered.
@Suite("Settling payments and refunds the provider finishes later, without webhooks")
struct SettlementTests {
  typealias Payments = Tender_Payments_V1_PaymentService.Client<TestClientTransport>
  typealias Refunds = Tender_Refunds_V1_RefundService.Client<TestClientTransport>

  /// Probes until `probe` answers, every 100 ms, at most `timeout` (then throws).
  static func eventually<T: Sendable>(
    _ what: String, timeout: Duration = .seconds(20), _ probe: () async throws -> T?
  ) async throws -> T {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
      if let value = try await probe() { return value }
      try await Task.sleep(for: .milliseconds(100))
    }
    throw SettlementTimeout(what: what)
  }

  struct SettlementTimeout: Error, CustomStringConvertible {
    let what: String
    var description: String { "never \(self.what)" }
  }

  @Test(
    "An asynchronous payment answered PROCESSING is settled by the reconciler: SUCCEEDED, with its event, as at the provider"
  )
  func processingPaymentSettles() async throws {
    // No webhooks: the reconciler alone (the safety net).
    try await TestServer.with(webhooks: false) { server in
      let token = try await server.token(scopes: RefundsTests.scopes)
      try await server.withClient { grpc in
        let payments = Payments(wrapping: grpc)
        let created = await PaymentsTests.create(
          payments, PaymentsTests.request(900, method: "pm_card_async", capture: .automatic),
          metadata: PaymentsTests.metadata(token, key: "async"))
        let payment = try #require(created.payment, "\(String(describing: created.error))")
        #expect(payment.status == .processing)
        // The provider finishes it a second later; each completer round asks it.
        let settled = try await Self.eventually("settled") { () -> Tender_Payments_V1_Payment? in
          try await server.completeRound()
          let current = try await payments.getPayment(
            .with { $0.paymentID = payment.paymentID }, metadata: TestServer.bearer(token)
          ).payment
          return current.status == .processing ? nil : current
        }
        #expect(settled.status == .succeeded && settled.amountCapturedMinor == 900)
        let intent = try #require(await server.simulator.intent(tenderPaymentID: payment.paymentID))
        #expect(intent.status == "succeeded" && intent.amountReceived == 900)
      }
      #expect(
        try await RefundsTests.rows(server, "SELECT type FROM payment_events ORDER BY event_id", as: String.self) == [
          "payment_created", "payment_succeeded",
        ])
      // Once settled, the reconciler forgets it.
      #expect(
        try await RefundsTests.rows(server, "SELECT count(*)::bigint FROM settlement_checks", as: Int64.self) == [0])
      #expect(await server.simulator.requests().filter { $0.outcome == "created" }.count == 1)
    }
  }

  @Test("A refund the provider answered PENDING keeps its amount reserved until the reconciler sees it succeed")
  func pendingRefundSettles() async throws {
    try await TestServer.with(webhooks: false) { server in
      let token = try await server.token(scopes: RefundsTests.scopes)
      try await server.withClient { grpc in
        let payments = Payments(wrapping: grpc)
        let refunds = Refunds(wrapping: grpc)
        let payment = try await RefundsTests.captured(
          payments, 1000, token: token, key: "pay", method: "pm_card_refundPending")
        let first = await RefundsTests.refund(refunds, payment.paymentID, 300, token: token, key: "refund")
        let refund = try #require(first.refund, "\(String(describing: first.error))")
        #expect(refund.status == .pending)
        // Reserved meanwhile: 701 of the 700 left is refused.
        let tooMuch = await RefundsTests.refund(refunds, payment.paymentID, 701, token: token, key: "more")
        #expect(tooMuch.error?.reason == "REFUND_EXCEEDS_CAPTURED")
        let settled = try await Self.eventually("settled") { () -> Tender_Refunds_V1_Refund? in
          try await server.completeRound()
          let current = try await refunds.getRefund(
            .with { $0.refundID = refund.refundID }, metadata: TestServer.bearer(token)
          ).refund
          return current.status == .pending ? nil : current
        }
        #expect(settled.status == .succeeded)
        let intent = try #require(await server.simulator.intent(tenderPaymentID: payment.paymentID))
        #expect(intent.refunded == 300)
        let after = try await payments.getPayment(
          .with { $0.paymentID = payment.paymentID }, metadata: TestServer.bearer(token)
        ).payment
        #expect(after.amountRefundedMinor == 300)
      }
      let events = try await RefundsTests.rows(
        server, "SELECT type FROM payment_events WHERE refund_id IS NOT NULL ORDER BY event_id", as: String.self)
      #expect(events == ["refund_created", "refund_succeeded"])
    }
  }

  @Test(
    "A payment the provider never finishes is checked with backoff, then given up after the configured age: counted and recorded, no more checks"
  )
  func stuckPaymentIsAbandonedVisibly() async throws {
    try await TestServer.with(webhooks: false, tune: { $0.settlementGiveUpAfter = .seconds(3) }) { server in
      let token = try await server.token(scopes: RefundsTests.scopes)
      try await server.withClient { grpc in
        let created = await PaymentsTests.create(
          Payments(wrapping: grpc), PaymentsTests.request(500, method: "pm_card_asyncStuck", capture: .automatic),
          metadata: PaymentsTests.metadata(token, key: "stuck")
        )
        #expect(created.payment?.status == .processing)
      }
      // A completer round every 100 ms until it is given up.
      let metric = try await Self.eventually("abandoned") { () -> String? in
        try await server.completeRound()
        let text = server.application.metrics.emitToString()
        return text.contains(#"tender_settlement_abandoned_total{kind="payment"} 1"#) ? text : nil
      }
      #expect(metric.contains(#"tender_settlement_abandoned_total{kind="payment"} 1"#))
      let checks = try await RefundsTests.rows(
        server, "SELECT checks FROM settlement_checks WHERE abandon_time IS NOT NULL", as: Int32.self)
      #expect(checks.count == 1)
      // Backoff: 300 ms, 600 ms, 1.2 s, … — at most a handful of checks in 3 s, not one per
      // completer round (about 30); at least one. A loaded machine makes them fewer, never more.
      #expect((checks.first ?? 0) >= 1 && (checks.first ?? 99) <= 5, "\(checks)")
      // Given up: later rounds no longer ask the provider.
      let asked = await server.simulator.requests().filter { $0.method == "GET" }.count
      for _ in 0..<3 { try await server.completeRound() }
      #expect(await server.simulator.requests().filter { $0.method == "GET" }.count == asked)
      #expect(try await RefundsTests.rows(server, "SELECT status FROM payments", as: String.self) == ["processing"])
    }
  }
}
