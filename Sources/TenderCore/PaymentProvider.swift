/// What Tender asks a payment provider to do. Connectors (Stripe's HTTP API first) implement it;
/// every call carries an idempotency key derived from Tender's own, so a retry after a crash or a
/// timeout can never charge twice.
public protocol PaymentProvider: Sendable {
  func createPayment(
    _ request: ProviderPaymentRequest, idempotencyKey: String
  ) async throws(ProviderError) -> ProviderPayment
  func capturePayment(
    providerPaymentID: String, amountMinorUnits: Int64, idempotencyKey: String
  ) async throws(ProviderError) -> ProviderPayment
  func cancelPayment(providerPaymentID: String, idempotencyKey: String) async throws(ProviderError) -> ProviderPayment
  func createRefund(
    providerPaymentID: String, amountMinorUnits: Int64, idempotencyKey: String
  ) async throws(ProviderError) -> ProviderRefund
  /// The provider's current view of a payment, for settling what is still open.
  func retrievePayment(providerPaymentID: String) async throws(ProviderError) -> ProviderPayment
  /// The provider's current view of a refund.
  func retrieveRefund(providerRefundID: String) async throws(ProviderError) -> ProviderRefund
}

public struct ProviderPaymentRequest: Sendable, Hashable {
  public let amount: Money
  public let captureMethod: CaptureMethod
  /// The provider's payment-method token.
  public let paymentMethod: String
  /// Tender's id, recorded at the provider for reconciliation.
  public let paymentID: PaymentID

  public init(amount: Money, captureMethod: CaptureMethod, paymentMethod: String, paymentID: PaymentID) {
    self.amount = amount
    self.captureMethod = captureMethod
    self.paymentMethod = paymentMethod
    self.paymentID = paymentID
  }
}

/// A payment as the provider reports it.
public struct ProviderPayment: Sendable, Hashable {
  public enum Status: Sendable, Hashable {
    /// Authorized, held for capture.
    case requiresCapture(capturableMinorUnits: Int64)
    /// Captured.
    case succeeded(capturedMinorUnits: Int64)
    /// Not final yet (asynchronous settlement); the provider will say later.
    case processing
    case canceled
    case failed(FailureReason)
  }

  public let providerPaymentID: String
  public let status: Status

  public init(providerPaymentID: String, status: Status) {
    self.providerPaymentID = providerPaymentID
    self.status = status
  }
}

public struct ProviderRefund: Sendable, Hashable {
  public enum Status: Sendable, Hashable {
    case pending
    case succeeded
    case failed(String)
  }

  public let providerRefundID: String
  public let status: Status

  public init(providerRefundID: String, status: Status) {
    self.providerRefundID = providerRefundID
    self.status = status
  }
}

/// Why a provider call did not produce an answer Tender can act on.
public enum ProviderError: Error, Sendable, Hashable {
  /// No attempt of this call can have been acted on (no connection could be made, or the
  /// provider rate-limited every attempt). Says nothing about earlier calls.
  case unreachable(String)
  /// The outcome is unknown (timeout, connection lost after sending, repeated 5xx): the operation
  /// must be resolved later with the same idempotency key.
  case outcomeUnknown(String)
  /// The provider refused the request itself (4xx other than a decline): retrying will not help.
  case rejected(status: Int, code: String, message: String)
}

extension ProviderError {
  /// The provider's code for a refusal of the request; "unknown" for failures without one.
  public var code: String {
    if case .rejected(_, let code, _) = self { return code }
    return "unknown"
  }
}
