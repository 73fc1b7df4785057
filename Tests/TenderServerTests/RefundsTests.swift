import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import GRPCProtobuf
import PostgresNIO
import SwiftProtobuf
import TenderAPI
import TenderProviderSim
import TenderServer
import TenderTesting
import Testing

@Suite("Refunds over gRPC: never above the captured money, exactly once at the provider")
struct RefundsTests {
  typealias Payments = Tender_Payments_V1_PaymentService.Client<TestClientTransport>
  typealias Refunds = Tender_Refunds_V1_RefundService.Client<TestClientTransport>
  static let scopes = ["payments:write", "payments:read", "refunds:write", "refunds:read"]

  /// A captured payment of `amount` (automatic capture).
  static func captured<Transport: ClientTransport>(
    _ payments: Tender_Payments_V1_PaymentService.Client<Transport>, _ amount: Int64, token: String, key: String,
    method: String = "pm_card_visa"
  ) async throws -> Tender_Payments_V1_Payment {
    var outcome = await PaymentsTests.create(
      payments, PaymentsTests.request(amount, method: method, capture: .automatic),
      metadata: PaymentsTests.metadata(token, key: key))
    // On a loaded machine the provider's answer may miss the timeout: ask again with the key.
    let deadline = ContinuousClock.now + .seconds(30)
    while outcome.payment?.status == .processing || outcome.error?.reason == "IDEMPOTENCY_KEY_IN_USE",
      ContinuousClock.now < deadline
    {
      try await Task.sleep(for: .milliseconds(250))
      outcome = await PaymentsTests.create(
        payments, PaymentsTests.request(amount, method: method, capture: .automatic),
        metadata: PaymentsTests.metadata(token, key: key))
    }
    let payment = try #require(outcome.payment, "\(String(describing: outcome.error))")
    #expect(payment.status == .succeeded)
    return payment
  }

  enum Outcome {
    case refund(Tender_Refunds_V1_Refund, replayed: Bool, bytes: [UInt8])
    case failure(RPCError)

    var refund: Tender_Refunds_V1_Refund? {
      if case .refund(let refund, _, _) = self { return refund }
      return nil
    }

    var error: RPCError? {
      if case .failure(let error) = self { return error }
      return nil
    }

    var field: String? {
      try? self.error?.unpackGoogleRPCStatus()?.details.compactMap(\.errorInfo).first?.metadata["field"]
    }
  }

  static func refund<Transport: ClientTransport>(
    _ refunds: Tender_Refunds_V1_RefundService.Client<Transport>,
    _ paymentID: String,
    _ amount: Int64,
    token: String,
    key: String?,
    edit: (inout Tender_Refunds_V1_CreateRefundRequest) -> Void = { _ in }
  ) async -> Outcome {
    var request = Tender_Refunds_V1_CreateRefundRequest.with {
      $0.paymentID = paymentID
      $0.amountMinor = amount
    }
    edit(&request)
    do {
      return try await refunds.createRefund(request, metadata: PaymentsTests.metadata(token, key: key)) { response in
        var options = BinaryEncodingOptions()
        options.useDeterministicOrdering = true
        let message = try response.message
        return .refund(
          message.refund, replayed: response.metadata[stringValues: "idempotent-replayed"].contains("true"),
          bytes: try message.serializedBytes(options: options))
      }
    } catch let error as RPCError {
      return .failure(error)
    } catch {
      return .failure(RPCError(code: .unknown, message: "\(error)"))
    }
  }

  /// `refund`, asked again with the same key while the answer is IDEMPOTENCY_KEY_IN_USE, as any
  /// client would: on a loaded machine a lock can run out before its owner reaches the provider,
  /// and the completer finishes the refund meanwhile.
  static func answered<Transport: ClientTransport>(
    _ refunds: Tender_Refunds_V1_RefundService.Client<Transport>, _ paymentID: String, _ amount: Int64, token: String,
    key: String
  ) async -> Outcome {
    var outcome = await Self.refund(refunds, paymentID, amount, token: token, key: key)
    let deadline = ContinuousClock.now + .seconds(30)
    while outcome.error?.reason == "IDEMPOTENCY_KEY_IN_USE", ContinuousClock.now < deadline {
      try? await Task.sleep(for: .milliseconds(250))
      outcome = await Self.refund(refunds, paymentID, amount, token: token, key: key)
    }
    return outcome
  }

