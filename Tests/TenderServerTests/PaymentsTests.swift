import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import GRPCProtobuf
import Logging
import PostgresNIO
import ServiceLifecycle
import SwiftProtobuf
import TenderAPI
import TenderProviderSim
import TenderServer
import TenderTesting
import Testing

@Suite("Payments over gRPC: idempotency and exactly-once")
struct PaymentsTests {
  typealias Payments = Tender_Payments_V1_PaymentService.Client<TestClientTransport>

  static func request(
    _ amount: Int64 = 1000, method: String = "pm_card_visa", capture: Tender_Payments_V1_CaptureMethod = .manual
  ) -> Tender_Payments_V1_CreatePaymentRequest {
    .with {
      $0.amount = .with { money in
        money.amountMinor = amount
        money.currency = "EUR"
      }
      $0.paymentMethodToken = method
      $0.captureMethod = capture
      $0.customerReference = "cus_42"
      $0.metadata = ["order": "42", "channel": "web"]
    }
  }

  static func metadata(_ token: String, key: String?) -> Metadata {
    var metadata = TestServer.bearer(token)
    if let key { metadata.addString(key, forKey: "idempotency-key") }
    return metadata
  }

  /// The outcome of one CreatePayment: the response (with whether it was replayed) or the error.
  enum Outcome {
    case payment(Tender_Payments_V1_Payment, replayed: Bool)
    case failure(RPCError)

    var payment: Tender_Payments_V1_Payment? {
      if case .payment(let payment, _) = self { return payment }
      return nil
    }

    var error: RPCError? {
      if case .failure(let error) = self { return error }
      return nil
    }
  }

  static func create<Transport: ClientTransport>(
    _ payments: Tender_Payments_V1_PaymentService.Client<Transport>, _ request: Tender_Payments_V1_CreatePaymentRequest,
    metadata: Metadata
  ) async -> Outcome {
    do {
      return try await payments.createPayment(request, metadata: metadata) { response in
        let replayed = response.metadata[stringValues: "idempotent-replayed"].contains("true")
        return .payment(try response.message.payment, replayed: replayed)
      }
    } catch let error as RPCError {
      return .failure(error)
    } catch {
      return .failure(RPCError(code: .unknown, message: "\(error)"))
    }
  }

  static func count(_ server: TestServer, _ table: String) async throws -> Int {
    try await server.withPostgres { client in
      try await client.query(PostgresQuery(unsafeSQL: "SELECT count(*)::bigint FROM \(table)")).decode(Int.self).reduce(
        0, +)
    }
  }

