import Crypto
import Foundation
import Logging
import PostgresNIO
import TenderCore
import TenderOperations
import TenderPostgres
import TenderProviderSim
import TenderProviders
import TenderDevSupport
import TenderTesting
import Testing

/// Random interleavings of client retries, crashes at every step of the runner, provider faults
/// and completer rounds, over the real stores on PostgreSQL and the real connector talking to the
/// simulator; after every step the exactly-once invariants are checked, and once everything has
/// been finished Tender and the provider must agree exactly. Seeded and reproducible: a failure
/// names its seed and step.
@Suite("Exactly once, model-based: retries, crashes, provider faults and the completer in random order")
struct ExactlyOnceModelTests {
  /// Seeds run on PostgreSQL, one after the other (each has its own database).
  static let postgresSeeds: [UInt64] = Array(1...8)
  /// Seeds run on the in-memory stores, all at once: the same runner, operations, connector and
  /// simulator, with stores that keep PostgreSQL's semantics in memory.
  static let memorySeeds: [UInt64] = Array(1...64)
  static let steps = 40

  /// SplitMix64: small, fast, and the same sequence for a seed everywhere.
  struct Random {
    var state: UInt64
    mutating func next() -> UInt64 {
      self.state &+= 0x9E37_79B9_7F4A_7C15
      var z = self.state
      z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
      z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
      return z ^ (z >> 31)
    }
    mutating func below(_ n: Int) -> Int { Int(self.next() % UInt64(n)) }
    mutating func chance(_ percent: Int) -> Bool { self.below(100) < percent }
    mutating func pick<T>(_ items: [T]) -> T { items[self.below(items.count)] }
  }

  static let merchant = MerchantID("mer_model")!
  /// P0 and P2 are authorized for capture, P1 captured at once, P3 declined.
  static let payments = 4
  static let crashPoints: [ProviderCall.Operation: [String]] = [
    .createPayment: [
      "create_payment.claimed", "create_payment.payment_created", "create_payment.call_recorded",
      "create_payment.provider_answered", "create_payment.failed_for_sure",
    ],
    .capturePayment: [
      "capture_payment.claimed", "capture_payment.call_recorded", "capture_payment.provider_answered",
      "capture_payment.failed_for_sure",
    ],
    .cancelPayment: [
      "cancel_payment.claimed", "cancel_payment.call_recorded", "cancel_payment.provider_answered",
      "cancel_payment.failed_for_sure",
    ],
    .createRefund: [
      "create_refund.refund_created", "create_refund.call_recorded", "create_refund.provider_answered",
      "create_refund.failed_for_sure",
    ],
  ]

  enum Step: CustomStringConvertible {
    case create(Int)
    case capture(Int)
    case cancel(Int)
    case refund(Int, Int)

    var key: String {
      switch self {
      case .create(let i): return "p\(i)"
      case .capture(let i): return "c\(i)"
      case .cancel(let i): return "x\(i)"
      case .refund(let i, let k): return "r\(i)-\(k)"
      }
    }

    var operation: ProviderCall.Operation {
      switch self {
      case .create: return .createPayment
      case .capture: return .capturePayment
      case .cancel: return .cancelPayment
      case .refund: return .createRefund
      }
    }

    var description: String { self.key }
  }

  /// Test encodings of the stored answers, readable back for the invariants.
  static let answers = PaymentAnswers(
    created: { record in
      Self.encode([
        "payment", record.id.rawValue, record.ledger.status.rawValue, String(record.ledger.capturedMinorUnits),
      ])
    },
    changed: { _, record in
      Self.encode([
        "payment", record.id.rawValue, record.ledger.status.rawValue, String(record.ledger.capturedMinorUnits),
      ])
    },
    refusal: { error in Self.encode(["refusal", error.reason]) },
    providerRefused: { _, code in Self.encode(["refused", code]) }
  )

  static func encode(_ fields: [String]) -> StoredResponse {
    StoredResponse(
      code: fields[0] == "payment" || fields[0] == "refund" ? 0 : 9, message: Array(fields.joined(separator: "|").utf8),
      details: [])
  }

  static func fingerprint(_ text: String) -> [UInt8] {
    Array(SHA256.hash(data: Array(text.utf8)))
  }

