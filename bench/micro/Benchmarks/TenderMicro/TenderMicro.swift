import Benchmark
import Crypto
import Foundation
import GRPCCore
import GRPCInProcessTransport
import Logging
import SwiftProtobuf
import TenderAPI
import TenderAuth
import TenderBridge
import TenderCore
import TenderDevSupport
import TenderRPC
import TenderRedis
import TenderTesting
import Synchronization

// Each benchmark measures one hot path of a payment call, in wall-clock time and allocations
// (mallocs) per operation. Fast paths run their body a thousand times a sample (`.kilo`) and
// report per operation, in nanoseconds; whole calls and round trips take one sample each, in
// microseconds. (CPU time is left out: /proc counts it in 10 ms ticks.)

let benchmarks: @Sendable () -> Void = {
  Benchmark.defaultConfiguration = .init(
    metrics: [.wallClock, .mallocCountTotal, .throughput],
    timeUnits: .nanoseconds,
    warmupIterations: 10,
    scalingFactor: .kilo,
    maxDuration: .seconds(3),
    maxIterations: 1_000
  )

  wire()
  idempotency()
  stateMachine()
  webhookSignatures()
  accessTokens()
  redisRoundTrips()
  deadlines()
  inProcessCalls()
}

// MARK: Deadlines: a sleep armed and cancelled, a database call bounded

func deadlines() {
  Benchmark("Deadline: work raced against a 30 s sleep, which is then cancelled (as every RPC's deadline)") {
    benchmark in
    for _ in benchmark.scaledIterations {
      let answer = await withTaskGroup(of: Int?.self) { group in
        group.addTask {
          try? await Sleep.for(.seconds(30))
          return nil
        }
        group.addTask { 42 }
        let first = await group.next() ?? nil
        group.cancelAll()
        return first
      }
      blackHole(answer)
    }
  }
  Benchmark("Bounded.run: work that answers at once, within 5 s (as every database call)") { benchmark in
    for _ in benchmark.scaledIterations {
      blackHole(try await Bounded.run(within: .seconds(5)) { 42 })
    }
  }
}

// MARK: Requests on the wire

/// A CreatePayment request as a client sends it.
func createPaymentRequest() -> Tender_Payments_V1_CreatePaymentRequest {
  .with {
    $0.amount = .with { money in
      money.amountMinor = 1999
      money.currency = "EUR"
    }
    $0.captureMethod = .automatic
    $0.paymentMethodToken = "pm_card_visa"
    $0.description_p = "Order 2024-0042: two tickets"
    $0.customerReference = "customer-8812"
    $0.metadata = ["order_id": "2024-0042", "channel": "web"]
  }
}

/// A payment as every payment RPC answers with it.
func paymentMessage() -> Tender_Payments_V1_Payment {
  .with {
    $0.paymentID = "pay_4Z1c7mQpXk2vN8sR0tYbLw"
    $0.merchantID = "mer_bench"
    $0.status = .succeeded
    $0.amount = .with { money in
      money.amountMinor = 1999
      money.currency = "EUR"
    }
    $0.amountCapturedMinor = 1999
    $0.captureMethod = .automatic
    $0.paymentMethodToken = "pm_card_visa"
    $0.providerPaymentID = "pi_3QxY2Z"
    $0.description_p = "Order 2024-0042: two tickets"
    $0.customerReference = "customer-8812"
    $0.metadata = ["order_id": "2024-0042", "channel": "web"]
    $0.createTime = Google_Protobuf_Timestamp(date: Date(timeIntervalSince1970: 1_765_000_000))
    $0.updateTime = $0.createTime
  }
}

func wire() {
  let request: [UInt8] = try! createPaymentRequest().serializedBytes()
  Benchmark("CreatePaymentRequest decode") { benchmark in
    for _ in benchmark.scaledIterations {
      blackHole(try Tender_Payments_V1_CreatePaymentRequest(serializedBytes: request))
    }
  }
  let response = Tender_Payments_V1_CreatePaymentResponse.with { $0.payment = paymentMessage() }
  Benchmark("CreatePaymentResponse encode") { benchmark in
    for _ in benchmark.scaledIterations {
      blackHole(try response.serializedBytes() as [UInt8])
    }
  }
}

// MARK: Idempotency