  @Test("CreatePayment authorizes through the provider; GetPayment reads it back; another merchant cannot see it")
  func createAndGet() async throws {
    try await TestServer.with(rpc: .tls) { server in
      let token = try await server.token(scopes: ["payments:write", "payments:read"])
      let other = try await server.token(scopes: ["payments:read"], merchantID: "mer_other")
      try await server.withClient { grpc in
        let payments = Payments(wrapping: grpc)
        let outcome = await Self.create(payments, Self.request(), metadata: Self.metadata(token, key: "order-1"))
        let payment = try #require(outcome.payment, "\(String(describing: outcome.error))")
        #expect(payment.status == .requiresCapture)
        #expect(payment.amountCapturableMinor == 1000)
        #expect(payment.providerPaymentID.hasPrefix("pi_"))
        #expect(payment.merchantID == TestServer.merchantID)
        #expect(payment.metadata == ["order": "42", "channel": "web"])

        let read = try await payments.getPayment(
          .with { $0.paymentID = payment.paymentID }, metadata: TestServer.bearer(token))
        #expect(read.payment == payment)
        let hidden = await #expect(throws: RPCError.self) {
          try await payments.getPayment(.with { $0.paymentID = payment.paymentID }, metadata: TestServer.bearer(other))
        }
        #expect(hidden?.code == .notFound)
        #expect(hidden?.reason == "PAYMENT_NOT_FOUND")
      }
    }
  }

  @Test(
    "Control characters, NUL included, are INVALID_ARGUMENT naming the field before PostgreSQL sees them (not UNKNOWN from the database); nothing is stored"
  )
  func controlCharactersRefused() async throws {
    try await TestServer.with { server in
      let token = try await server.token(scopes: ["payments:write", "refunds:write"])
      try await server.withClient { grpc in
        let payments = Payments(wrapping: grpc)
        var nul = Self.request()
        nul.description_p = "gift\u{0}wrap"
        let first = await Self.create(payments, nul, metadata: Self.metadata(token, key: "nul"))
        #expect(first.error?.code == .invalidArgument && first.error?.reason == "FIELD_CONTROL_CHARACTERS")
        #expect(first.error?.field == "description")
        var metadata = Self.request()
        metadata.metadata["note"] = "\u{0}"
        let second = await Self.create(payments, metadata, metadata: Self.metadata(token, key: "nul-metadata"))
        #expect(second.error?.reason == "FIELD_CONTROL_CHARACTERS" && second.error?.field == "metadata[note]")
        let payment = try #require(
          await Self.create(payments, Self.request(capture: .automatic), metadata: Self.metadata(token, key: "ok"))
            .payment)
        let refund = await RefundsTests.refund(
          Tender_Refunds_V1_RefundService.Client(wrapping: grpc), payment.paymentID, 10, token: token, key: "r"
        ) { $0.metadata["why"] = "bad\u{0}" }
        #expect(refund.error?.reason == "FIELD_CONTROL_CHARACTERS" && refund.field == "metadata[why]")
      }
      #expect(try await Self.count(server, "payments") == 1)
      #expect(try await Self.count(server, "refunds") == 0)
      #expect(try await Self.count(server, "idempotency_keys") == 1)
    }
  }

  @Test(
    "Fifty concurrent CreatePayment with one key: one payment row, one provider charge, everyone else replayed or told it is in use"
  )
  func sameKeyStampede() async throws {
    try await TestServer.with { server in
      let token = try await server.token(scopes: ["payments:write"])
      let outcomes = try await server.withClient { grpc in
        let payments = Payments(wrapping: grpc)
        return await withTaskGroup(of: Outcome.self) { group in
          for _ in 0..<50 {
            group.addTask {
              await Self.create(
                payments, Self.request(capture: .automatic), metadata: Self.metadata(token, key: "stampede"))
            }
          }
          var all: [Outcome] = []
          for await outcome in group { all.append(outcome) }
          return all
        }
      }
      let succeeded = outcomes.compactMap(\.payment)
      #expect(Set(succeeded.map(\.paymentID)).count == 1)
      #expect(succeeded.filter { $0.status == .succeeded }.count == succeeded.count)
      for error in outcomes.compactMap(\.error) {
        #expect(error.code == .aborted && error.reason == "IDEMPOTENCY_KEY_IN_USE", "\(error)")
      }
      #expect(try await Self.count(server, "payments") == 1)
      let charges = await server.simulator.requests().filter {
        $0.path == "/v1/payment_intents" && $0.outcome == "created"
      }
      #expect(charges.count == 1)
    }
  }

  @Test(
    "Provider faults: a timeout leaves the payment PROCESSING; an unreachable provider answers UNAVAILABLE and frees the key"
  )
  func providerFaults() async throws {
    // A long lock keeps the completer away while the unfinished record is inspected.
    try await TestServer.with(tune: { $0.idempotencyLock = .seconds(60) }) { server in
      let token = try await server.token(scopes: ["payments:write"])
      // The provider holds the charge past Tender's two attempts (released once inspected).
      await server.simulator.inject(.stall(seconds: 3600, .createPayment))
      try await server.withClient { grpc in
        let slow = await Self.create(
          Payments(wrapping: grpc), Self.request(), metadata: Self.metadata(token, key: "slow"))
        #expect(slow.payment?.status == .processing, "\(String(describing: slow.error))")
      }
      let unfinished = try await server.withPostgres { client in
        try await client.query("SELECT recovery_point FROM idempotency_keys WHERE idempotency_key = 'slow'").decode(
          String.self
        ).reduce(into: [String]()) { $0.append($1) }
      }
      #expect(unfinished == ["payment_created"])
      await server.simulator.releaseStalls()
    }
    try await TestServer.with(configure: { flags, _ in flags[.providerURL] = "http://127.0.0.1:9" }) { server in
      let token = try await server.token(scopes: ["payments:write"])
      try await server.withClient { grpc in
        let down = await Self.create(
          Payments(wrapping: grpc), Self.request(), metadata: Self.metadata(token, key: "down"))
        #expect(down.error?.code == .unavailable)
        #expect(down.error?.reason == "PROVIDER_UNAVAILABLE")
      }
      #expect(try await Self.count(server, "idempotency_keys") == 0)
    }
  }

  @Test(
    "An operation interrupted at the provider is finished by the completer exactly once; retries then replay the final answer"
  )
  func completerFinishesInterruptedPayments() async throws {
    try await TestServer.with { server in
      let token = try await server.token(scopes: ["payments:write", "payments:read"])
      try await server.withClient { grpc in
        let payments = Payments(wrapping: grpc)
        // The provider holds the charge; Tender gives up after 2 s per attempt (twice).
        await server.simulator.inject(.stall(seconds: 3600, .createPayment))
        let first = await Self.create(payments, Self.request(), metadata: Self.metadata(token, key: "slow"))
        let pending = try #require(first.payment, "\(String(describing: first.error))")
        #expect(pending.status == .processing)
        // The provider finishes the charge; Tender has not heard of it.
        await server.simulator.releaseStalls()

        // The completer takes the key over once its lock runs out (made to happen now) and asks
        // the provider again under the same idempotency key until the provider has answered.
        try await server.completeAfterLockExpiry(key: "slow", until: "recovery_point = 'finished'")
        let status = try await payments.getPayment(
          .with { $0.paymentID = pending.paymentID }, metadata: TestServer.bearer(token)
        ).payment.status
        #expect(status == .requiresCapture)

        // The completer stored the answer: every retry replays it.
        let retry = await Self.create(
          payments, Self.request(), metadata: Self.metadata(token, key: "slow"))
        guard case .payment(let answered, replayed: true) = retry else {
          Issue.record("the retry after the completer was not a replay: \(retry)")
          return
        }
        #expect(answered.paymentID == pending.paymentID && answered.status == .requiresCapture)
        guard
          case .payment(let final, replayed: true) = await Self.create(
            payments, Self.request(), metadata: Self.metadata(token, key: "slow"))
        else {
          Issue.record("asked again, the answer was not a replay")
          return
        }
        #expect(final == answered)
      }
      #expect(try await Self.count(server, "payments") == 1)
      let charges = await server.simulator.requests().filter {
        $0.path == "/v1/payment_intents" && $0.outcome == "created"
      }
      #expect(charges.count == 1)
      let events = try await server.withPostgres { client in
        try await client.query("SELECT type FROM payment_events ORDER BY event_id").decode(String.self).reduce(
          into: [String]()
        ) { $0.append($1) }
      }
      #expect(events == ["payment_created", "payment_requires_capture"])
    }
  }

  static func capture<Transport: ClientTransport>(
    _ payments: Tender_Payments_V1_PaymentService.Client<Transport>, _ id: String, amount: Int64 = 0, metadata: Metadata
  ) async -> Result<Tender_Payments_V1_Payment, RPCError> {
    do {
      return .success(
        try await payments.capturePayment(
          .with {
            $0.paymentID = id
            $0.amountMinor = amount
          }, metadata: metadata
        ).payment)
    } catch let error as RPCError {
      return .failure(error)
    } catch {
      return .failure(RPCError(code: .unknown, message: "\(error)"))
    }
  }

  static func cancel<Transport: ClientTransport>(
    _ payments: Tender_Payments_V1_PaymentService.Client<Transport>, _ id: String, metadata: Metadata
  ) async -> Result<Tender_Payments_V1_Payment, RPCError> {
    do {
      return .success(try await payments.cancelPayment(.with { $0.paymentID = id }, metadata: metadata).payment)
    } catch let error as RPCError {
      return .failure(error)
    } catch {
      return .failure(RPCError(code: .unknown, message: "\(error)"))
    }
  }

  @Test("Capture racing cancel on one payment: exactly one wins, at Tender and at the provider")
  func captureRacingCancelOverRPC() async throws {
    try await TestServer.with { server in
      let token = try await server.token(scopes: ["payments:write", "payments:read"])
      try await server.withClient { grpc in
        let payments = Payments(wrapping: grpc)
        for round in 0..<8 {
          let payment = try #require(
            await Self.create(payments, Self.request(), metadata: Self.metadata(token, key: "p\(round)")).payment)
          async let capture = Self.capture(
            payments, payment.paymentID, metadata: Self.metadata(token, key: "cap\(round)"))
          async let cancel = Self.cancel(
            payments, payment.paymentID, metadata: Self.metadata(token, key: "can\(round)"))
          let outcomes = await [capture, cancel]
          let winners = outcomes.filter { if case .success = $0 { return true } else { return false } }
          #expect(winners.count == 1, "round \(round): \(outcomes)")
          let final = try await payments.getPayment(
            .with { $0.paymentID = payment.paymentID }, metadata: TestServer.bearer(token)
          ).payment
          #expect(final.status == .succeeded || final.status == .canceled)
        }
      }
      let outcomes = await server.simulator.requests().map(\.outcome)
      #expect(outcomes.filter { $0 == "captured" || $0 == "canceled" }.count == 8)
    }
  }

  @Test("WatchPayments streams the merchant's own events in order and resumes from a cursor without gaps")
  func watching() async throws {
    try await TestServer.with { server in
      let token = try await server.token(scopes: ["payments:write", "payments:read"])
      let other = try await server.token(scopes: ["payments:write", "payments:read"], merchantID: "mer_other")
      try await server.withClient { grpc in
        let payments = Payments(wrapping: grpc)
        let before = try #require(
          await Self.create(payments, Self.request(), metadata: Self.metadata(token, key: "before")).payment)
        let (events, continuation) = AsyncStream.makeStream(of: Tender_Payments_V1_WatchPaymentsResponse.self)
        let (started, watchStarted) = AsyncStream.makeStream(of: Void.self)
        let watcher = Task {
          try await payments.watchPayments(.init(), metadata: TestServer.bearer(token)) { response in
            // The response's headers have arrived: the server took its starting position before
            // sending them, so everything committed from here on is in the stream.
            watchStarted.finish()
            for try await message in response.messages { continuation.yield(message) }
          }
        }
        // Once the watch has started from "now", make events for both merchants.
        for await _ in started {}
        let first = try #require(
          await Self.create(payments, Self.request(), metadata: Self.metadata(token, key: "w1")).payment)
        _ = await Self.create(payments, Self.request(), metadata: Self.metadata(other, key: "w1"))
        let declined = await Self.create(
          payments, Self.request(method: "pm_card_chargeDeclined"), metadata: Self.metadata(token, key: "w2"))
        #expect(declined.error?.reason == "CARD_DECLINED")

        var received: [Tender_Payments_V1_WatchPaymentsResponse] = []
        for await event in events {
          // "Now" may still take in events committed just before the watch began (the feed's
          // position trails the oldest running transaction of a busy cluster): those of the
          // payment made before it are skipped.
          if event.paymentID == before.paymentID { continue }
          received.append(event)
          if received.count == 4 { break }
        }
        watcher.cancel()
        #expect(
          received.map(\.eventType) == [.paymentCreated, .paymentRequiresCapture, .paymentCreated, .paymentFailed])
        #expect(received[0].paymentID == first.paymentID && received[1].paymentID == first.paymentID)
        #expect(received.allSatisfy { $0.payment.merchantID == TestServer.merchantID })

        // Reconnect after the second event: the third and fourth come next, nothing is skipped.
        let resumed = try await payments.watchPayments(
          .with { $0.cursor = received[1].cursor }, metadata: TestServer.bearer(token)
        ) { response in
          var again: [Tender_Payments_V1_WatchPaymentsResponse] = []
          for try await message in response.messages {
            again.append(message)
            if again.count == 2 { break }
          }
          return again
        }
        #expect(resumed.map(\.paymentID) == [received[2].paymentID, received[3].paymentID])
        #expect(resumed.map(\.eventType) == [.paymentCreated, .paymentFailed])

        let foreign = await #expect(throws: RPCError.self) {
          try await payments.watchPayments(.with { $0.cursor = received[1].cursor }, metadata: TestServer.bearer(other))
          { response in
            for try await _ in response.messages {}
          }
        }
        #expect(foreign?.reason == "CURSOR_INVALID")
      }
    }
  }

  @Test(
    "A WatchPayments stream ends with UNAVAILABLE SERVER_DRAINING when the server drains, so its client watches again")
  func watchEndsOnDrain() async throws {
    try await TestServer.with { server in
      let token = try await server.token(scopes: ["payments:read", "payments:write"])
      try await server.withClient { grpc in
        let payments = Payments(wrapping: grpc)
        let (events, continuation) = AsyncStream.makeStream(of: Void.self)
        let watcher = Task {
          try await payments.watchPayments(.init(), metadata: TestServer.bearer(token)) { response in
            for try await _ in response.messages { continuation.yield() }
          }
        }
        // The stream is open once it delivers an event (no guessing how long it takes to start):
        // payments are made until one shows up on it.
        let maker = Task {
          for attempt in 0..<60 where !Task.isCancelled {
            _ = await Self.create(payments, Self.request(), metadata: Self.metadata(token, key: "drain-\(attempt)"))
            try? await Task.sleep(for: .milliseconds(300))
          }
          continuation.finish()
        }
        var delivered = false
        for await _ in events {
          delivered = true
          break
        }
        maker.cancel()
        _ = await maker.value
        #expect(delivered)
        let started = ContinuousClock.now
        await server.application.serviceGroup.triggerGracefulShutdown()
        let ended = await #expect(throws: RPCError.self) { try await watcher.value }
        #expect(ended?.code == .unavailable)
        #expect(ended?.reason == "SERVER_DRAINING")
        #expect(ContinuousClock.now - started < .seconds(10))
      }
    }
  }

  @Test("Finished idempotency records are reaped once a day old; younger and unfinished ones stay")
  func reaping() async throws {
    try await TestServer.with(tune: { $0.reaperInterval = .milliseconds(200) }) { server in
      let token = try await server.token(scopes: ["payments:write"])
      try await server.withClient { grpc in
        let payments = Payments(wrapping: grpc)
        for key in ["old", "young"] {
          _ = try #require(
            await Self.create(payments, Self.request(), metadata: Self.metadata(token, key: key)).payment)
        }
      }
      func keys() async throws -> [String] {
        try await server.withPostgres { client in
          try await client.query("SELECT idempotency_key FROM idempotency_keys ORDER BY 1").decode(String.self).reduce(
            into: [String]()
          ) { $0.append($1) }
        }
      }
      try await server.withPostgres { client in
        try await client.query(
          "UPDATE idempotency_keys SET create_time = now() - interval '25 hours' WHERE idempotency_key = 'old'")
        // Unfinished, a day old, still locked: the reaper leaves it alone.
        try await client.query(
          """
          INSERT INTO idempotency_keys (merchant_id, idempotency_key, method, request_fingerprint, recovery_point, locked_until, create_time)
          VALUES (\(TestServer.merchantID), 'unfinished', 'tender.refunds.v1.RefundService/CreateRefund', decode(repeat('00', 32), 'hex'), 'started',
                  now() + interval '1 hour', now() - interval '25 hours')
          """
        )
      }
      let deadline = ContinuousClock.now + .seconds(15)
      while try await keys().contains("old"), ContinuousClock.now < deadline {
        try await Task.sleep(for: .milliseconds(100))
      }
      #expect(try await keys() == ["unfinished", "young"])
    }
  }
}