  /// What the invariants read of Tender's state, from PostgreSQL or from the in-memory stores.
  protocol Books: Sendable {
    /// The Tender payment of the key, once the key names one.
    func paymentID(key: String) async throws -> PaymentID?
    /// (payment id, status, captured, refunded, provider payment id or "").
    func payments() async throws -> [(String, String, Int64, Int64, String)]
    /// (refund id, payment id, status, amount, provider refund id or "").
    func refunds() async throws -> [(String, String, String, Int64, String)]
    /// (method, stored answer as text) of every finished key.
    func finished() async throws -> [(String, String)]
    func unfinishedKeys() async throws -> Int
    /// Every lock runs out, as if its owner had stalled past it.
    func expireLocks() async throws
  }

  struct PostgresBooks: Books {
    let client: PostgresClient

    func rows<Row: PostgresDecodable & Sendable>(_ sql: String, as: Row.Type) async throws -> [Row] {
      try await self.client.query(PostgresQuery(unsafeSQL: sql)).decode(Row.self).reduce(into: [Row]()) {
        $0.append($1)
      }
    }

    func paymentID(key: String) async throws -> PaymentID? {
      try await self.rows(
        "SELECT payment_id FROM idempotency_keys WHERE idempotency_key = '\(key)' AND payment_id IS NOT NULL",
        as: String.self
      )
      .first.map(PaymentID.init(unchecked:))
    }

    func payments() async throws -> [(String, String, Int64, Int64, String)] {
      var payments: [(String, String, Int64, Int64, String)] = []
      for try await row in try await self.client.query(
        "SELECT payment_id, status, captured_minor, refunded_minor, coalesce(provider_payment_id, '') FROM payments"
      ).decode(
        (String, String, Int64, Int64, String).self
      ) {
        payments.append(row)
      }
      return payments
    }

    func refunds() async throws -> [(String, String, String, Int64, String)] {
      var refunds: [(String, String, String, Int64, String)] = []
      for try await row in try await self.client.query(
        "SELECT refund_id, payment_id, status, amount_minor, coalesce(provider_refund_id, '') FROM refunds"
      ).decode(
        (String, String, String, Int64, String).self
      ) {
        refunds.append(row)
      }
      return refunds
    }

    func finished() async throws -> [(String, String)] {
      var finished: [(String, String)] = []
      for try await row in try await self.client.query(
        "SELECT method, convert_from(response_message, 'UTF8') FROM idempotency_keys WHERE recovery_point = 'finished'"
      ).decode((String, String).self) {
        finished.append(row)
      }
      return finished
    }

    func unfinishedKeys() async throws -> Int {
      Int(
        try await self.rows(
          "SELECT count(*)::bigint FROM idempotency_keys WHERE recovery_point <> 'finished'", as: Int64.self
        ).first ?? 0)
    }

    func expireLocks() async throws {
      _ = try await self.rows(
        "UPDATE idempotency_keys SET locked_until = now() - interval '1 second' WHERE recovery_point <> 'finished' RETURNING 1",
        as: Int32.self
      )
    }
  }

  struct MemoryBooks: Books {
    let database: InMemoryDatabase

    func paymentID(key: String) async throws -> PaymentID? {
      await self.database.idempotencyRecord(merchant: ExactlyOnceModelTests.merchant, key: key)?.paymentID
    }

    func payments() async throws -> [(String, String, Int64, Int64, String)] {
      await self.database.allPayments().map {
        (
          $0.id.rawValue, $0.ledger.status.rawValue, $0.ledger.capturedMinorUnits, $0.ledger.refundedMinorUnits,
          $0.providerPaymentID ?? ""
        )
      }
    }

    func refunds() async throws -> [(String, String, String, Int64, String)] {
      await self.database.allRefunds().map {
        ($0.id.rawValue, $0.paymentID.rawValue, $0.status.rawValue, $0.amount.minorUnits, $0.providerRefundID ?? "")
      }
    }

    func finished() async throws -> [(String, String)] {
      await self.database.idempotencyRecords().compactMap { record, answer in
        answer.map { (record.request.method, String(decoding: $0.message, as: UTF8.self)) }
      }
    }

    func unfinishedKeys() async throws -> Int {
      await self.database.idempotencyRecords().filter { $0.0.recoveryPoint != .finished }.count
    }

    func expireLocks() async throws {
      await self.database.expireLocks()
    }
  }

  struct World {
    let books: any Books
    let simulator: ProviderSimulator
    let connector: StripeConnector
    let runner: KeyedOperationRunner
    let payments: PaymentOperations
    let refunds: RefundOperations
    let settlement: Settlement