func idempotency() {
  let request = createPaymentRequest()
  let method = Tender_Payments_V1_PaymentService.Method.CreatePayment.descriptor.fullyQualifiedMethod
  Benchmark("Idempotency fingerprint (CreatePayment)") { benchmark in
    for _ in benchmark.scaledIterations {
      blackHole(try IdempotencyKeys.fingerprint(method: method, message: request))
    }
  }
}

// MARK: The payment state machine

func stateMachine() {
  let amount = try! Money.validated(minorUnits: 10_000, currencyCode: "EUR", field: "amount")
  Benchmark("Payment state machine: authorize, capture, two refunds") { benchmark in
    for _ in benchmark.scaledIterations {
      var ledger = PaymentLedger(amount: amount, captureMethod: .manual)
      try ledger.providerAuthorized()
      blackHole(try ledger.capture(nil))
      blackHole(try ledger.reserveRefund(minorUnits: 2_500))
      blackHole(try ledger.reserveRefund(minorUnits: nil))
      blackHole(ledger)
    }
  }
}

// MARK: Webhook signatures

func webhookSignatures() {
  let body = Array(
    #"{"id":"evt_1QxY2Z","type":"payment_intent.succeeded","created":1765000000,"data":{"object":{"id":"pi_3QxY2Z","object":"payment_intent","amount":1999,"currency":"eur","status":"succeeded","metadata":{"tender_payment_id":"pay_4Z1c7mQpXk2vN8sR0tYbLw"}}}}"#
      .utf8)
  let secret = WebhookSecret.stripe("whsec_benchmark_0123456789abcdef")
  let now = Date()
  let header = WebhookSignatures.stripeHeader(body: body, secret: secret, timestamp: Int64(now.timeIntervalSince1970))
  Benchmark("Webhook signature: Stripe, verified") { benchmark in
    for _ in benchmark.scaledIterations {
      let verified = WebhookSignatures.verifyStripe(
        header: header, body: body, secrets: [secret], tolerance: .seconds(300), now: now)
      guard case .success = verified else { fatalError("a genuine signature was refused: \(verified)") }
      blackHole(verified)
    }
  }
  let standardSecret = WebhookSecret.standard(
    "whsec_" + Data("benchmark-secret-0123456789".utf8).base64EncodedString())!
  let id = "msg_2QxY2Z"
  let timestamp = Int64(now.timeIntervalSince1970)
  let signature = WebhookSignatures.standardSignature(id: id, timestamp: timestamp, body: body, secret: standardSecret)
  Benchmark("Webhook signature: Standard Webhooks, verified") { benchmark in
    for _ in benchmark.scaledIterations {
      let verified = WebhookSignatures.verifyStandard(
        id: id, timestamp: String(timestamp), signatureHeader: signature, body: body, secrets: [standardSecret],
        tolerance: .seconds(300), now: now)
      guard case .success = verified else { fatalError("a genuine signature was refused: \(verified)") }
      blackHole(verified)
    }
  }
}

// MARK: Access tokens

/// Something a benchmark's setup starts and its teardown stops (the teardown hook sees no setup
/// result, so the fixture keeps it).
final class Fixture<Value: Sendable>: Sendable {
  private let value = Mutex<Value?>(nil)
  private let start: @Sendable () async throws -> Value
  private let stop: @Sendable (Value) async throws -> Void

  init(start: @escaping @Sendable () async throws -> Value, stop: @escaping @Sendable (Value) async throws -> Void) {
    self.start = start
    self.stop = stop
  }

  func setUp() async throws -> Value {
    let value = try await self.start()
    self.value.withLock { $0 = value }
    return value
  }

  func tearDown() async throws {
    if let value = self.value.withLock({ $0.take() }) { try await self.stop(value) }
  }
}

/// Tokens of one client and the authority that issued them, on in-memory ports; `next()` hands
/// out each token once.
final class IssuedTokens: Sendable {
  let authority: TokenAuthority
  let tokens: [String]
  private let used = Mutex(0)

