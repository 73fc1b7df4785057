import Foundation
public import Logging
public import TenderCore

/// The reconciler: settles what the provider has not finished — payments PROCESSING (asynchronous
/// payment methods) and refunds PENDING — by asking the provider for their current state once
/// they have been quiet for a while, and applying a definitive answer through the same state
/// machine as the RPCs. Each object is asked again with exponential backoff; one still open after
/// `giveUpAfter` is abandoned to a visible state (a log line and `onAbandoned`, a metric). Keyed
/// operations that are still open are the completer's, not the reconciler's.
public struct Settlement: Sendable {
  public struct Policy: Sendable {
    /// How long an object must be unchanged before it is first checked (the provider's own
    /// answer, or a webhook, usually comes sooner).
    public var checkAfter: Duration
    /// The longest wait between two checks of one object.
    public var maximumInterval: Duration
    /// After this age an object still open is abandoned.
    public var giveUpAfter: Duration

    public init(checkAfter: Duration, maximumInterval: Duration = .seconds(3600), giveUpAfter: Duration) {
      self.checkAfter = checkAfter
      self.maximumInterval = max(checkAfter, maximumInterval)
      self.giveUpAfter = giveUpAfter
    }

    /// The wait after the `checks`-th check that found the object still open.
    public func interval(afterChecks checks: Int) -> Duration {
      Backoff.doubling(self.checkAfter, attempt: checks, cap: self.maximumInterval)
    }
  }

  let store: any SettlementStore
  let payments: any PaymentStore
  let refunds: any RefundStore
  let provider: any PaymentProvider
  let policy: Policy
  let onAbandoned: @Sendable (_ kind: String) -> Void
  let logger: Logger

  public init(
    store: any SettlementStore,
    payments: any PaymentStore,
    refunds: any RefundStore,
    provider: any PaymentProvider,
    policy: Policy,
    onAbandoned: @escaping @Sendable (_ kind: String) -> Void = { _ in },
    logger: Logger
  ) {
    self.store = store
    self.payments = payments
    self.refunds = refunds
    self.provider = provider
    self.policy = policy
    self.onAbandoned = onAbandoned
    self.logger = logger
  }

  /// One round over the due payments and refunds; returns how many reached their final state.
  public func round(limit: Int = 50) async throws -> Int {
    var settled = 0
    for (payment, checks) in try await self.store.duePayments(quietFor: self.policy.checkAfter, limit: limit) {
      if try await self.check(payment, checks: checks) { settled += 1 }
    }
    for (refund, checks) in try await self.store.dueRefunds(quietFor: self.policy.checkAfter, limit: limit) {
      if try await self.check(refund, checks: checks) { settled += 1 }
    }
    return settled
  }

  func check(_ payment: PaymentRecord, checks: Int) async throws -> Bool {
    guard let providerID = payment.providerPaymentID else { return false }
    let provider = self.provider
    let answer = await Result.of { () async throws(ProviderError) in
      try await provider.retrievePayment(providerPaymentID: providerID)
    }
    if case .success(let current) = answer, current.status != .processing {
      _ = try await self.payments.update(payment.id, merchant: payment.merchantID, step: nil) { record in
        _ = ProviderState.apply(current.status, to: &record)
      }
      try await self.store.settled(objectID: payment.id.rawValue)
      self.logger.notice(
        "settled a payment the provider finished",
        metadata: ["payment_id": "\(payment.id)", "provider_status": "\(current.status)"])
      return true
    }
    try await self.postpone(
      kind: "payment", id: payment.id.rawValue, created: payment.createTime, checks: checks, problem: answer)
    return false
  }

  func check(_ refund: RefundRecord, checks: Int) async throws -> Bool {
    guard let providerID = refund.providerRefundID else { return false }
    let provider = self.provider
    let answer = await Result.of { () async throws(ProviderError) in
      try await provider.retrieveRefund(providerRefundID: providerID)
    }
    if case .success(let current) = answer {
      let outcome: RefundOutcome?
      switch current.status {
      case .succeeded: outcome = .succeeded(providerRefundID: current.providerRefundID)
      case .failed(let message): outcome = .failed(providerRefundID: current.providerRefundID, message: message)
      case .pending: outcome = nil
      }
      if let outcome {
        _ = try await self.refunds.settle(refund.id, merchant: refund.merchantID, outcome: outcome, step: nil)
        try await self.store.settled(objectID: refund.id.rawValue)
        self.logger.notice("settled a refund the provider finished", metadata: ["refund_id": "\(refund.id)"])
        return true
      }
    }
    try await self.postpone(
      kind: "refund", id: refund.id.rawValue, created: refund.createTime, checks: checks, problem: answer)
    return false
  }

  /// Another check later — or, past the age limit, none: the object is abandoned, visibly.
  func postpone<Answer>(
    kind: String, id: String, created: Date, checks: Int, problem: Result<Answer, ProviderError>
  ) async throws {
    let age = Date().timeIntervalSince(created)
    let giveUp =
      Double(self.policy.giveUpAfter.components.seconds) + Double(self.policy.giveUpAfter.components.attoseconds) / 1e18
    let abandon = age >= giveUp
    try await self.store.postpone(
      objectID: id, checks: checks + 1, next: self.policy.interval(afterChecks: checks + 1), abandon: abandon)
    if abandon {
      self.onAbandoned(kind)
      self.logger.error(
        "gave up settling: the provider has not finished it; it needs a person",
        metadata: ["\(kind)_id": "\(id)", "checks": "\(checks + 1)", "age_seconds": "\(Int(age))"]
      )
    } else if case .failure(let error) = problem {
      self.logger.warning(
        "could not ask the provider about an open \(kind)", metadata: ["\(kind)_id": "\(id)", "problem": "\(error)"])
    }
  }
}
