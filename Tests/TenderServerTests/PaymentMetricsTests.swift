import Foundation
import GRPCCore
import Prometheus
import SwiftProtobuf
import TenderAPI
import TenderServer
import TenderTesting
import Testing

@Suite("Payment metrics: money by status and currency, the provider, the reconciler's backlog")
struct PaymentMetricsTests {
  typealias Payments = Tender_Payments_V1_PaymentService.Client<TestClientTransport>
  typealias Refunds = Tender_Refunds_V1_RefundService.Client<TestClientTransport>

  @Test(
    "Known payments and refunds on PostgreSQL show as exactly those counts and amounts; a replay counts nothing; the backlog is read back"
  )
  func moneyByStatusAndCurrency() async throws {
    try await TestServer.with { server in
      let token = try await server.token(scopes: RefundsTests.scopes)
      try await server.withClient { grpc in
        let payments = Payments(wrapping: grpc)
        // EUR: 1,000 captured at once; 2,500 held, then 2,000 of it captured; 700 declined.
        let automatic = try #require(
          await PaymentsTests.create(
            payments, PaymentsTests.request(1000, capture: .automatic),
            metadata: PaymentsTests.metadata(token, key: "m-1")
          ).payment)
        let replay = await PaymentsTests.create(
          payments, PaymentsTests.request(1000, capture: .automatic),
          metadata: PaymentsTests.metadata(token, key: "m-1"))
        #expect(replay.payment?.paymentID == automatic.paymentID)
        let held = try #require(
          await PaymentsTests.create(
            payments, PaymentsTests.request(2500), metadata: PaymentsTests.metadata(token, key: "m-2")
          ).payment)
        _ = try await payments.capturePayment(
          .with {
            $0.paymentID = held.paymentID
            $0.amountMinor = 2000
          }, metadata: PaymentsTests.metadata(token, key: "m-3"))
        let declined = await PaymentsTests.create(
          payments, PaymentsTests.request(700, method: "pm_card_chargeDeclined"),
          metadata: PaymentsTests.metadata(token, key: "m-4"))
        #expect(declined.payment == nil)
        // A refund of 300 of the first.
        let refunds = Refunds(wrapping: grpc)
        let refund = await RefundsTests.answered(refunds, automatic.paymentID, 300, token: token, key: "m-5")
        #expect(refund.error == nil)
      }
      _ = try await server.completeRound()
      let text = server.application.metrics.emitToString()
      let value = { (name: String, labels: [String: String]) in MetricsTests.value(text, name, labels) }
      let eur = { (status: String) in ["status": status, "currency": "EUR"] }
      #expect(value("tender_payments_total", eur("processing")) == 3)
      #expect(value("tender_payment_amount_minor_total", eur("processing")) == 4200)
      #expect(value("tender_payments_total", eur("succeeded")) == 2)
      #expect(value("tender_payment_amount_minor_total", eur("succeeded")) == 3000)
      #expect(value("tender_payments_total", eur("requires_capture")) == 1)
      #expect(value("tender_payment_amount_minor_total", eur("requires_capture")) == 2500)
      #expect(value("tender_payments_total", eur("failed")) == 1)
      #expect(value("tender_payment_amount_minor_total", eur("failed")) == 700)
      #expect(value("tender_refunds_total", eur("pending")) == 1)
      #expect(value("tender_refunds_total", eur("succeeded")) == 1)
      #expect(value("tender_refund_amount_minor_total", eur("succeeded")) == 300)

      // The provider saw three authorizations (one declined), one capture and one refund.
      let provider = { (operation: String, outcome: String) in
        value("tender_provider_requests_total", ["operation": operation, "outcome": outcome])
      }
      #expect(provider("create_payment", "ok") == 2)
      #expect(provider("create_payment", "declined") == 1)
      #expect(provider("capture_payment", "ok") == 1)
      #expect(provider("create_refund", "ok") == 1)
      #expect(value("tender_provider_request_seconds_count", ["operation": "create_payment"]) == 3)

      // One call at a time, each new payment's writes went alone: four claims (the replay's
      // found its key taken) and three finishes, one request each.
      let batches = { (suffix: String, statement: String) in
        value("tender_database_write_batch_requests" + suffix, ["statement": statement])
      }
      #expect(batches("_count", "payment_claims") == 4 && batches("_sum", "payment_claims") == 4)
      #expect(batches("_count", "payment_finishes") == 3 && batches("_sum", "payment_finishes") == 3)

      // Nothing is left open for the reconciler.
      #expect(value("tender_settlement_open", ["kind": "payment"]) == 0)
      #expect(value("tender_settlement_open", ["kind": "refund"]) == 0)
    }
  }

  @Test("A payment the provider leaves PROCESSING is in the reconciler's backlog, with its age")
  func backlogCountsOpenPayments() async throws {
    try await TestServer.with(webhooks: false) { server in
      let token = try await server.token(scopes: RefundsTests.scopes)
      let started = ContinuousClock.now
      try await server.withClient { grpc in
        let created = await PaymentsTests.create(
          Payments(wrapping: grpc), PaymentsTests.request(900, method: "pm_card_asyncStuck", capture: .automatic),
          metadata: PaymentsTests.metadata(token, key: "b-1"))
        #expect(created.payment?.status == .processing)
      }
      _ = try await server.completeRound()
      let elapsed = Double((ContinuousClock.now - started).components.seconds) + 1
      let text = server.application.metrics.emitToString()
      #expect(MetricsTests.value(text, "tender_settlement_open", ["kind": "payment"]) == 1)
      #expect(MetricsTests.value(text, "tender_settlement_open", ["kind": "refund"]) == 0)
      let age = try #require(MetricsTests.value(text, "tender_settlement_oldest_open_seconds", ["kind": "payment"]))
      #expect(age >= 0 && age <= elapsed + 1)
      #expect(MetricsTests.value(text, "tender_payments_total", ["status": "processing", "currency": "EUR"]) == 1)
      #expect(MetricsTests.value(text, "tender_payments_total", ["status": "succeeded", "currency": "EUR"]) == nil)
    }
  }
}
