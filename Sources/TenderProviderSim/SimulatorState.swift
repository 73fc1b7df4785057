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
  }

  struct Refund: Sendable {
    let id: String
    let paymentIntent: String
    let amount: Int64
    var status: String
  }

  struct Stored: Sendable {
    let fingerprint: String
    let response: SimulatorResponse
  }

  private var intents: [String: Intent] = [:]
  private var refunds: [String: Refund] = [:]
  private var idempotency: [String: Stored] = [:]
  private var inFlight: Set<String> = []
  private var flakyKeysSeen: Set<String> = []
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

  // MARK: Intents and refunds

  func store(_ intent: Intent) {
    self.intents[intent.id] = intent
  }

  func intent(_ id: String) -> Intent? {
    self.intents[id]
  }

  func update(_ id: String, _ change: (inout Intent) -> Void) -> Intent? {
    guard var intent = self.intents[id] else { return nil }
    change(&intent)
    self.intents[id] = intent
    return intent
  }

  func refunded(_ paymentIntent: String) -> Int64 {
    self.refunds.values.filter { $0.paymentIntent == paymentIntent && $0.status != "failed" }.reduce(0) { $0 + $1.amount }
  }

  func store(_ refund: Refund) {
    self.refunds[refund.id] = refund
  }

  var createdIntents: Int { self.intents.count }
}

/// One request the simulator received.
public struct LoggedRequest: Sendable, Codable, Hashable {
  public let method: String
  public let path: String
  public let idempotencyKey: String?
  public let status: Int
  /// `created`, `replayed`, `declined`, `refused`, …
  public let outcome: String
}

struct SimulatorResponse: Sendable {
  let status: Int
  let body: Data
}
