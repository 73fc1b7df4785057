/// Where payments and refunds the provider has not finished wait to be checked: the reconciler
/// asks the provider about each when it is due, backing off per object, and gives up (visibly)
/// on one that stays open too long.
public protocol SettlementStore: Sendable {
  /// Payments still PROCESSING at the provider (they have a provider id and no keyed operation
  /// is open on them), unchanged for `quietFor`, whose next check is due; with the number of
  /// checks each had.
  func duePayments(quietFor: Duration, limit: Int) async throws -> [(PaymentRecord, checks: Int)]
  /// Refunds still PENDING at the provider, likewise.
  func dueRefunds(quietFor: Duration, limit: Int) async throws -> [(RefundRecord, checks: Int)]
  /// Records a check that found the object still open: checked again after `next`; abandoned
  /// (never checked again, counted) when `abandon` is set.
  func postpone(objectID: String, checks: Int, next: Duration, abandon: Bool) async throws
  /// Forgets the checks of an object that reached its final state.
  func settled(objectID: String) async throws
  /// How many payments and refunds are still open (PROCESSING, PENDING), and how long the
  /// oldest of each has been unchanged.
  func backlog() async throws -> SettlementBacklog
}

/// Payments and refunds nobody has settled yet.
public struct SettlementBacklog: Sendable, Hashable {
  public var payments: Int
  public var refunds: Int
  /// Since the oldest open payment last changed; nil when none is open.
  public var oldestPaymentAge: Duration?
  public var oldestRefundAge: Duration?

  public init(payments: Int, refunds: Int, oldestPaymentAge: Duration?, oldestRefundAge: Duration?) {
    self.payments = payments
    self.refunds = refunds
    self.oldestPaymentAge = oldestPaymentAge
    self.oldestRefundAge = oldestRefundAge
  }
}