    /// The Tender payment of P`i`, while its key names one.
    func paymentID(_ i: Int) async throws -> PaymentID? {
      try await self.books.paymentID(key: "p\(i)")
    }

    func run(_ step: Step) async throws {
      let merchant = ExactlyOnceModelTests.merchant
      switch step {
      case .create(let i):
        let amount = Money(minorUnits: 1000 + Int64(i), currency: Currency(code: "EUR")!)
        let method = i == 3 ? "pm_card_chargeDeclined" : "pm_card_visa"
        let capture: CaptureMethod = i % 2 == 0 ? .manual : .automatic
        let now = PostgresTime.now()
        let draft = PaymentRecord(
          id: .random(), merchantID: merchant, ledger: PaymentLedger(amount: amount, captureMethod: capture),
          paymentMethod: method,
          customerReference: "", description: "", metadata: [:], providerPaymentID: nil, createTime: now,
          updateTime: now
        )
        let request = IdempotencyRequest(
          merchant: merchant, key: step.key, method: "create",
          fingerprint: ExactlyOnceModelTests.fingerprint("create \(i)"))
        _ = try await self.payments.create(draft, request: request)
      case .capture(let i), .cancel(let i):
        guard let id = try await self.paymentID(i) else { return }
        let isCapture: Bool
        if case .capture = step { isCapture = true } else { isCapture = false }
        let request = IdempotencyRequest(
          merchant: merchant, key: step.key, method: isCapture ? "capture" : "cancel",
          fingerprint: ExactlyOnceModelTests.fingerprint("\(step.key) \(id)"))
        _ = try await self.payments.change(id, isCapture ? .capture(600) : .cancel, request: request)
      case .refund(let i, let k):
        guard let id = try await self.paymentID(i) else { return }
        let draft = RefundDraft(
          id: .random(), merchantID: merchant, paymentID: id, amountMinorUnits: 150 + Int64(k) * 100, reason: nil,
          metadata: [:])
        let request = IdempotencyRequest(
          merchant: merchant, key: step.key, method: "refund",
          fingerprint: ExactlyOnceModelTests.fingerprint("\(step.key) \(id)"))
        _ = try await self.refunds.create(draft, request: request)
      }
    }

    /// The completer's round and the reconciler's, as the server runs them.
    func completerRound() async throws {
      _ = try await self.runner.takeOverStale(method: "create") { try await self.payments.resumeCreate($0) }
      _ = try await self.runner.takeOverStale(method: "capture") {
        try await self.payments.resumeChange($0, operation: .capturePayment)
      }
      _ = try await self.runner.takeOverStale(method: "cancel") {
        try await self.payments.resumeChange($0, operation: .cancelPayment)
      }
      _ = try await self.runner.takeOverStale(method: "refund") { try await self.refunds.resume($0) }
      _ = try await self.settlement.round()
    }

    func expireLocks() async throws {
      try await self.books.expireLocks()
    }
  }

  enum Storage: Sendable {
    case postgres
    case memory
  }

