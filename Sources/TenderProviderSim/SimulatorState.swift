import Foundation

/// The simulated provider's books: payment intents, refunds, idempotency records and a log of
/// every request, as Stripe keeps them (the subset Tender uses).
actor SimulatorState {
  struct Intent: Sendable {
    let id: String
    let amount: Int64
    let currency: String
    let captureMethod: String
    let paymentMethod: String
    let metadata: [String: String]
    var status: String
    var amountCapturable: Int64
    var amountReceived: Int64
    var lastError: [String: String]?
    var created: ContinuousClock.Instant = .now
  }

  struct Refund: Sendable {
    let id: String
    let paymentIntent: String
    let amount: Int64
    var status: String
    var created: ContinuousClock.Instant = .now
  }

  struct Stored: Sendable {
    let fingerprint: String
    let response: SimulatorResponse
  }

  private var intents: [String: Intent] = [:]
  private var refunds: [String: Refund] = [:]
  /// Each intent's refunds, and what has yet to settle on its own: every request settles what is
  /// due, so neither may cost a pass over all the books.
  private var refundsOfIntent: [String: [String]] = [:]
  private var unsettledIntents: Set<String> = []
  private var unsettledRefunds: Set<String> = []
  private var idempotency: [String: Stored] = [:]
  private var inFlight: Set<String> = []
  private var flakyKeysSeen: Set<String> = []
  private var faults: [SimulatedFault] = []
  private(set) var log: [LoggedRequest] = []
  private var counter = 0

  func nextID(_ prefix: String) -> String {
    self.counter += 1
    return prefix + "_sim" + String(format: "%08d", self.counter)
  }

  func record(_ entry: LoggedRequest) {
    self.log.append(entry)
  }

  // MARK: Idempotency (Stripe's rules: same key + same parameters → the first response again;
  // other parameters → 400 idempotency_error; the first still running → 409).

  enum Claim {
    case proceed
    case replay(SimulatorResponse)
    case mismatch
    case inUse
  }

  func claim(key: String, fingerprint: String) -> Claim {
    if let stored = self.idempotency[key] {
      return stored.fingerprint == fingerprint ? .replay(stored.response) : .mismatch
    }
    if self.inFlight.contains(key) { return .inUse }
    self.inFlight.insert(key)
    return .proceed
  }

  func finish(key: String, fingerprint: String, response: SimulatorResponse) {
    self.inFlight.remove(key)
    // Server errors are not stored, so the client's retry runs the request again, as at Stripe.
    if response.status < 500 {
      self.idempotency[key] = Stored(fingerprint: fingerprint, response: response)
    }
  }

  /// Whether this is the first attempt with a flaky payment method's key (answered with a 500).
  func firstFlakyAttempt(key: String) -> Bool {
    self.flakyKeysSeen.insert(key).inserted
  }

  // MARK: Faults

  func inject(_ fault: SimulatedFault) {
    self.faults.append(fault)
  }

  func clearFaults() {
    self.faults = []
  }

  // MARK: Stalls

  /// Requests a stall holds right now, each resumed when its time is up or on `releaseStalls()`.
  private var stalls: [Int: CheckedContinuation<Void, Never>] = [:]
  private var nextStall = 0

  /// How many requests a stall holds right now.
  var stalled: Int { self.stalls.count }

  /// Holds the caller for `duration`, or until `releaseStalls()`.
  func hold(for duration: Duration) async {
    let id = self.nextStall
    self.nextStall += 1
    let timer = Task { [weak self] in
      try? await Task.sleep(for: duration)
      await self?.release(id)
    }
    await withCheckedContinuation { self.stalls[id] = $0 }
    timer.cancel()
  }

  /// Lets every request a stall holds go on now.
  func releaseStalls() {
    for id in Array(self.stalls.keys) { self.release(id) }
  }

  private func release(_ id: Int) {
    self.stalls.removeValue(forKey: id)?.resume()
  }

  /// The first armed fault matching a request, used up by one.
  func takeFault(operation: SimulatedFault.Operation, paymentMethod: String?) -> SimulatedFault? {
    guard let index = self.faults.firstIndex(where: { $0.matches(operation: operation, paymentMethod: paymentMethod) })
    else { return nil }
    let fault = self.faults[index]
    self.faults[index].times -= 1
    if self.faults[index].times <= 0 { self.faults.remove(at: index) }
    return fault
  }

  // MARK: Intents and refunds

  func store(_ intent: Intent) {
    self.intents[intent.id] = intent
    if intent.status == "processing" && intent.paymentMethod == "pm_card_async" {
      self.unsettledIntents.insert(intent.id)
    }
  }

  func intent(_ id: String) -> Intent? {
    self.intents[id]
  }

  func intent(metadata key: String, value: String) -> Intent? {
    self.intents.values.first { $0.metadata[key] == value }
  }

  /// Checks and changes an intent in one step, as the provider serializes operations on one
  /// payment intent: a capture and a cancel racing each other never both succeed. Nil when there
  /// is no such intent.
  func modify<Outcome: Sendable>(_ id: String, _ body: (inout Intent) -> Outcome) -> Outcome? {
    guard var intent = self.intents[id] else { return nil }
    let outcome = body(&intent)
    self.intents[id] = intent
    return outcome
  }

  func update(_ id: String, _ change: (inout Intent) -> Void) -> Intent? {
    guard var intent = self.intents[id] else { return nil }
    change(&intent)
    self.intents[id] = intent
    return intent
  }

  enum RefundStep: Sendable {
    case notCaptured
    case tooLarge
    case created(Refund)
  }

  /// A refund of `amount` (all that is left when nil) of a captured intent, checked and recorded
  /// in one step. Its outcome follows the intent's test card.
  func refund(paymentIntent id: String, amount requested: Int64?) -> RefundStep {
    guard let intent = self.intents[id], intent.status == "succeeded" else { return .notCaptured }
    let remaining = intent.amountReceived - self.refunded(id)
    let amount = requested ?? remaining
    guard amount > 0, amount <= remaining else { return .tooLarge }
    let status =
      intent.paymentMethod == "pm_card_refundFail"
      ? "failed" : intent.paymentMethod == "pm_card_refundPending" ? "pending" : "succeeded"
    let refund = Refund(id: self.nextID("re"), paymentIntent: id, amount: amount, status: status)
    self.store(refund)
    return .created(refund)
  }

  func refunded(_ paymentIntent: String) -> Int64 {
    var total: Int64 = 0
    for id in self.refundsOfIntent[paymentIntent] ?? [] {
      if let refund = self.refunds[id], refund.status != "failed" { total += refund.amount }
    }
    return total
  }

  func store(_ refund: Refund) {
    if self.refunds.updateValue(refund, forKey: refund.id) == nil {
      self.refundsOfIntent[refund.paymentIntent, default: []].append(refund.id)
    }
    if refund.status == "pending" { self.unsettledRefunds.insert(refund.id) }
  }

  func refund(_ id: String) -> Refund? {
    self.refunds[id]
  }

  /// Asynchronous methods finish `after` their creation, as the provider's own processing would:
  /// a `pm_card_async` payment is then authorized (or captured), a `pm_card_refundPending`
  /// refund succeeded. `pm_card_asyncStuck` payments never finish.
  func settleAsynchronous(after delay: Duration) -> (intents: [Intent], refunds: [Refund]) {
    let now = ContinuousClock.now
    var intents: [Intent] = []
    var refunds: [Refund] = []
    for id in self.unsettledIntents {
      guard let intent = self.intents[id], intent.status == "processing" else {
        // Canceled meanwhile.
        self.unsettledIntents.remove(id)
        continue
      }
      guard now - intent.created >= delay else { continue }
      self.unsettledIntents.remove(id)
      var settled = intent
      settled.status = intent.captureMethod == "manual" ? "requires_capture" : "succeeded"
      if intent.captureMethod == "manual" {
        settled.amountCapturable = intent.amount
      } else {
        settled.amountReceived = intent.amount
      }
      self.intents[id] = settled
      intents.append(settled)
    }
    for id in self.unsettledRefunds {
      guard let refund = self.refunds[id], refund.status == "pending" else {
        self.unsettledRefunds.remove(id)
        continue
      }
      guard now - refund.created >= delay else { continue }
      self.unsettledRefunds.remove(id)
      var settled = refund
      settled.status = "succeeded"
      self.refunds[id] = settled
      refunds.append(settled)
    }
    return (intents, refunds)
  }

  var createdIntents: Int { self.intents.count }

  func books() -> ([Intent], [Refund]) {
    (Array(self.intents.values), Array(self.refunds.values))
  }
}

