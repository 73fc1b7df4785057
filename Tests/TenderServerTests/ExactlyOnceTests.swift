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

/// Exactly once when the provider misbehaves as real providers do: answers lost after the work
/// was done, outages longer than the lock, rate limits, owners that lose their lock mid-call.
@Suite("Exactly once under provider faults")
struct ExactlyOnceTests {
  typealias Payments = Tender_Payments_V1_PaymentService.Client<TestClientTransport>
  typealias Refunds = Tender_Refunds_V1_RefundService.Client<TestClientTransport>

  enum Operation: String, CaseIterable, Sendable {
    case createPayment, capturePayment, cancelPayment, createRefund

    var fault: SimulatedFault.Operation {
      switch self {
      case .createPayment: return .createPayment
      case .capturePayment: return .capture
      case .cancelPayment: return .cancel
      case .createRefund: return .refund
      }
    }

    /// What the simulator logs when it performs the operation.
    var performed: String {
      switch self {
      case .createPayment: return "created"
      case .capturePayment: return "captured"
      case .cancelPayment: return "canceled"
      case .createRefund: return "refunded"
      }
    }
  }

  /// One call's answer: the message's deterministic bytes and whether it was replayed, or the error.
  enum Answer: Sendable {
    case message(bytes: [UInt8], replayed: Bool, status: String)
    case failure(RPCError)

    /// Still open: the key in use, the outcome unknown, or an object still processing/pending.
    var isOpen: Bool {
      switch self {
      case .message(_, let replayed, let status): return !replayed && (status == "processing" || status == "pending")
      case .failure(let error):
        return (error.code == .aborted && error.reason == "IDEMPOTENCY_KEY_IN_USE")
          || (error.code == .unavailable && error.reason == "PROVIDER_OUTCOME_UNKNOWN")
      }
    }
  }

  /// Returns once the provider holds a request of a `stall` fault (it has the call and its key).
  static func untilStalled(_ simulator: ProviderSimulator) async throws {
    let deadline = ContinuousClock.now + .seconds(30)
    while await simulator.stalledRequests() == 0 {
      try #require(ContinuousClock.now < deadline, "no request reached the stalled provider")
      try await Task.sleep(for: .milliseconds(10))
    }
  }

  static func bytes(_ message: some SwiftProtobuf.Message) throws -> [UInt8] {
    var options = BinaryEncodingOptions()
    options.useDeterministicOrdering = true
    return try message.serializedBytes(options: options)
  }

  static func call(
    _ operation: Operation, _ client: GRPCClient<TestClientTransport>, paymentID: String, token: String,
    key: String
  ) async -> Answer {
    let metadata = PaymentsTests.metadata(token, key: key)
    @Sendable func replayed(_ metadata: Metadata) -> Bool {
      metadata[stringValues: "idempotent-replayed"].contains("true")
    }
    @Sendable func status(_ payment: Tender_Payments_V1_Payment) -> String {
      payment.status == .processing ? "processing" : "\(payment.status)"
    }
    do {
      switch operation {
      case .createPayment:
        return try await Payments(wrapping: client).createPayment(
          PaymentsTests.request(1000, capture: .manual), metadata: metadata
        ) { response in
          let message = try response.message
          return .message(
            bytes: try Self.bytes(message), replayed: replayed(response.metadata), status: status(message.payment))
        }
      case .capturePayment:
        return try await Payments(wrapping: client).capturePayment(
          .with {
            $0.paymentID = paymentID
            $0.amountMinor = 700
          }, metadata: metadata
        ) { response in
          let message = try response.message
          return .message(
            bytes: try Self.bytes(message), replayed: replayed(response.metadata), status: status(message.payment))
        }
      case .cancelPayment:
        return try await Payments(wrapping: client).cancelPayment(
          .with { $0.paymentID = paymentID }, metadata: metadata
        ) { response in
          let message = try response.message
          return .message(
            bytes: try Self.bytes(message), replayed: replayed(response.metadata), status: status(message.payment))
        }
      case .createRefund:
        return try await Refunds(wrapping: client).createRefund(
          .with {
            $0.paymentID = paymentID
            $0.amountMinor = 600
          }, metadata: metadata
        ) { response in
          let message = try response.message
          return .message(
            bytes: try Self.bytes(message), replayed: replayed(response.metadata),
            status: message.refund.status == .pending ? "pending" : "\(message.refund.status)")
        }
      }
    } catch let error as RPCError {
      return .failure(error)
    } catch {
      return .failure(RPCError(code: .unknown, message: "\(error)"))
    }
  }

