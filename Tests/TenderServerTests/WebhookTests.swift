import AsyncHTTPClient
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import NIOCore
import NIOHTTP1
import NIOSSL
import PostgresNIO
import Prometheus
import SwiftProtobuf
import TenderAPI
import TenderBridge
import TenderCore
import TenderOperations
import TenderPostgres
import TenderProviderSim
import TenderServer
import TenderDevSupport
import TenderTesting
import Testing

/// Provider callbacks on the bridge: verified on the raw bytes, stored once, applied exactly once.
@Suite("Webhooks: verified, stored once, applied once")
struct WebhookTests {
  typealias Payments = Tender_Payments_V1_PaymentService.Client<TestClientTransport>
  typealias Refunds = Tender_Refunds_V1_RefundService.Client<TestClientTransport>

  /// POSTs `body` to the server's bridge; returns the status code.
  static func post(
    _ server: TestServer, path: String = "/webhooks/stripe", body: [UInt8], headers: [(String, String)]
  ) async throws -> Int {
    try await Self.post(port: server.httpPort, ca: server.certificates, path: path, body: body, headers: headers)
  }

  /// POSTs `body` to a bridge on `port` whose certificate `ca` signed.
  static func post(
    port: Int, ca: TestCertificates, path: String = "/webhooks/stripe", body: [UInt8], headers: [(String, String)]
  ) async throws -> Int {
    var tls = TLSConfiguration.makeClientConfiguration()
    tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(ca.authority.certificatePEM.utf8)))
    var configuration = HTTPClient.Configuration()
    configuration.tlsConfiguration = tls
    let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    do {
      var request = HTTPClientRequest(url: "https://127.0.0.1:\(port)\(path)")
      request.method = .POST
      for (name, value) in headers { request.headers.add(name: name, value: value) }
      request.body = .bytes(ByteBuffer(bytes: body))
      let response = try await client.execute(request, timeout: .seconds(10))
      _ = try await response.body.collect(upTo: 1 << 16)
      try await client.shutdown()
      return Int(response.status.code)
    } catch {
      try? await client.shutdown()
      throw error
    }
  }

  static func signed(
    _ body: [UInt8], secret: String = TestServer.webhookSecret, at time: Date = Date()
  ) -> [(String, String)] {
    [
      (
        "Stripe-Signature",
        WebhookSignatures.stripeHeader(
          body: body, secret: .stripe(secret), timestamp: Int64(time.timeIntervalSince1970))
      ), ("Content-Type", "application/json"),
    ]
  }

  static func event(id: String, type: String, object: String) -> [UInt8] {
    Array(#"{"id":"\#(id)","object":"event","type":"\#(type)","created":1700000000,"data":{"object":\#(object)}}"#.utf8)
  }

  static func intent(
    _ id: String, status: String, tenderID: String, amount: Int64 = 900, received: Int64 = 0, capturable: Int64 = 0
  ) -> String {
    #"{"id":"\#(id)","object":"payment_intent","status":"\#(status)","amount":\#(amount),"amount_received":\#(received),"amount_capturable":\#(capturable),"currency":"eur","metadata":{"tender_payment_id":"\#(tenderID)"}}"#
  }

  @Test(
    "An asynchronous payment and a pending refund settle by signed webhook from the simulator, at once, and a watcher sees it"
  )
  func endToEnd() async throws {
    // The reconciler waits a minute here: only a webhook can settle within the test.
    try await TestServer.with(tune: { $0.settlementCheckAfter = .seconds(60) }) { server in
      let token = try await server.token(scopes: RefundsTests.scopes)
      try await server.withClient { grpc in
        let payments = Payments(wrapping: grpc)
        let (events, continuation) = AsyncStream.makeStream(of: Tender_Payments_V1_WatchPaymentsResponse.self)
        let (started, watchStarted) = AsyncStream.makeStream(of: Void.self)
        let watcher = Task {
          try await payments.watchPayments(.init(), metadata: TestServer.bearer(token)) { response in
            // Its headers have arrived: the server took its starting position before sending them.
            watchStarted.finish()
            for try await message in response.messages { continuation.yield(message) }
          }
        }
        defer { watcher.cancel() }
        for await _ in started {}
        let created = await PaymentsTests.create(
          payments, PaymentsTests.request(900, method: "pm_card_async", capture: .automatic),
          metadata: PaymentsTests.metadata(token, key: "async"))
        let payment = try #require(created.payment, "\(String(describing: created.error))")
        #expect(payment.status == .processing)
        var seen: [Tender_Payments_V1_PaymentEventType] = []
        for await event in events where event.paymentID == payment.paymentID {
          seen.append(event.eventType)
          if event.eventType == .paymentSucceeded { break }
        }
        #expect(seen == [.paymentCreated, .paymentSucceeded])
        let settled = try await payments.getPayment(
          .with { $0.paymentID = payment.paymentID }, metadata: TestServer.bearer(token)
        ).payment
        #expect(settled.status == .succeeded && settled.amountCapturedMinor == 900)

        // A refund the provider answers PENDING, settled by its webhook.
        let refunds = Refunds(wrapping: grpc)
        let paid = try await RefundsTests.captured(
          payments, 1000, token: token, key: "pay", method: "pm_card_refundPending")
        let pending = try #require(
          await RefundsTests.refund(refunds, paid.paymentID, 300, token: token, key: "refund").refund)
        #expect(pending.status == .pending)
        let refund = try await SettlementTests.eventually("refund settled by webhook", timeout: .seconds(20)) {
          () -> Tender_Refunds_V1_Refund? in
          let current = try await refunds.getRefund(
            .with { $0.refundID = pending.refundID }, metadata: TestServer.bearer(token)
          ).refund
          return current.status == .pending ? nil : current
        }
        #expect(refund.status == .succeeded)
      }
      // Settled by webhooks, not by the reconciler: no provider reads.
      #expect(await server.simulator.requests().filter { $0.method == "GET" }.isEmpty)
      let applied = try await RefundsTests.rows(
        server, "SELECT count(*)::bigint FROM webhook_inbox WHERE outcome = 'applied'", as: Int64.self)
      #expect((applied.first ?? 0) >= 2)
    }
  }

  @Test(
    "Refusals change nothing: a wrong signature 401, an old timestamp 401, a body over the limit 413 before hashing, malformed JSON 400, an unknown provider 404; each counted by reason"
  )
  func refusals() async throws {
    try await TestServer.with(webhooks: false, tune: { $0.webhookMaxBodyBytes = 4096 }) { server in
      let body = Self.event(
        id: "evt_r1", type: "payment_intent.succeeded",
        object: Self.intent("pi_x", status: "succeeded", tenderID: "pay_x"))
      let status1 = try await Self.post(server, body: body, headers: Self.signed(body, secret: "whsec_wrong"))
      #expect(status1 == 401)
      let status2 = try await Self.post(
        server, body: body, headers: Self.signed(body, at: Date().addingTimeInterval(-310)))
      #expect(status2 == 401)
      let status3 = try await Self.post(
        server, body: body, headers: Self.signed(body, at: Date().addingTimeInterval(310)))
      #expect(status3 == 401)
      let status4 = try await Self.post(server, body: body, headers: [("Content-Type", "application/json")])
      #expect(status4 == 401)
      let huge = Array(repeating: UInt8(ascii: " "), count: 5000)
      let status5 = try await Self.post(server, body: huge, headers: Self.signed(huge))
      #expect(status5 == 413)
      let notJSON = Array("not json".utf8)
      let status6 = try await Self.post(server, body: notJSON, headers: Self.signed(notJSON))
      #expect(status6 == 400)
      let status7 = try await Self.post(server, path: "/webhooks/nobody", body: body, headers: Self.signed(body))
      #expect(status7 == 404)
      #expect(try await RefundsTests.rows(server, "SELECT count(*)::bigint FROM webhook_inbox", as: Int64.self) == [0])
      let metrics = server.application.metrics.emitToString()
      for reason in ["signature_mismatch", "timestamp_out_of_tolerance", "signature_missing", "too_large", "malformed"]
      {
        #expect(metrics.contains(#"tender_webhooks_refused_total{provider="stripe",reason="\#(reason)"}"#), "\(reason)")
      }
      // Accepted once signed right.
      let status8 = try await Self.post(server, body: body, headers: Self.signed(body))
      #expect(status8 == 200)
      #expect(try await RefundsTests.rows(server, "SELECT count(*)::bigint FROM webhook_inbox", as: Int64.self) == [1])
    }
  }

  @Test(
    "The same event five times at once is stored and applied once; a late older state leaves the payment SUCCEEDED (stale, recorded)"
  )
  func duplicatesAndOrder() async throws {
    try await TestServer.with(webhooks: false, tune: { $0.settlementCheckAfter = .seconds(60) }) { server in
      let token = try await server.token(scopes: RefundsTests.scopes)
      let payment = try await server.withClient { grpc in
        try #require(
          await PaymentsTests.create(
            Payments(wrapping: grpc), PaymentsTests.request(900, method: "pm_card_async", capture: .automatic),
            metadata: PaymentsTests.metadata(token, key: "a")
          ).payment)
      }
      let succeeded = Self.event(
        id: "evt_dup", type: "payment_intent.succeeded",
        object: Self.intent(payment.providerPaymentID, status: "succeeded", tenderID: payment.paymentID, received: 900)
      )
      let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
        for _ in 0..<5 {
          group.addTask { try await Self.post(server, body: succeeded, headers: Self.signed(succeeded)) }
        }
        return try await group.reduce(into: [Int]()) { $0.append($1) }
      }
      #expect(statuses == [200, 200, 200, 200, 200])
      let late = Self.event(
        id: "evt_late", type: "payment_intent.processing",
        object: Self.intent(payment.providerPaymentID, status: "processing", tenderID: payment.paymentID))
      let status9 = try await Self.post(server, body: late, headers: Self.signed(late))
      #expect(status9 == 200)
      let outcomes = try await SettlementTests.eventually("both applied") { () -> [String]? in
        let rows = try await RefundsTests.rows(
          server, "SELECT event_id || ':' || coalesce(outcome, '-') FROM webhook_inbox ORDER BY event_id",
          as: String.self)
        return rows.allSatisfy { !$0.hasSuffix(":-") } && rows.count == 2 ? rows : nil
      }
      #expect(outcomes == ["evt_dup:applied", "evt_late:stale"])
      #expect(try await RefundsTests.rows(server, "SELECT status FROM payments", as: String.self) == ["succeeded"])
      let events = try await RefundsTests.rows(
        server, "SELECT type FROM payment_events ORDER BY event_id", as: String.self)
      #expect(events == ["payment_created", "payment_succeeded"])
    }
  }

  @Test("A webhook for a payment Tender has not committed yet is tried again and applied once the payment exists")
  func beforeThePaymentExists() async throws {
    try await TestServer.with(webhooks: false, tune: { $0.settlementCheckAfter = .seconds(60) }) { server in
      _ = try await server.token(scopes: RefundsTests.scopes)
      let id = PaymentID.random()
      let body = Self.event(
        id: "evt_early", type: "payment_intent.succeeded",
        object: Self.intent("pi_early", status: "succeeded", tenderID: id.rawValue, received: 700))
      let status10 = try await Self.post(server, body: body, headers: Self.signed(body))
      #expect(status10 == 200)
      _ = try await SettlementTests.eventually("postponed") { () -> Bool? in
        try await RefundsTests.rows(
          server, "SELECT attempts FROM webhook_inbox WHERE state = 'received'", as: Int32.self
        ).first.map { $0 >= 1 ? true : nil } ?? nil
      }
      // The payment commits now (as a CreatePayment whose answer had not been recorded yet).
      try await server.withPostgres { client in
        let now = PostgresTime.now()
        _ = try await PostgresPaymentStore(client: client, logger: .init(label: "test")).insert(
          PaymentRecord(
            id: id, merchantID: MerchantID(TestServer.merchantID)!,
            ledger: PaymentLedger(
              amount: Money(minorUnits: 700, currency: Currency(code: "EUR")!), captureMethod: .automatic),
            paymentMethod: "pm_card_async", customerReference: "", description: "", metadata: [:],
            providerPaymentID: nil, createTime: now, updateTime: now
          )
        )
      }
      // The webhook rounds try it again (each run here and awaited) until its retry is due.
      let status = try await SettlementTests.eventually("applied", timeout: .seconds(15)) { () -> String? in
        try await server.applyWebhooks()
        return try await RefundsTests.rows(
          server, "SELECT status || ':' || coalesce(provider_payment_id, '') FROM payments", as: String.self
        ).first.flatMap { $0.hasPrefix("succeeded") ? $0 : nil }
      }
      #expect(status == "succeeded:pi_early")
      #expect(try await RefundsTests.rows(server, "SELECT outcome FROM webhook_inbox", as: String.self) == ["applied"])
    }
  }

  @Test("An event for an object that never appears is tried again with backoff, then parked and counted")
  func parking() async throws {
    try await TestServer.with(
      webhooks: false,
      tune: {
        $0.webhookRetry = .init(firstRetry: .milliseconds(100), maximumRetry: .milliseconds(200), maximumAttempts: 3)
      }
    ) { server in
      let body = Self.event(
        id: "evt_orphan", type: "payment_intent.succeeded",
        object: Self.intent("pi_nobody", status: "succeeded", tenderID: PaymentID.random().rawValue))
      let status = try await Self.post(server, body: body, headers: Self.signed(body))
      #expect(status == 200)
      let parked = try await SettlementTests.eventually("parked") { () -> String? in
        try await server.applyWebhooks()
        return try await RefundsTests.rows(
          server, "SELECT state || ':' || attempts FROM webhook_inbox WHERE state = 'parked'", as: String.self
        ).first
      }
      #expect(parked == "parked:3")
      let metrics = try await SettlementTests.eventually("counted") { () -> String? in
        try await server.applyWebhooks()
        let text = server.application.metrics.emitToString()
        return text.contains(#"tender_webhooks_parked_total{provider="stripe"} 1"#) ? text : nil
      }
      #expect(metrics.contains("tender_webhook_inbox_parked 1"))
    }
  }

  @Test(
    "The simulator's own webhooks, sent twice, out of order and (once) forged: the forged one refused, the rest applied once, the payment ends where the provider is"
  )
  func simulatorDeliveryFaults() async throws {
    try await TestServer.with(rpc: .tls, tune: { $0.settlementCheckAfter = .seconds(60) }) { server in
      let token = try await server.token(scopes: RefundsTests.scopes)
      await server.simulator.deliverWebhooks(WebhookDelivery(duplicate: true, outOfOrder: true))
      try await server.withClient { grpc in
        let payments = Payments(wrapping: grpc)
        // Manual capture: authorized (event 1), then captured (event 2) — sent as 2, 1, each twice.
        let created = try #require(
          await PaymentsTests.create(
            payments, PaymentsTests.request(800, method: "pm_card_visa", capture: .manual),
            metadata: PaymentsTests.metadata(token, key: "p")
          ).payment)
        let captured = try await payments.capturePayment(
          .with { $0.paymentID = created.paymentID }, metadata: PaymentsTests.metadata(token, key: "c")
        ).payment
        #expect(captured.status == .succeeded)
        let outcomes = try await SettlementTests.eventually("delivered") { () -> [String]? in
          let rows = try await RefundsTests.rows(
            server, "SELECT event_type || ':' || coalesce(outcome, '-') FROM webhook_inbox ORDER BY receive_time",
            as: String.self)
          return rows.count == 2 && rows.allSatisfy { !$0.hasSuffix(":-") } ? rows : nil
        }
        // The capture came first — applied by the RPC's own answer or by the event, whichever
        // committed first, the other changing nothing — then the older authorization: stale.
        #expect(
          ["payment_intent.succeeded:already", "payment_intent.succeeded:applied"].contains(outcomes.first ?? ""),
          "\(outcomes)")
        #expect(outcomes.last == "payment_intent.amount_capturable_updated:stale", "\(outcomes)")
        await server.simulator.deliverWebhooks(WebhookDelivery(forged: true))
        let second = try #require(
          await PaymentsTests.create(
            payments, PaymentsTests.request(500, method: "pm_card_visa", capture: .manual),
            metadata: PaymentsTests.metadata(token, key: "p2")
          ).payment)
        #expect(second.status == .requiresCapture)
        let refused = try await SettlementTests.eventually("refused") { () -> String? in
          let text = server.application.metrics.emitToString()
          return text.contains(#"tender_webhooks_refused_total{provider="stripe",reason="signature_mismatch"}"#)
            ? text : nil
        }
        #expect(!refused.isEmpty)
        #expect(
          try await RefundsTests.rows(server, "SELECT count(*)::bigint FROM webhook_inbox", as: Int64.self) == [2])
        let final = try await payments.getPayment(
          .with { $0.paymentID = created.paymentID }, metadata: TestServer.bearer(token)
        ).payment
        #expect(final.status == .succeeded && final.amountCapturedMinor == 800)
      }
      let events = try await RefundsTests.rows(
        server, "SELECT type FROM payment_events ORDER BY event_id", as: String.self)
      #expect(
        events == [
          "payment_created", "payment_requires_capture", "payment_succeeded", "payment_created",
          "payment_requires_capture",
        ])
    }
  }
}