/// One request the simulator received.
public struct LoggedRequest: Sendable, Codable, Hashable {
  public let method: String
  public let path: String
  public let idempotencyKey: String?
  public let status: Int
  /// `created`, `replayed`, `declined`, `refused`, …
  public let outcome: String
  /// The fault injected into this request, if any (`accept_then_drop`, `answer_429`, `stall`).
  public var fault: String?

  public init(method: String, path: String, idempotencyKey: String?, status: Int, outcome: String, fault: String? = nil)
  {
    self.method = method
    self.path = path
    self.idempotencyKey = idempotencyKey
    self.status = status
    self.outcome = outcome
    self.fault = fault
  }
}

/// A misbehaviour of the provider, armed for the next `times` matching requests.
public struct SimulatedFault: Codable, Sendable, Hashable {
  public enum Kind: String, Codable, Sendable {
    /// The provider does the work (and keeps it under the idempotency key) but the connection
    /// dies before the answer is sent.
    case acceptThenDrop = "accept_then_drop"
    /// The provider answers `status` without doing anything (429 with Retry-After, 5xx).
    case answer
    /// The provider waits `stallSeconds`, then does the work and answers.
    case stall
  }

  public enum Operation: String, Codable, Sendable {
    case createPayment = "create_payment"
    case capture
    case cancel
    case refund
    case retrieve
  }

