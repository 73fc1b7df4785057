/// Where a payment is in its life. The transitions below are the only legal ones.
public enum PaymentStatus: String, Sendable, Hashable, CaseIterable {
  /// Sent to the provider; the outcome is not known yet.
  case processing
  /// Authorized (manual capture): money held, waiting for CapturePayment or CancelPayment.
  case requiresCapture = "requires_capture"
  /// Captured (in full or in part). Refunds apply to succeeded payments only.
  case succeeded
  /// Declined or errored; nothing was taken.
  case failed
  /// Canceled before capture; the hold was released.
  case canceled

  /// The name callers see, as in the schema (`REQUIRES_CAPTURE`).
  public var name: String {
    switch self {
    case .processing: return "PROCESSING"
    case .requiresCapture: return "REQUIRES_CAPTURE"
    case .succeeded: return "SUCCEEDED"
    case .failed: return "FAILED"
    case .canceled: return "CANCELED"
    }
  }

  /// No transition leaves a terminal status.
  public var isTerminal: Bool {
    switch self {
    case .succeeded, .failed, .canceled: return true
    case .processing, .requiresCapture: return false
    }
  }

  /// Whether `self → next` is a legal transition: the single source of that rule.
  public func canMove(to next: PaymentStatus) -> Bool {
    switch (self, next) {
    case (.processing, .requiresCapture), (.processing, .succeeded), (.processing, .failed):
      return true
    case (.requiresCapture, .succeeded), (.requiresCapture, .canceled), (.requiresCapture, .failed):
      // .failed: the authorization expired or the provider voided it.
      return true
    default:
      return false
    }
  }
}

public enum CaptureMethod: String, Sendable, Hashable {
  /// The provider captures as soon as it authorizes.
  case automatic
  /// Authorize now, CapturePayment later (up to the authorized amount).
  case manual
}

/// Why a payment failed, as the schema names it.
public enum FailureReason: String, Sendable, Hashable {
  case cardDeclined = "card_declined"
  case insufficientFunds = "insufficient_funds"
  case expiredCard = "expired_card"
  case fraudSuspected = "fraud_suspected"
  case providerError = "provider_error"
  case authorizationExpired = "authorization_expired"
}

/// A payment's status and amounts, and every rule about changing them. Stores persist it and
/// back the same rules with database constraints; they never decide a transition themselves.
public struct PaymentLedger: Sendable, Hashable {
  public private(set) var status: PaymentStatus
  public let amount: Money
  public let captureMethod: CaptureMethod
  /// Authorized and not yet captured or released.
  public private(set) var capturableMinorUnits: Int64
  public private(set) var capturedMinorUnits: Int64
  /// Refunded or being refunded (pending refunds hold their amount, so concurrent refunds can
  /// never exceed what was captured).
  public private(set) var refundedMinorUnits: Int64
  public private(set) var failureReason: FailureReason?

  /// A new payment, sent to the provider.
  public init(amount: Money, captureMethod: CaptureMethod) {
    self.status = .processing
    self.amount = amount
    self.captureMethod = captureMethod
    self.capturableMinorUnits = 0
    self.capturedMinorUnits = 0
    self.refundedMinorUnits = 0
    self.failureReason = nil
  }

  /// A ledger as stored; `nil` when the stored values break an invariant.
  public init?(
    status: PaymentStatus,
    amount: Money,
    captureMethod: CaptureMethod,
    capturableMinorUnits: Int64,
    capturedMinorUnits: Int64,
    refundedMinorUnits: Int64,
    failureReason: FailureReason?
  ) {
    guard capturableMinorUnits >= 0, capturedMinorUnits >= 0, refundedMinorUnits >= 0,
      capturableMinorUnits + capturedMinorUnits <= amount.minorUnits,
      refundedMinorUnits <= capturedMinorUnits,
      (failureReason != nil) == (status == .failed)
    else { return nil }
    self.status = status
    self.amount = amount
    self.captureMethod = captureMethod
    self.capturableMinorUnits = capturableMinorUnits
    self.capturedMinorUnits = capturedMinorUnits
    self.refundedMinorUnits = refundedMinorUnits
    self.failureReason = failureReason
  }

  public var refundableMinorUnits: Int64 { self.capturedMinorUnits - self.refundedMinorUnits }