  init(count: Int) async throws {
    let logger = Logger(label: "tender.bench")
    let database = InMemoryDatabase()
    let store = InMemoryAuthStore(database: database)
    let keys = KeyRing(
      store: store, encryptionKey: KeyEncryptionKey(key: SymmetricKey(size: .bits256)), tokenLifetime: .seconds(900),
      leeway: .seconds(30), refreshInterval: .seconds(60), logger: logger)
    try await keys.prepare()
    let hasher = ClientSecretHasher(parameters: TestServer.secretHashing)
    self.authority = TokenAuthority(
      settings: TokenSettings(issuer: "tender-bench", audience: "tender-bench"), keys: keys, store: store, cache: nil,
      hasher: hasher, logger: logger)
    try await store.ensureMerchant(id: "mer_bench", displayName: "Benchmark")
    let (client, secret) = try await ClientRegistry(store: store, hasher: hasher, cache: nil)
      .create(merchantID: "mer_bench", scopes: ["payments:read", "payments:write"], displayName: "bench")
    var issued: [String] = []
    for _ in 0..<count {
      issued.append(
        try await self.authority.issue(clientID: client.clientID, secret: secret, requestedScopes: []).token.value)
    }
    self.tokens = issued
  }

  /// A token this authority has not verified yet.
  func next() -> String {
    let index = self.used.withLock { used in
      defer { used += 1 }
      return used
    }
    precondition(index < self.tokens.count, "more samples than tokens issued")
    return self.tokens[index]
  }
}

func accessTokens() {
  // Cold: each sample verifies a token the authority has never seen, so its signature (Ed25519)
  // and claims are checked; warm-up and measured samples each take their own.
  Benchmark(
    "JWT verification, cold (signature and claims)",
    configuration: .init(timeUnits: .microseconds, scalingFactor: .one, maxIterations: 2_000)
  ) { benchmark, tokens in
    let token = tokens.next()
    benchmark.startMeasurement()
    blackHole(try? await tokens.authority.verify(token))
    benchmark.stopMeasurement()
  } setup: {
    try await IssuedTokens(count: 2_100)
  }
  Benchmark("JWT verification, cached") { benchmark, tokens in
    let token = tokens.tokens[0]
    _ = try? await tokens.authority.verify(token)
    benchmark.startMeasurement()
    for _ in benchmark.scaledIterations {
      blackHole(try? await tokens.authority.verify(token))
    }
    benchmark.stopMeasurement()
  } setup: {
    try await IssuedTokens(count: 1)
  }
}

// MARK: Redis: the token standing and the rate-limit bucket

func redisRoundTrips() {
  let redis = Fixture<(LocalRedis, RedisClient)>(
    start: {
      // The tests' throwaway server: its own folder and port, stopped at exit at the latest.
      let server = try await TestRedis.privateServer()
      let client = RedisClient(
        configuration: try RedisConfiguration(url: server.url), logger: Logger(label: "tender.bench.redis"))
      return (server, client)
    },
    stop: { server, _ in server.destroy() }
  )
  let policy = RateLimitPolicy(capacity: 1_000_000_000, refillPerSecond: 1_000_000)
  Benchmark(
    "Redis: token standing, then rate-limit bucket (two round trips)",
    configuration: .init(timeUnits: .microseconds, scalingFactor: .one, maxIterations: 20_000)
  ) { (benchmark: Benchmark, backend: (RedisTokenStandingCache, TokenBucketLimiter)) in
    let (standing, limiter) = backend
    for _ in benchmark.scaledIterations {
      let cached = try? await standing.standing(clientID: "cli_bench", tokenID: "tok_bench")
      precondition(cached != nil, "the standing was just remembered")
      let decision = try? await limiter.acquire(key: "client:cli_bench", policy: policy, cost: 1)
      precondition(decision != nil, "Redis answered")
      blackHole(decision)
    }
  } setup: {
    let (_, client) = try await redis.setUp()
    let standing = RedisTokenStandingCache(client: client)
    try await standing.remember(
      TokenStanding(clientStatus: .active, revoked: false), clientID: "cli_bench", tokenID: "tok_bench",
      for: .seconds(600))
    return (standing, TokenBucketLimiter(client: client))
  } teardown: {
    try await redis.tearDown()
  }
  Benchmark(
    "Redis: token standing and rate-limit bucket in one script (one round trip, as every authenticated call)",
    configuration: .init(timeUnits: .microseconds, scalingFactor: .one, maxIterations: 20_000)
  ) { (benchmark: Benchmark, admission: RedisCallAdmission) in
    for _ in benchmark.scaledIterations {
      let admitted = await admission.admit(
        clientID: "cli_bench", tokenID: "tok_bench", bucket: "client:cli_bench", policy: policy, cost: 1)
      precondition(admitted.standing != nil && (try? admitted.decision.get()) != nil, "Redis answered both")
      blackHole(admitted)
    }
  } setup: {
    let (_, client) = try await redis.setUp()
    let standing = RedisTokenStandingCache(client: client)
    try await standing.remember(
      TokenStanding(clientStatus: .active, revoked: false), clientID: "cli_bench", tokenID: "tok_bench",
      for: .seconds(600))
    return RedisCallAdmission(standings: standing, limiter: TokenBucketLimiter(client: client))
  } teardown: {
    try await redis.tearDown()
  }
}