  /// The stores, runner and operations the server runs, with the real connector talking to a
  /// simulator of the world's own, on PostgreSQL (a new database) or on the in-memory stores.
  static func withWorld<T: Sendable>(_ storage: Storage, _ body: (World) async throws -> T) async throws -> T {
    var logger = Logger(label: "tender.test.model")
    logger.logLevel = .critical
    return try await ProviderSimulator.runInBackground(configuration: .init(slowDelay: .seconds(2)), logger: logger) {
      simulator, port in
      // One attempt per call, so a lost answer stays lost for the call (the model retries).
      let connector = StripeConnector(
        configuration: StripeConfiguration(
          baseURL: "http://127.0.0.1:\(port)", apiKey: Secret("sk_test_tender"), requestTimeout: .seconds(1),
          maximumAttempts: 1,
          initialBackoff: .milliseconds(10), maximumBackoff: .milliseconds(50)
        ),
        logger: logger
      )
      func world(
        books: any Books, payments paymentStore: any PaymentStore, calls: any ProviderCallLog,
        refunds refundStore: any RefundStore,
        idempotency: any IdempotencyStore, settlement: any SettlementStore, now: @escaping @Sendable () -> Date
      ) -> World {
        // Locks expire only when the model says so.
        let runner = KeyedOperationRunner(
          idempotency: idempotency, calls: calls, lock: .seconds(120), logger: logger)
        return World(
          books: books, simulator: simulator, connector: connector, runner: runner,
          payments: PaymentOperations(
            runner: runner, payments: paymentStore, provider: connector, answers: Self.answers, now: now, logger: logger
          ),
          refunds: RefundOperations(
            runner: runner, refunds: refundStore, payments: paymentStore, provider: connector,
            answer: { record in
              Self.encode(["refund", record.id.rawValue, record.status.rawValue, record.providerRefundID ?? ""])
            },
            refusal: { error in Self.encode(["refusal", error.reason]) },
            now: now, logger: logger
          ),
          settlement: Settlement(
            store: settlement, payments: paymentStore, refunds: refundStore, provider: connector,
            policy: .init(checkAfter: .milliseconds(1), giveUpAfter: .seconds(3600)), logger: logger
          )
        )
      }
      do {
        let result: T
        switch storage {
        case .postgres:
          let database = try await TestPostgres.makeDatabase()
          result = try await withPostgresClient(database) { client in
            try await client.query("INSERT INTO merchants (merchant_id, display_name) VALUES ('mer_model', 'Model')")
            let paymentStore = PostgresPaymentStore(client: client, logger: logger)
            return try await body(
              world(
                books: PostgresBooks(client: client), payments: paymentStore,
                calls: PostgresProviderCallLog(client: client, logger: logger),
                refunds: PostgresRefundStore(client: client, logger: logger),
                idempotency: PostgresIdempotencyStore(client: client, logger: logger),
                settlement: PostgresSettlementStore(client: client, logger: logger), now: PostgresTime.now
              )
            )
          }
        case .memory:
          // The settlement check waits 1 ms of the stores' clock: the clock follows real time here.
          let database = InMemoryDatabase(clock: TestClock(following: ContinuousClock()))
          let stores = InMemoryStores(database: database)
          result = try await body(
            world(
              books: MemoryBooks(database: database), payments: stores, calls: stores, refunds: stores,
              idempotency: stores,
              settlement: stores, now: { database.recordTime() }))
        }
        try await connector.shutdown()
        return result
      } catch {
        try? await connector.shutdown()
        throw error
      }
    }
  }

  struct Tally: CustomStringConvertible {
    var calls = 0, crashes = 0, faults = 0, outages = 0, expiries = 0, rounds = 0
    var description: String {
      "\(self.calls) calls (\(self.crashes) crashed), \(self.faults) provider faults, \(self.outages) outages, \(self.expiries) lock expiries, \(self.rounds) completer rounds"
    }
  }

  // Two seeds at a time (odd and even, each one after another): each has its own database and
  // simulator, and all of them at once would starve the rest of the suite on a small machine.
  @Test(
    "After every step: never two charges or refunds for one operation, no answer or state that contradicts the provider; after draining: Tender and the provider agree exactly",
    .serialized, arguments: Self.postgresSeeds.filter { $0 % 2 == 1 }
  )
  func randomInterleavings(seed: UInt64) async throws {
    try await Self.withWorld(.postgres) { world in try await Self.interleave(world, seed: seed, label: "postgres") }
  }

  @Test("The same, the other seeds", .serialized, arguments: Self.postgresSeeds.filter { $0 % 2 == 0 })
  func randomInterleavingsEvenSeeds(seed: UInt64) async throws {
    try await Self.withWorld(.postgres) { world in try await Self.interleave(world, seed: seed, label: "postgres") }
  }

  // One at a time too, so the 64 simulators do not crowd the rest of the suite. (Run at once, they
  // once brought the test process down: simulators stopped by cancellation could drop a
  // connection just accepted, which NIO treats as fatal; they now stop by graceful shutdown.)
  @Test("The same on the in-memory stores", .serialized, arguments: Self.memorySeeds)
  func randomInterleavingsInMemory(seed: UInt64) async throws {
    try await Self.withWorld(.memory) { world in try await Self.interleave(world, seed: seed, label: "memory") }
  }