  static func rows<Row: Sendable>(_ server: TestServer, _ sql: String, as: Row.Type) async throws -> [Row]
  where Row: PostgresDecodable {
    try await server.withPostgres { client in
      try await client.query(PostgresQuery(unsafeSQL: sql)).decode(Row.self).reduce(into: [Row]()) { $0.append($1) }
    }
  }

  @Test(
    "A refund returns captured money through the provider; replays are identical; the rest can be refunded; never more")
  func lifecycle() async throws {
    try await TestServer.with(rpc: .tls) { server in
      let token = try await server.token(scopes: Self.scopes)
      try await server.withClient { grpc in
        let payments = Payments(wrapping: grpc)
        let refunds = Refunds(wrapping: grpc)
        let payment = try await Self.captured(payments, 1000, token: token, key: "pay")

        let first = await Self.refund(refunds, payment.paymentID, 300, token: token, key: "r1") {
          $0.reason = .requestedByCustomer
          $0.metadata = ["ticket": "T-7"]
        }
        guard case .refund(let refund, replayed: false, let bytes) = first else {
          Issue.record("expected a first answer: \(first)")
          return
        }
        #expect(refund.status == .succeeded)
        #expect(refund.refundID.hasPrefix("re_") && refund.providerRefundID.hasPrefix("re_sim"))
        #expect(refund.amount.amountMinor == 300 && refund.amount.currency == "EUR")
        #expect(refund.reason == .requestedByCustomer && refund.metadata == ["ticket": "T-7"])
        #expect(refund.paymentID == payment.paymentID && refund.merchantID == payment.merchantID)

        let again = await Self.refund(refunds, payment.paymentID, 300, token: token, key: "r1") {
          $0.reason = .requestedByCustomer
          $0.metadata = ["ticket": "T-7"]
        }
        guard case .refund(_, replayed: true, let replayedBytes) = again else {
          Issue.record("expected a replay: \(again)")
          return
        }
        #expect(replayedBytes == bytes)
        let reused = await Self.refund(refunds, payment.paymentID, 301, token: token, key: "r1")
        #expect(reused.error?.code == .invalidArgument && reused.error?.reason == "IDEMPOTENCY_KEY_REUSED")

        let read = try await refunds.getRefund(
          .with { $0.refundID = refund.refundID }, metadata: TestServer.bearer(token)
        ).refund
        #expect(read == refund)
        var afterFirst = try await payments.getPayment(
          .with { $0.paymentID = payment.paymentID }, metadata: TestServer.bearer(token)
        ).payment
        #expect(afterFirst.amountRefundedMinor == 300 && afterFirst.status == .succeeded)

        // Zero means everything still refundable.
        let rest = await Self.refund(refunds, payment.paymentID, 0, token: token, key: "r2")
        #expect(rest.refund?.amount.amountMinor == 700 && rest.refund?.status == .succeeded, "\(rest)")
        #expect(rest.refund?.reason == .unspecified)
        afterFirst = try await payments.getPayment(
          .with { $0.paymentID = payment.paymentID }, metadata: TestServer.bearer(token)
        ).payment
        #expect(afterFirst.amountRefundedMinor == 1000)

        let beyond = await Self.refund(refunds, payment.paymentID, 1, token: token, key: "r3")
        #expect(
          beyond.error?.code == .failedPrecondition && beyond.error?.reason == "REFUND_EXCEEDS_CAPTURED"
            && beyond.field == "amount_minor", "\(beyond)")
        // A refusal that depends on the payment's state is the key's answer from now on.
        let beyondAgain = await Self.refund(refunds, payment.paymentID, 1, token: token, key: "r3")
        #expect(beyondAgain.error?.reason == "REFUND_EXCEEDS_CAPTURED")
        #expect(beyondAgain.error?.metadata[stringValues: "idempotent-replayed"].contains("true") == true)

        let held = try #require(
          await PaymentsTests.create(
            payments, PaymentsTests.request(500), metadata: PaymentsTests.metadata(token, key: "held")
          ).payment)
        let uncaptured = await Self.refund(refunds, held.paymentID, 100, token: token, key: "r4")
        #expect(
          uncaptured.error?.code == .failedPrecondition && uncaptured.error?.reason == "PAYMENT_NOT_REFUNDABLE",
          "\(uncaptured)")
        let missing = await Self.refund(refunds, "pay_doesnotexist", 100, token: token, key: "r5")
        #expect(
          missing.error?.code == .notFound && missing.error?.reason == "PAYMENT_NOT_FOUND"
            && missing.field == "payment_id")
      }
      let events = try await Self.rows(
        server, "SELECT type FROM payment_events WHERE refund_id IS NOT NULL ORDER BY event_id", as: String.self)
      #expect(events == ["refund_created", "refund_succeeded", "refund_created", "refund_succeeded"])
      let sent = await server.simulator.requests().filter { $0.path == "/v1/refunds" }
      #expect(sent.map(\.outcome) == ["refunded", "refunded"])
      // The unknown payment's key was freed; the state refusals were stored.
      #expect(
        try await Self.rows(
          server, "SELECT idempotency_key FROM idempotency_keys WHERE method LIKE '%CreateRefund' ORDER BY 1",
          as: String.self) == ["r1", "r2", "r3", "r4"])
    }
  }

  @Test(
    "Double-refund race: two concurrent 60s on a captured 100 → one succeeds; then many random refunds never exceed the capture"
  )
  func doubleRefundRace() async throws {
    try await TestServer.with { server in
      let token = try await server.token(scopes: Self.scopes)
      try await server.withClient { grpc in
        let payments = Payments(wrapping: grpc)
        let refunds = Refunds(wrapping: grpc)
        for round in 0..<3 {
          let payment = try await Self.captured(payments, 100, token: token, key: "race\(round)")
          async let a = Self.answered(refunds, payment.paymentID, 60, token: token, key: "a\(round)")
          async let b = Self.answered(refunds, payment.paymentID, 60, token: token, key: "b\(round)")
          let outcomes = await [a, b]
          #expect(
            outcomes.compactMap(\.refund).filter { $0.status == .succeeded }.count == 1, "round \(round): \(outcomes)")
          #expect(outcomes.compactMap(\.error).map { $0.reason } == ["REFUND_EXCEEDS_CAPTURED"], "round \(round)")
        }

        let payment = try await Self.captured(payments, 1000, token: token, key: "many")
        let outcomes = await withTaskGroup(of: Outcome.self) { group in
          for index in 0..<60 {
            let amount = Int64.random(in: 1...60)
            group.addTask { await Self.answered(refunds, payment.paymentID, amount, token: token, key: "m\(index)") }
          }
          return await group.reduce(into: [Outcome]()) { $0.append($1) }
        }
        let granted = outcomes.compactMap(\.refund)
        for error in outcomes.compactMap(\.error) {
          #expect(error.reason == "REFUND_EXCEEDS_CAPTURED", "\(error)")
        }
        #expect(granted.allSatisfy { $0.status == .succeeded })
        #expect(granted.reduce(0) { $0 + $1.amount.amountMinor } <= 1000)
        let final = try await payments.getPayment(
          .with { $0.paymentID = payment.paymentID }, metadata: TestServer.bearer(token)
        ).payment
        #expect(final.amountRefundedMinor == granted.reduce(0) { $0 + $1.amount.amountMinor })
      }
      // In SQL: for every payment, live refunds add up to refunded_minor, which never exceeds the capture.
      let broken = try await Self.rows(
        server,
        """
        SELECT count(*)::bigint FROM payments p
        WHERE p.refunded_minor > p.captured_minor
           OR p.refunded_minor <> (SELECT coalesce(sum(r.amount_minor), 0) FROM refunds r WHERE r.payment_id = p.payment_id AND r.status <> 'failed')
        """,
        as: Int64.self
      )
      #expect(broken == [0])
      let tenderRefunds = try await Self.rows(
        server, "SELECT count(*)::bigint FROM refunds WHERE status = 'succeeded'", as: Int64.self)
      let providerRefunds = await server.simulator.requests().filter {
        $0.path == "/v1/refunds" && $0.outcome == "refunded"
      }.count
      #expect(tenderRefunds == [Int64(providerRefunds)])
    }
  }

  @Test(
    "A refund the provider fails is FAILED and its amount refundable again; the provider unreachable → UNAVAILABLE, key freed"
  )
  func providerFailures() async throws {
    try await TestServer.with { server in
      let token = try await server.token(scopes: Self.scopes)
      try await server.withClient { grpc in
        let payments = Payments(wrapping: grpc)
        let refunds = Refunds(wrapping: grpc)
        let payment = try await Self.captured(payments, 800, token: token, key: "pay", method: "pm_card_refundFail")
        let failed = await Self.refund(refunds, payment.paymentID, 800, token: token, key: "f1")
        let refund = try #require(failed.refund, "\(failed)")
        #expect(refund.status == .failed)
        #expect(refund.failureMessage == "expired_or_canceled_card")
        let after = try await payments.getPayment(
          .with { $0.paymentID = payment.paymentID }, metadata: TestServer.bearer(token)
        ).payment
        #expect(after.amountRefundedMinor == 0)
        // The whole amount can be asked for again (the provider fails it again).
        #expect(await Self.refund(refunds, payment.paymentID, 800, token: token, key: "f2").refund?.status == .failed)
      }
      let events = try await Self.rows(
        server, "SELECT type FROM payment_events WHERE refund_id IS NOT NULL ORDER BY event_id", as: String.self)
      #expect(events == ["refund_created", "refund_failed", "refund_created", "refund_failed"])
    }

    // The provider goes away after the payment was captured.
    let unreachable = try await TestServer.with(configure: { flags, _ in flags[.providerURL] = "http://127.0.0.1:9" }) {
      server in
      let token = try await server.token(scopes: Self.scopes)
      try await server.withPostgres { client in
        try await client.query(
          "INSERT INTO payments (payment_id, merchant_id, status, capture_method, currency, amount_minor, captured_minor, payment_method, provider_payment_id) VALUES ('pay_seeded', \(TestServer.merchantID), 'succeeded', 'automatic', 'EUR', 500, 500, 'pm_card_visa', 'pi_seeded')"
        )
      }
      let outcome = try await server.withClient { grpc in
        await Self.refund(Refunds(wrapping: grpc), "pay_seeded", 200, token: token, key: "down")
      }
      #expect(try await Self.rows(server, "SELECT count(*)::bigint FROM idempotency_keys", as: Int64.self) == [0])
      #expect(try await Self.rows(server, "SELECT status FROM refunds", as: String.self) == ["failed"])
      #expect(try await Self.rows(server, "SELECT refunded_minor FROM payments", as: Int64.self) == [0])
      return outcome
    }
    #expect(
      unreachable.error?.code == .unavailable && unreachable.error?.reason == "PROVIDER_UNAVAILABLE", "\(unreachable)")
  }

  @Test("A refund interrupted at the provider stays PENDING, then the completer finishes it exactly once")
  func completerFinishesInterruptedRefunds() async throws {
    try await TestServer.with(webhooks: false) { server in
      let token = try await server.token(scopes: Self.scopes)
      try await server.withClient { grpc in
        let payments = Payments(wrapping: grpc)
        let refunds = Refunds(wrapping: grpc)
        let payment = try await Self.captured(payments, 900, token: token, key: "pay")
        // The provider holds the refund; Tender gives up after 2 s per attempt (twice).
        await server.simulator.inject(.stall(seconds: 3600, .refund))
        let first = await Self.refund(refunds, payment.paymentID, 400, token: token, key: "slow")
        let pending = try #require(first.refund, "\(first)")
        #expect(pending.status == .pending)
        // Pending money is reserved: only 500 is left meanwhile.
        let tooMuch = await Self.refund(refunds, payment.paymentID, 501, token: token, key: "more")
        #expect(tooMuch.error?.reason == "REFUND_EXCEEDS_CAPTURED")
        // The provider finishes the refund; Tender has not heard of it.
        await server.simulator.releaseStalls()

        // The completer takes the key over once its lock runs out (made to happen now) and asks
        // the provider again under the same idempotency key until the provider has answered.
        try await server.completeAfterLockExpiry(key: "slow", until: "recovery_point = 'finished'")
        let status = try await refunds.getRefund(
          .with { $0.refundID = pending.refundID }, metadata: TestServer.bearer(token)
        ).refund.status
        #expect(status == .succeeded)
        let retry = await Self.refund(refunds, payment.paymentID, 400, token: token, key: "slow")
        guard case .refund(let final, replayed: true, _) = retry else {
          Issue.record("the retry was not a replay: \(retry)")
          return
        }
        #expect(final.refundID == pending.refundID && final.status == .succeeded)
      }
      let refunded = await server.simulator.requests().filter { $0.path == "/v1/refunds" && $0.outcome == "refunded" }
      #expect(refunded.count == 1)
      // Each ask is recorded: unanswered ones as unknown, then the one answer.
      let calls = try await Self.rows(
        server, "SELECT outcome FROM provider_requests WHERE operation = 'create_refund' ORDER BY request_id",
        as: String.self)
      #expect(
        calls.last == "succeeded" && calls.dropLast().allSatisfy { $0 == "unknown" } && !calls.dropLast().isEmpty,
        "\(calls)")
      #expect(try await Self.rows(server, "SELECT count(*)::bigint FROM refunds", as: Int64.self) == [1])
    }
  }

  @Test("Every provider call is recorded with its outcome and the idempotency key the provider received")
  func providerCallsRecorded() async throws {
    try await TestServer.with { server in
      let token = try await server.token(scopes: Self.scopes)
      try await server.withClient { grpc in
        let payments = Payments(wrapping: grpc)
        let held = try #require(
          await PaymentsTests.create(
            payments, PaymentsTests.request(1000), metadata: PaymentsTests.metadata(token, key: "p1")
          ).payment)
        _ = try await payments.capturePayment(
          .with { $0.paymentID = held.paymentID }, metadata: PaymentsTests.metadata(token, key: "c1"))
        #expect(
          await Self.refund(Refunds(wrapping: grpc), held.paymentID, 100, token: token, key: "r1").refund?.status
            == .succeeded)
        let declined = await PaymentsTests.create(
          payments, PaymentsTests.request(method: "pm_card_chargeDeclined"),
          metadata: PaymentsTests.metadata(token, key: "p2"))
        #expect(declined.error?.reason == "CARD_DECLINED")
        // A replay calls nobody.
        _ = await PaymentsTests.create(
          payments, PaymentsTests.request(1000), metadata: PaymentsTests.metadata(token, key: "p1"))
      }
      let calls = try await server.withPostgres { client in
        try await client.query(
          "SELECT operation, outcome, provider_idempotency_key FROM provider_requests ORDER BY request_id"
        )
        .decode((String, String, String).self).reduce(into: [(String, String, String)]()) { $0.append($1) }
      }
      #expect(
        calls.map { "\($0.0) \($0.1)" } == [
          "create_payment succeeded", "capture_payment succeeded", "create_refund succeeded", "create_payment declined",
        ])
      let keysSeen = await server.simulator.requests().compactMap(\.idempotencyKey)
      #expect(calls.map(\.2) == keysSeen)
      #expect(Set(keysSeen).count == 4)
    }
  }
}