  private mutating func move(to next: PaymentStatus) {
    precondition(self.status.canMove(to: next), "illegal payment transition \(self.status) → \(next)")
    self.status = next
  }

  // MARK: Provider outcomes

  /// The provider authorized the full amount: held for capture (manual) or captured (automatic).
  public mutating func providerAuthorized() throws(DomainError) {
    guard self.status == .processing else { throw .paymentNotCapturable(self.status) }
    switch self.captureMethod {
    case .manual:
      self.move(to: .requiresCapture)
      self.capturableMinorUnits = self.amount.minorUnits
    case .automatic:
      self.move(to: .succeeded)
      self.capturedMinorUnits = self.amount.minorUnits
    }
  }

  /// The provider declined or failed the payment; nothing is held or captured.
  public mutating func providerFailed(_ reason: FailureReason) throws(DomainError) {
    guard self.status.canMove(to: .failed) else {
      throw DomainError(
        .failedPrecondition, reason: "PAYMENT_ALREADY_FINAL", message: "a \(self.status.name) payment cannot fail")
    }
    self.move(to: .failed)
    self.capturableMinorUnits = 0
    self.failureReason = reason
  }

  // MARK: Caller requests

  /// Captures `minorUnits` (all that is capturable when nil). A partial capture releases the
  /// rest: one capture per payment. Returns the amount captured.
  @discardableResult
  public mutating func capture(_ minorUnits: Int64?) throws(DomainError) -> Int64 {
    guard self.status == .requiresCapture else { throw .paymentNotCapturable(self.status) }
    let amount = minorUnits ?? self.capturableMinorUnits
    guard amount > 0 else {
      throw .amountInvalid(field: "amount_to_capture", "amount_to_capture must be greater than zero")
    }
    guard amount <= self.capturableMinorUnits else {
      throw DomainError(
        .invalidArgument,
        reason: "CAPTURE_EXCEEDS_AUTHORIZED",
        field: "amount_to_capture",
        message: "amount_to_capture exceeds the \(self.capturableMinorUnits) minor units authorized"
      )
    }
    self.move(to: .succeeded)
    self.capturedMinorUnits = amount
    self.capturableMinorUnits = 0
    return amount
  }

  /// Cancels an authorized payment and releases the hold.
  public mutating func cancel() throws(DomainError) {
    guard self.status == .requiresCapture else { throw .paymentNotCancelable(self.status) }
    self.move(to: .canceled)
    self.capturableMinorUnits = 0
  }

  /// Reserves `refund` against the captured amount (the refund is pending until the provider
  /// answers). Never more than captured minus already refunded.
  /// Reserves a refund of `minorUnits`, or of everything still refundable when nil; returns the
  /// amount reserved. Nothing left to refund is a refusal like too much.
  public mutating func reserveRefund(minorUnits: Int64?) throws(DomainError) -> Money {
    let requested = minorUnits ?? self.refundableMinorUnits
    guard requested > 0 else {
      throw DomainError(
        .failedPrecondition, reason: "REFUND_EXCEEDS_CAPTURED", field: "amount_minor",
        message: self.status == .succeeded
          ? "nothing of this payment is left to refund"
          : "only captured money can be refunded; the payment is \(self.status.name)"
      )
    }
    let amount = Money(minorUnits: requested, currency: self.amount.currency)
    try self.reserveRefund(amount)
    return amount
  }

  public mutating func reserveRefund(_ refund: Money) throws(DomainError) {
    guard self.status == .succeeded else { throw .paymentNotRefundable(self.status) }
    guard refund.currency == self.amount.currency else {
      throw .currencyMismatch(field: "amount.currency", expected: self.amount.currency, got: refund.currency)
    }
    guard refund.minorUnits <= self.refundableMinorUnits else {
      throw DomainError(
        .failedPrecondition,
        reason: "REFUND_EXCEEDS_CAPTURED",
        field: "amount_minor",
        message: "only \(self.refundableMinorUnits) minor units of this payment can still be refunded"
      )
    }
    self.refundedMinorUnits += refund.minorUnits
  }

  /// A pending refund failed at the provider: its amount is refundable again.
  public mutating func releaseRefund(_ refund: Money) {
    precondition(refund.minorUnits <= self.refundedMinorUnits, "released more than was reserved")
    self.refundedMinorUnits -= refund.minorUnits
  }
}