  static func interleave(_ world: World, seed: UInt64, label: String) async throws {
    var random = Random(state: seed)
    var tally = Tally()
    var catalog: [Step] = (0..<Self.payments).map { .create($0) }
    catalog += [.capture(0), .cancel(0), .capture(2), .cancel(2)]
    catalog += [.refund(1, 0), .refund(1, 1), .refund(1, 2), .refund(0, 0), .refund(2, 1)]
    let faultOperations: [ProviderCall.Operation: SimulatedFault.Operation] = [
      .createPayment: .createPayment, .capturePayment: .capture, .cancelPayment: .cancel, .createRefund: .refund,
    ]

    var down = false
    for index in 0..<Self.steps {
      let roll = random.below(100)
      if roll < 55 {
        // Creations first get more weight, so later steps have payments to work on.
        let step = index < 4 && random.chance(60) ? catalog[random.below(Self.payments)] : random.pick(catalog)
        if !down, random.chance(35) {
          tally.faults += 1
          let target = faultOperations[step.operation]!
          switch random.below(4) {
          case 0, 1: await world.simulator.inject(.acceptThenDrop(target))
          case 2: await world.simulator.inject(.answer(503, target))
          default: await world.simulator.inject(.answer(429, retryAfterSeconds: 0, target))
          }
        }
        let crash = random.chance(35) ? random.pick(Self.crashPoints[step.operation]!) : nil
        tally.calls += 1
        do {
          try await CrashPoints.$simulated.withValue(crash) { try await world.run(step) }
        } catch is SimulatedCrash {
          tally.crashes += 1
        } catch is KeyedRefusal, is DomainError {
          // Refusals and answers still open are answers too.
        }
        await world.simulator.clearFaults()
      } else if roll < 65 {
        // The provider goes down (connections refused) or comes back.
        down.toggle()
        if down {
          tally.outages += 1
          await world.simulator.refuseConnections(for: .seconds(3600))
        } else {
          await world.simulator.acceptConnections()
        }
      } else if roll < 80 {
        tally.expiries += 1
        try await world.expireLocks()
      } else {
        tally.rounds += 1
        let crash = random.chance(15) ? random.pick(Array(Self.crashPoints.values.joined())) : nil
        do {
          try await CrashPoints.$simulated.withValue(crash) { try await world.completerRound() }
        } catch is SimulatedCrash {
          tally.crashes += 1
        }
      }
      try await Self.checkInvariants(world, final: false, context: "\(label) seed \(seed), step \(index)")
    }

    // Drain: the provider healthy again, locks run out, the completer finishes everything.
    await world.simulator.clearFaults()
    await world.simulator.acceptConnections()
    let deadline = ContinuousClock.now + .seconds(10)
    while !world.simulator.acceptsConnections, ContinuousClock.now < deadline {
      try await Task.sleep(for: .milliseconds(20))
    }
    // A round finishes a key only once the provider answers it: not while a slow call of the same
    // key is still running there (409), nor when the answer misses the connector's 1 s on a loaded
    // machine. Rounds go on until nothing is left; a key that can never be finished still fails,
    // after 30 s.
    let drainDeadline = ContinuousClock.now + .seconds(30)
    repeat {
      try await world.expireLocks()
      try await world.completerRound()
      if try await world.books.unfinishedKeys() == 0 { break }
      try await Task.sleep(for: .milliseconds(50))
    } while ContinuousClock.now < drainDeadline
    #expect(world.simulator.acceptsConnections, "\(label) seed \(seed): the provider did not come back for the drain")
    try await Self.checkInvariants(world, final: true, context: "\(label) seed \(seed), drained")
    print("model \(label) seed \(seed): \(Self.steps) steps, \(tally)")
  }

