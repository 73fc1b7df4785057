/// A refusal with a stable reason, decided by the domain; the RPC layer maps `kind` to a gRPC
/// status and adds `reason` (and `field`) as `ErrorInfo` / `BadRequest`.
public struct DomainError: Error, Sendable, Hashable, CustomStringConvertible {
  /// The broad kind of refusal, which fixes the status code.
  public enum Kind: Sendable, Hashable {
    /// The request itself is wrong (INVALID_ARGUMENT).
    case invalidArgument
    /// The request is fine but the resource's state forbids it (FAILED_PRECONDITION).
    case failedPrecondition
    /// No such resource for this merchant (NOT_FOUND).
    case notFound
    /// Lost a race; retrying may succeed (ABORTED).
    case aborted
    /// The payment provider refused (FAILED_PRECONDITION with the decline reason).
    case declined
  }

  public let kind: Kind
  /// Stable, upper-snake-case reason, e.g. `AMOUNT_INVALID`.
  public let reason: String
  /// The request field at fault, in proto path form (`amount.amount_minor`), when there is one.
  public let field: String?
  /// A message safe to show callers: never a secret, a token or card data.
  public let message: String

  public init(_ kind: Kind, reason: String, field: String? = nil, message: String) {
    self.kind = kind
    self.reason = reason
    self.field = field
    self.message = message
  }

  public var description: String { "\(self.reason): \(self.message)" }
}

extension DomainError {
  public static func amountInvalid(field: String, _ message: String) -> DomainError {
    DomainError(.invalidArgument, reason: "AMOUNT_INVALID", field: field, message: message)
  }

  public static func currencyUnsupported(field: String, _ code: String) -> DomainError {
    DomainError(
      .invalidArgument, reason: "CURRENCY_UNSUPPORTED", field: field,
      message: "'\(code.prefix(8))' is not an ISO 4217 currency code Tender accepts")
  }

  public static func currencyMismatch(field: String, expected: Currency, got: Currency) -> DomainError {
    DomainError(
      .invalidArgument, reason: "CURRENCY_MISMATCH", field: field,
      message: "the payment is in \(expected.code), not \(got.code)")
  }

  public static func cardDataRejected(field: String) -> DomainError {
    DomainError(
      .invalidArgument, reason: "CARD_DATA_REJECTED", field: field,
      message: "\(field) looks like a card number; Tender accepts provider tokens only")
  }

  public static func paymentNotCapturable(_ status: PaymentStatus) -> DomainError {
    DomainError(
      .failedPrecondition, reason: "PAYMENT_NOT_CAPTURABLE", message: "a \(status.name) payment cannot be captured")
  }

  public static func paymentNotCancelable(_ status: PaymentStatus) -> DomainError {
    DomainError(
      .failedPrecondition, reason: "PAYMENT_NOT_CANCELABLE", message: "a \(status.name) payment cannot be canceled")
  }

  public static func paymentNotRefundable(_ status: PaymentStatus) -> DomainError {
    DomainError(
      .failedPrecondition, reason: "PAYMENT_NOT_REFUNDABLE",
      message: "only captured money can be refunded; the payment is \(status.name)")
  }
}

extension DomainError {
  public static func refundAlreadyFinal(_ status: RefundStatus) -> DomainError {
    DomainError(
      .failedPrecondition, reason: "REFUND_ALREADY_FINAL", message: "the refund is already \(status.rawValue)")
  }
}