  public var kind: Kind
  /// Matches any operation when nil.
  public var operation: Operation?
  /// Matches any payment method when nil (for captures, cancels and refunds: the intent's).
  public var paymentMethod: String?
  public var times: Int
  public var status: Int?
  public var retryAfterSeconds: Int?
  public var stallSeconds: Double?
  /// After the fault, the provider refuses connections for this many seconds (an outage that
  /// begins just as it accepted the work).
  public var thenRefuseSeconds: Double?

  public init(
    kind: Kind, operation: Operation? = nil, paymentMethod: String? = nil, times: Int = 1, status: Int? = nil,
    retryAfterSeconds: Int? = nil,
    stallSeconds: Double? = nil, thenRefuseSeconds: Double? = nil
  ) {
    self.kind = kind
    self.operation = operation
    self.paymentMethod = paymentMethod
    self.times = times
    self.status = status
    self.retryAfterSeconds = retryAfterSeconds
    self.stallSeconds = stallSeconds
    self.thenRefuseSeconds = thenRefuseSeconds
  }

  public static func acceptThenDrop(
    _ operation: Operation? = nil, paymentMethod: String? = nil, times: Int = 1, thenRefuseSeconds: Double? = nil
  ) -> SimulatedFault {
    SimulatedFault(
      kind: .acceptThenDrop, operation: operation, paymentMethod: paymentMethod, times: times,
      thenRefuseSeconds: thenRefuseSeconds)
  }

  public static func answer(
    _ status: Int, retryAfterSeconds: Int? = nil, _ operation: Operation? = nil, paymentMethod: String? = nil,
    times: Int = 1
  ) -> SimulatedFault {
    SimulatedFault(
      kind: .answer, operation: operation, paymentMethod: paymentMethod, times: times, status: status,
      retryAfterSeconds: retryAfterSeconds)
  }

  public static func stall(
    seconds: Double, _ operation: Operation? = nil, paymentMethod: String? = nil, times: Int = 1
  ) -> SimulatedFault {
    SimulatedFault(
      kind: .stall, operation: operation, paymentMethod: paymentMethod, times: times, stallSeconds: seconds)
  }

  func matches(operation: Operation, paymentMethod: String?) -> Bool {
    (self.operation == nil || self.operation == operation)
      && (self.paymentMethod == nil || self.paymentMethod == paymentMethod) && self.times > 0
  }

  var label: String {
    switch self.kind {
    case .acceptThenDrop: return "accept_then_drop"
    case .answer: return "answer_\(self.status ?? 500)"
    case .stall: return "stall"
    }
  }
}

struct SimulatorResponse: Sendable {
  let status: Int
  let body: Data
}