  @Test(
    "Accepted then dropped, then refused for longer than the lock, then back: however the client retries, the provider acted once, Tender agrees with it, the answer replays byte for byte",
    arguments: Operation.allCases
  )
  func dropThenOutage(_ operation: Operation) async throws {
    try await TestServer.with(rpc: .tls) { server in
      let token = try await server.token(scopes: RefundsTests.scopes)
      try await server.withClient { grpc in
        let payments = Payments(wrapping: grpc)
        // The payment the operation works on (none for CreatePayment).
        var paymentID = ""
        if operation != .createPayment {
          let capture: Tender_Payments_V1_CaptureMethod = operation == .createRefund ? .automatic : .manual
          let created = await PaymentsTests.create(
            payments, PaymentsTests.request(1000, capture: capture),
            metadata: PaymentsTests.metadata(token, key: "setup"))
          paymentID = try #require(created.payment, "\(String(describing: created.error))").paymentID
        }

        // The provider does the work, the answer is lost, and it is down until the test ends the
        // outage — longer than the lock.
        await server.simulator.inject(.acceptThenDrop(operation.fault, thenRefuseSeconds: 3600))
        var answers: [Answer] = [await Self.call(operation, grpc, paymentID: paymentID, token: token, key: "op")]
        #expect(answers[0].isOpen, "the first call cannot know the outcome: \(answers[0])")

        if operation == .createRefund {
          // The unsettled refund keeps its 600 reserved: of the 1000 captured, 400 are left.
          let more = await RefundsTests.refund(Refunds(wrapping: grpc), paymentID, 401, token: token, key: "other")
          #expect(
            more.error?.code == .failedPrecondition && more.error?.reason == "REFUND_EXCEEDS_CAPTURED",
            "\(String(describing: more.error))")
        }

        // The lock runs out while the provider is still down (moved into the past rather than
        // waited for): a retry takes the key over and finds the provider down; it cannot know the
        // outcome either.
        answers.append(await Self.call(operation, grpc, paymentID: paymentID, token: token, key: "op"))
        try await server.expireLock(key: "op")
        answers.append(await Self.call(operation, grpc, paymentID: paymentID, token: token, key: "op"))
        #expect(
          try await RefundsTests.rows(
            server, "SELECT owner_token FROM idempotency_keys WHERE idempotency_key = 'op'", as: Int64.self) == [2],
          "the retry after the lock ran out took the key over")
        // The provider is back, and the retry's lock runs out too: the next retry takes the key
        // over again; the client retries with the same key until it gets a final answer.
        await server.simulator.acceptConnections()
        try await server.expireLock(key: "op")
        let deadline = ContinuousClock.now + .seconds(40)
        while answers.last!.isOpen, ContinuousClock.now < deadline {
          try await Task.sleep(for: .milliseconds(300))
          answers.append(await Self.call(operation, grpc, paymentID: paymentID, token: token, key: "op"))
        }
        let final = answers.last!
        guard case .message(let bytes, _, let status) = final else {
          Issue.record("no final answer: \(final) after \(answers.count) calls")
          return
        }
        // Nothing on the way claimed a failure the provider never had.
        for answer in answers {
          if case .failure(let error) = answer {
            #expect(answer.isOpen, "a retry was answered \(error.code) \(error.reason ?? "")")
          }
        }
        let again = await Self.call(operation, grpc, paymentID: paymentID, token: token, key: "op")
        guard case .message(let replayedBytes, let replayed, _) = again else {
          Issue.record("the replay failed: \(again)")
          return
        }
        #expect(replayed && replayedBytes == bytes, "replayed byte for byte")

        // Exactly once at the provider, and Tender agrees with it.
        let requests = await server.simulator.requests()
        let performed = requests.filter { $0.outcome == operation.performed }.count
        #expect(performed == 1, "\(requests.map { "\($0.path) \($0.outcome)" })")
        let tenderPaymentID =
          operation == .createPayment
          ? try await RefundsTests.rows(server, "SELECT payment_id FROM payments", as: String.self).first ?? ""
          : paymentID
        let intent = try #require(await server.simulator.intent(tenderPaymentID: tenderPaymentID))
        let payment = try await payments.getPayment(
          .with { $0.paymentID = tenderPaymentID }, metadata: TestServer.bearer(token)
        ).payment
        switch operation {
        case .createPayment:
          #expect(
            status == "requiresCapture" && intent.status == "requires_capture" && payment.status == .requiresCapture)
        case .capturePayment:
          #expect(intent.status == "succeeded" && intent.amountReceived == 700)
          #expect(payment.status == .succeeded && payment.amountCapturedMinor == 700)
        case .cancelPayment:
          #expect(intent.status == "canceled" && payment.status == .canceled)
        case .createRefund:
          #expect(status == "succeeded" && intent.refunded == 600 && payment.amountRefundedMinor == 600)
        }
        let keys = try await RefundsTests.rows(
          server, "SELECT recovery_point FROM idempotency_keys WHERE idempotency_key = 'op'", as: String.self)
        #expect(keys == ["finished"])
      }
    }
  }

  @Test("429 with Retry-After, then success: the payment succeeds, nothing is stored or recorded as failed")
  func rateLimitedByTheProvider() async throws {
    // Retry-After: 1 fits this server's backoff ceiling (2 s; the lock outlasts 2 × 1 s + 2 s).
    try await TestServer.with(tune: {
      $0.providerMaxBackoff = .seconds(2)
      $0.idempotencyLock = .seconds(5)
    }) { server in
      let token = try await server.token(scopes: RefundsTests.scopes)
      await server.simulator.inject(.answer(429, retryAfterSeconds: 1, .createPayment))
      try await server.withClient { grpc in
        let first = await Self.call(.createPayment, grpc, paymentID: "", token: token, key: "rl")
        guard case .message(let bytes, false, "requiresCapture") = first else {
          Issue.record("expected an authorized payment, got \(first)")
          return
        }
        let again = await Self.call(.createPayment, grpc, paymentID: "", token: token, key: "rl")
        guard case .message(let replayedBytes, true, _) = again else {
          Issue.record("expected a replay, got \(again)")
          return
        }
        #expect(replayedBytes == bytes)
      }
      #expect(await server.simulator.requests().map(\.outcome) == ["fault", "created"])
      #expect(
        try await RefundsTests.rows(server, "SELECT outcome FROM provider_requests", as: String.self) == ["succeeded"])
      #expect(
        try await RefundsTests.rows(server, "SELECT status FROM payments", as: String.self) == ["requires_capture"])
    }
  }

  @Test(
    "A stale owner and the completer racing on one key: the provider answers the first owner after its lock was taken over; one stored answer, one applied outcome, a provider_requests row per provider call"
  )
  func staleOwnerRacesTheCompleter() async throws {
    // One attempt per call, with a timeout longer than the test, so the first owner really waits
    // for the stalled answer; no webhooks, so only the two owners can settle the payment.
    try await TestServer.with(
      webhooks: false,
      tune: {
        $0.providerTimeout = .seconds(120)
        $0.providerAttempts = 1
        $0.idempotencyLock = .seconds(8)
      }
    ) { server in
      let token = try await server.token(scopes: RefundsTests.scopes)
      // Held until released below, however long the steps in between take.
      await server.simulator.inject(.stall(seconds: 120, .createPayment))
      try await server.withClient { grpc in
        async let first = Self.call(.createPayment, grpc, paymentID: "", token: token, key: "race")
        try await Self.untilStalled(server.simulator)
        // While the first owner waits on the provider, its lock runs out (forced here, as after a
        // pause that kept its heartbeat from the database) and the completer takes the key over.
        try await server.completeAfterLockExpiry(key: "race", until: "owner_token > 1")
        await server.simulator.releaseStalls()
        let stale = await first
        // The first owner's answer arrived after it lost the key: it wrote nothing, and says so —
        // IN_USE while the completer still works on the key, or the completer's stored answer
        // when the completer finished first (a loaded machine can order them either way).
        switch stale {
        case .failure(let error) where error.code == .aborted && error.reason == "IDEMPOTENCY_KEY_IN_USE": break
        case .message(_, true, "requiresCapture"): break
        default:
          Issue.record("the stale owner answered \(stale)")
          return
        }
        // The completer's ask met the first one still running at the provider (409); the next
        // round, once its lock is gone, gets the provider's answer and finishes the key.
        try await server.completeAfterLockExpiry(key: "race", until: "recovery_point = 'finished'")
        let final = await Self.call(.createPayment, grpc, paymentID: "", token: token, key: "race")
        guard case .message(let bytes, true, "requiresCapture") = final else {
          Issue.record("expected the stored answer, got \(final)")
          return
        }
        let again = await Self.call(.createPayment, grpc, paymentID: "", token: token, key: "race")
        guard case .message(let replayedBytes, true, _) = again else {
          Issue.record("expected a replay, got \(again)")
          return
        }
        #expect(replayedBytes == bytes)
      }
      let requests = await server.simulator.requests().filter { $0.path == "/v1/payment_intents" }
      let charges = requests.filter { $0.outcome == "created" }.count
      #expect(charges == 1, "\(requests.map { "\($0.outcome) \($0.idempotencyKey ?? "") \($0.fault ?? "")" })")
      // One row per call Tender made (each call is one HTTP request here); one of them succeeded.
      let outcomes = try await RefundsTests.rows(
        server, "SELECT outcome FROM provider_requests ORDER BY request_id", as: String.self)
      #expect(outcomes.count == requests.count, "\(outcomes) for \(requests.map(\.outcome))")
      #expect(outcomes.filter { $0 == "succeeded" }.count == 1)
      #expect(
        try await RefundsTests.rows(server, "SELECT type FROM payment_events ORDER BY event_id", as: String.self) == [
          "payment_created", "payment_requires_capture",
        ])
    }
  }

  @Test(
    "The heartbeat keeps a provider call's lock alive past the lock's length: retries meanwhile are told IN_USE, the completer does not take over, one answer is stored"
  )
  func heartbeatHoldsTheLock() async throws {
    // A 3 s lock and a provider call that may take two minutes (the configuration would refuse
    // this pair; the heartbeat alone must hold the key).
    try await TestServer.with(tune: {
      $0.providerTimeout = .seconds(120)
      $0.providerAttempts = 1
      $0.idempotencyLock = .seconds(3)
    }) { server in
      let token = try await server.token(scopes: RefundsTests.scopes)
      // The provider holds the call until it is released below.
      await server.simulator.inject(.stall(seconds: 120, .createPayment))
      try await server.withClient { grpc in
        async let first = Self.call(.createPayment, grpc, paymentID: "", token: token, key: "beat")
        try await Self.untilStalled(server.simulator)
        // Past the lock's length, while the provider still works on the call: only the heartbeat
        // can have kept the lock.
        try await Task.sleep(for: .seconds(4))
        // A completer round meanwhile finds nothing to take over.
        #expect(try await server.completeRound() == 0)
        let meanwhile = await Self.call(.createPayment, grpc, paymentID: "", token: token, key: "beat")
        guard case .failure(let error) = meanwhile, error.reason == "IDEMPOTENCY_KEY_IN_USE" else {
          Issue.record("a retry during the call got \(meanwhile)")
          return
        }
        #expect(
          try await RefundsTests.rows(
            server, "SELECT owner_token FROM idempotency_keys WHERE idempotency_key = 'beat'", as: Int64.self) == [1])
        await server.simulator.releaseStalls()
        guard case .message(let bytes, false, "requiresCapture") = await first else {
          Issue.record("the first call did not answer the payment")
          return
        }
        let replay = await Self.call(.createPayment, grpc, paymentID: "", token: token, key: "beat")
        guard case .message(let replayed, true, _) = replay else {
          Issue.record("expected a replay, got \(replay)")
          return
        }
        #expect(replayed == bytes)
      }
      #expect(await server.simulator.requests().map(\.outcome) == ["created"])
      #expect(
        try await RefundsTests.rows(server, "SELECT outcome FROM provider_requests", as: String.self) == ["succeeded"])
    }
  }
}
