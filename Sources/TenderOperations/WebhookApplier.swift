import Foundation
public import Logging
public import TenderCore

/// Applies stored webhooks: each through the same state machine as the RPCs and the reconciler,
/// in the transaction that marks it applied. An event for an object Tender does not know yet
/// (its row not committed, or the provider's id not recorded yet) is tried again with backoff and
/// parked after `maximumAttempts`; events of other types are marked ignored.
public struct WebhookApplier: Sendable {
  public struct Policy: Sendable {
    public var firstRetry: Duration
    public var maximumRetry: Duration
    public var maximumAttempts: Int

    public init(firstRetry: Duration = .seconds(1), maximumRetry: Duration = .seconds(300), maximumAttempts: Int = 12) {
      self.firstRetry = firstRetry
      self.maximumRetry = max(firstRetry, maximumRetry)
      self.maximumAttempts = max(1, maximumAttempts)
    }
  }

  let inbox: any WebhookInbox
  let read: @Sendable (WebhookEvent) -> ProviderEvent
  let policy: Policy
  /// Called with how long an applied event waited since it was signed.
  let onApplied: @Sendable (Duration) -> Void
  let onParked: @Sendable (String) -> Void
  let logger: Logger

  public init(
    inbox: any WebhookInbox,
    read: @escaping @Sendable (WebhookEvent) -> ProviderEvent,
    policy: Policy = Policy(),
    onApplied: @escaping @Sendable (Duration) -> Void = { _ in },
    onParked: @escaping @Sendable (String) -> Void = { _ in },
    logger: Logger
  ) {
    self.inbox = inbox
    self.read = read
    self.policy = policy
    self.onApplied = onApplied
    self.onParked = onParked
    self.logger = logger
  }

  /// Applies every due event; returns how many were applied or found already applied.
  public func round(limit: Int = 100) async throws -> Int {
    var done = 0
    for event in try await self.inbox.due(limit: limit) where try await self.apply(event) {
      done += 1
    }
    return done
  }

  /// Applies one event; false when it had to be postponed.
  @discardableResult
  public func apply(_ event: WebhookEvent) async throws -> Bool {
    try CrashPoints.reach("webhook.apply")
    let outcome: WebhookOutcome?
    switch self.read(event) {
    case .payment(let payment, let tenderPaymentID):
      outcome = try await self.inbox.applyToPayment(
        event, providerPaymentID: payment.providerPaymentID, tenderPaymentID: tenderPaymentID
      ) { record in
        ProviderState.apply(payment.status, to: &record)
      }
    case .refunds(let refunds) where refunds.isEmpty:
      try await self.inbox.finish(event, outcome: .ignored)
      outcome = .ignored
    case .refunds(let refunds):
      outcome = try await self.inbox.applyToRefunds(
        event,
        refunds.map { refund in
          switch refund.status {
          case .succeeded: return (refund.providerRefundID, .succeeded(providerRefundID: refund.providerRefundID))
          case .failed(let message):
            return (refund.providerRefundID, .failed(providerRefundID: refund.providerRefundID, message: message))
          case .pending: return (refund.providerRefundID, .pending(providerRefundID: refund.providerRefundID))
          }
        }
      )
    case .other:
      try await self.inbox.finish(event, outcome: .ignored)
      outcome = .ignored
    }
    guard let outcome else {
      // Nothing to apply it to yet.
      let attempts = event.attempts + 1
      let park = attempts >= self.policy.maximumAttempts
      let next = Backoff.doubling(self.policy.firstRetry, attempt: attempts, cap: self.policy.maximumRetry)
      try await self.inbox.postpone(event, next: next, park: park)
      if park {
        self.onParked(event.provider)
        self.logger.error(
          "webhook parked: the object it names never appeared",
          metadata: ["provider": "\(event.provider)", "event_id": "\(event.eventID)", "type": "\(event.type)"])
      }
      return false
    }
    if outcome == .applied {
      let waited = Date().timeIntervalSince(event.signedTime)
      self.onApplied(.milliseconds(Int64(max(0, waited) * 1000)))
    }
    self.logger.info(
      "webhook applied",
      metadata: [
        "provider": "\(event.provider)", "event_id": "\(event.eventID)", "type": "\(event.type)",
        "outcome": "\(outcome.rawValue)",
      ])
    return true
  }
}
