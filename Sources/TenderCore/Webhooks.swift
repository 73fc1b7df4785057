public import Foundation

/// A provider's callback as received: verified, not yet applied.
public struct WebhookEvent: Sendable, Hashable {
  /// `stripe`, or the name of a Standard Webhooks provider.
  public let provider: String
  /// The provider's event id (unique per provider).
  public let eventID: String
  public let type: String
  /// The raw body, exactly the bytes that were signed.
  public let body: [UInt8]
  /// When the provider signed it.
  public let signedTime: Date
  /// How many times applying it found nothing to apply it to yet.
  public let attempts: Int

  public init(provider: String, eventID: String, type: String, body: [UInt8], signedTime: Date, attempts: Int = 0) {
    self.provider = provider
    self.eventID = eventID
    self.type = type
    self.body = body
    self.signedTime = signedTime
    self.attempts = attempts
  }
}

/// What a provider event says, read by the provider's connector.
public enum ProviderEvent: Sendable, Hashable {
  /// A payment's state at the provider; Tender's id when the provider echoes it.
  case payment(ProviderPayment, tenderPaymentID: PaymentID?)
  /// Refunds' states at the provider.
  case refunds([ProviderRefund])
  /// An event Tender does not act on.
  case other
}

/// What applying an event did.
public enum WebhookOutcome: String, Sendable, Hashable {
  /// The payment or refund moved to the state the event reports.
  case applied
  /// It was in that state already.
  case already
  /// The event reports an older state than Tender has (events may arrive out of order).
  case stale
  /// Tender does not act on this type of event.
  case ignored
}

/// Where verified webhooks wait to be applied: each stored once (per provider and event id),
/// acknowledged only after that commit, and applied in the same transaction as the change it
/// causes.
public protocol WebhookInbox: Sendable {
  /// Stores `event`; false when it was stored before (a duplicate: nothing changes).
  func receive(_ event: WebhookEvent) async throws -> Bool
  /// Events due to be applied, oldest first.
  func due(limit: Int) async throws -> [WebhookEvent]
  /// In one transaction: the event (if still due), the payment it concerns (by the provider's
  /// id, else by Tender's), `change` applied to it with its status event, and the event marked
  /// with the outcome `change` returns. Nil, with nothing written, when there is no such payment.
  func applyToPayment(
    _ event: WebhookEvent,
    providerPaymentID: String,
    tenderPaymentID: PaymentID?,
    _ change: @escaping @Sendable (inout PaymentRecord) -> WebhookOutcome
  ) async throws -> WebhookOutcome?
  /// Likewise for refunds, each found by the provider's refund id and settled with its outcome;
  /// nil when none of them is known.
  func applyToRefunds(
    _ event: WebhookEvent, _ refunds: [(providerRefundID: String, outcome: RefundOutcome)]
  ) async throws -> WebhookOutcome?
  /// Marks the event done without a change (an event Tender does not act on).
  func finish(_ event: WebhookEvent, outcome: WebhookOutcome) async throws
  /// Tries the event again after `next`; parks it (no more tries) when `park` is set.
  func postpone(_ event: WebhookEvent, next: Duration, park: Bool) async throws
  /// Events waiting to be applied, and parked ones.
  func backlog() async throws -> (waiting: Int, parked: Int)
}