// MARK: Whole calls over the in-process transport

/// An in-process Tender (the interceptor chain and the services of `tender serve`, on in-memory
/// ports) and a client of it, kept running from a benchmark's setup to its teardown.
final class RunningInProcess: Sendable {
  typealias Payments = Tender_Payments_V1_PaymentService.Client<InProcessTransport.Client>
  let payments: Payments
  let token: String
  private let stop: AsyncStream<Void>.Continuation
  private let task: Task<Void, any Error>

  private init(payments: Payments, token: String, stop: AsyncStream<Void>.Continuation, task: Task<Void, any Error>) {
    self.payments = payments
    self.token = token
    self.stop = stop
    self.task = task
  }

  static func start() async throws -> RunningInProcess {
    let (stopped, stop) = AsyncStream.makeStream(of: Void.self)
    let (ready, announce) = AsyncStream.makeStream(of: (Payments, String).self)
    let task = Task {
      defer { announce.finish() }
      try await InProcessServer.with(configure: { flags in
        // The limiter still runs on every call; only its limit is out of the way.
        flags[.rateLimit] = "1000000/s,burst=1000000"
      }) { server in
        let token = try await server.token(scopes: ["payments:read", "payments:write"])
        try await server.withClient { grpc in
          announce.yield((Payments(wrapping: grpc), token))
          for await _ in stopped {}
        }
      }
    }
    for await (payments, token) in ready {
      return RunningInProcess(payments: payments, token: token, stop: stop, task: task)
    }
    try await task.value
    throw CancellationError()
  }

  func shutDown() async throws {
    self.stop.finish()
    try await self.task.value
  }

  func metadata(key: String? = nil) -> Metadata {
    var metadata: Metadata = ["authorization": "Bearer \(self.token)"]
    if let key { metadata.addString(key, forKey: IdempotencyKeys.metadataKey) }
    return metadata
  }
}

func inProcessCalls() {
  let calls = Benchmark.Configuration(timeUnits: .microseconds, scalingFactor: .one, maxIterations: 20_000)
  let creating = Fixture<RunningInProcess>(
    start: { try await RunningInProcess.start() }, stop: { try await $0.shutDown() })
  Benchmark(
    "In-process CreatePayment (decode, interceptors, validation, in-memory stores and provider, encode)",
    configuration: calls
  ) { benchmark, server in
    let request = createPaymentRequest()
    let metadata = server.metadata(key: UUID().uuidString)
    benchmark.startMeasurement()
    for _ in benchmark.scaledIterations {
      let response = try await server.payments.createPayment(request, metadata: metadata)
      precondition(response.payment.status == .succeeded, "the in-memory provider accepts pm_card_visa")
      blackHole(response)
    }
    benchmark.stopMeasurement()
  } setup: {
    try await creating.setUp()
  } teardown: {
    try await creating.tearDown()
  }

  let reading = Fixture<(RunningInProcess, String)>(
    start: {
      let server = try await RunningInProcess.start()
      let created = try await server.payments.createPayment(
        createPaymentRequest(), metadata: server.metadata(key: UUID().uuidString))
      return (server, created.payment.paymentID)
    },
    stop: { server, _ in try await server.shutDown() }
  )
  Benchmark("In-process GetPayment (decode, interceptors, in-memory store, encode)", configuration: calls) {
    benchmark, state in
    let (server, id) = state
    let request = Tender_Payments_V1_GetPaymentRequest.with { $0.paymentID = id }
    let metadata = server.metadata()
    for _ in benchmark.scaledIterations {
      blackHole(try await server.payments.getPayment(request, metadata: metadata))
    }
  } setup: {
    try await reading.setUp()
  } teardown: {
    try await reading.tearDown()
  }
}