  static func checkInvariants(_ world: World, final: Bool, context: String) async throws {
    let (intents, providerRefunds) = await world.simulator.books()
    let payments = try await world.books.payments()
    let refunds = try await world.books.refunds()
    let finished = try await world.books.finished()

    // No Tender payment was charged twice: at most one intent each.
    var intentsByPayment: [String: [ProviderSimulator.IntentView]] = [:]
    for intent in intents { intentsByPayment[intent.tenderPaymentID ?? "", default: []].append(intent) }
    for (payment, its) in intentsByPayment {
      let count = its.count
      #expect(count == 1, "\(context): payment \(payment) has \(count) intents")
    }

    // The provider performed each operation once per provider key.
    let performed = await world.simulator.requests().filter {
      ["created", "declined", "captured", "canceled", "refunded", "refund_failed"].contains($0.outcome)
    }
    var perKey: [String: Int] = [:]
    for request in performed { perKey[request.idempotencyKey ?? "", default: 0] += 1 }
    for (key, count) in perKey { #expect(count == 1, "\(context): provider key \(key) performed \(count) times") }

    // Tender's payment states never contradict the provider's.
    for (id, status, captured, refunded, _) in payments {
      let intent = intentsByPayment[id]?.first
      switch status {
      case "processing":
        if final { Issue.record("\(context): payment \(id) still processing after draining") }
      case "failed":
        #expect(
          intent == nil || intent?.status == "requires_payment_method",
          "\(context): \(id) FAILED at Tender, \(intent?.status ?? "-") at the provider")
      case "requires_capture":
        // A capture or cancel still open may have reached the provider.
        let allowed = final ? ["requires_capture"] : ["requires_capture", "succeeded", "canceled"]
        let agrees = allowed.contains(intent?.status ?? "-")
        #expect(agrees, "\(context): \(id) REQUIRES_CAPTURE at Tender, \(intent?.status ?? "-") at the provider")
      case "succeeded":
        let agrees = intent?.status == "succeeded" && intent?.amountReceived == captured
        #expect(
          agrees,
          "\(context): \(id) SUCCEEDED \(captured) at Tender, \(intent?.status ?? "-") \(intent?.amountReceived ?? 0) at the provider"
        )
      case "canceled":
        #expect(
          intent?.status == "canceled", "\(context): \(id) CANCELED at Tender, \(intent?.status ?? "-") at the provider"
        )
      default:
        Issue.record("\(context): unknown status \(status)")
      }
      // Refunds: what the provider refunded is always covered by Tender's reservations, and what
      // Tender calls succeeded the provider did refund.
      guard let intent else { continue }
      let atProvider: Int64 = providerRefunds.filter { $0.paymentIntent == intent.id && $0.status != "failed" }.reduce(
        0
      ) { $0 + $1.amount }
      let succeeded: Int64 = refunds.filter { $0.1 == id && $0.2 == "succeeded" }.reduce(0) { $0 + $1.3 }
      #expect(
        atProvider <= refunded, "\(context): provider refunded \(atProvider) of \(id), Tender reserved \(refunded)")
      #expect(
        succeeded <= atProvider, "\(context): Tender says \(succeeded) refunded of \(id), the provider \(atProvider)")
      if final {
        let agrees = succeeded == atProvider && refunded == atProvider
        #expect(agrees, "\(context): \(id) refunds: Tender \(succeeded) (reserved \(refunded)), provider \(atProvider)")
      }
    }
    // Every intent at the provider belongs to a Tender payment that knows it, once drained.
    if final {
      for intent in intents where intent.status != "requires_payment_method" {
        let known = payments.contains { $0.0 == intent.tenderPaymentID && $0.4 == intent.id }
        #expect(known, "\(context): intent \(intent.id) (\(intent.status)) without its payment at Tender")
      }
      #expect(try await world.books.unfinishedKeys() == 0, "\(context): unfinished keys")
      let settled = refunds.allSatisfy { $0.2 != "pending" }
      #expect(settled, "\(context): refunds still pending")
    }
    // Refunds Tender calls succeeded exist at the provider as succeeded.
    for (id, _, status, amount, providerID) in refunds where status == "succeeded" {
      let refund = providerRefunds.first { $0.id == providerID }
      let agrees = refund?.status == "succeeded" && refund?.amount == amount
      #expect(agrees, "\(context): refund \(id) SUCCEEDED at Tender, \(refund?.status ?? "-") at the provider")
    }

    // No finished key holds an answer that disagrees with the provider.
    for (method, answer) in finished {
      let fields = answer.split(separator: "|", omittingEmptySubsequences: false).map(String.init)
      switch (method, fields.first) {
      case ("create", "payment"?), ("capture", "payment"?), ("cancel", "payment"?):
        let intent = intentsByPayment[fields[1]]?.first
        let status = intent?.status ?? "-"
        let agrees: Bool
        switch fields[2] {
        case "requires_capture": agrees = intent != nil && status != "requires_payment_method"
        case "succeeded": agrees = status == "succeeded" && String(intent?.amountReceived ?? -1) == fields[3]
        case "canceled": agrees = status == "canceled"
        case "failed": agrees = intent == nil || status == "requires_payment_method"
        default: agrees = false
        }
        #expect(agrees, "\(context): \(method) answered \(answer); provider \(status)")
      case ("refund", "refund"?):
        let refund = providerRefunds.first { $0.id == fields[3] }
        let status = refund?.status ?? "-"
        let agrees =
          fields[2] == "succeeded"
          ? status == "succeeded" : fields[2] == "failed" ? (refund == nil || status == "failed") : true
        #expect(agrees, "\(context): refund answered \(answer); provider \(status)")
      default:
        break
      }
    }
  }
}
