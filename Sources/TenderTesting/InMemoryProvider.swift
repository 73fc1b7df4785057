public import TenderCore

/// A payment provider in memory with the simulator's test cards, for tests of RPC behaviour:
/// an idempotency key always gets its first answer; faults are queued by the test.
public actor InMemoryProvider: PaymentProvider {
  struct Intent {
    var amount: Int64
    var status: ProviderPayment.Status
    var paymentMethod: String
    var refunded: Int64 = 0
  }

  enum Answer {
    case payment(ProviderPayment)
    case refund(ProviderRefund)
  }

  private var intents: [String: Intent] = [:]
  private var refunds: [String: ProviderRefund] = [:]
  private var answers: [String: Answer] = [:]
  private var faults: [ProviderError] = []
  private var count = 0
  /// Every call, as `operation key` (retrievals with the object's id).
  public private(set) var calls: [String] = []

  public init() {}

  /// The next calls fail with these, in order, before reaching the books (nothing is done).
  public func fail(with errors: ProviderError...) {
    self.faults += errors
  }

  /// Charges made: intents created, by status.
  public var charges: Int { self.intents.count }

  private func nextID(_ prefix: String) -> String {
    self.count += 1
    return "\(prefix)_mem\(self.count)"
  }

  private func admit(_ call: String) throws(ProviderError) {
    self.calls.append(call)
    if !self.faults.isEmpty { throw self.faults.removeFirst() }
  }

  public func createPayment(
    _ request: ProviderPaymentRequest, idempotencyKey: String
  ) async throws(ProviderError) -> ProviderPayment {
    try self.admit("create_payment \(idempotencyKey)")
    if case .payment(let payment)? = self.answers[idempotencyKey] { return payment }
    let id = self.nextID("pi")
    let amount = request.amount.minorUnits
    let status: ProviderPayment.Status
    switch request.paymentMethod {
    case "pm_card_chargeDeclined": status = .failed(.cardDeclined)
    case "pm_card_chargeDeclinedInsufficientFunds": status = .failed(.insufficientFunds)
    case "pm_card_chargeDeclinedExpiredCard": status = .failed(.expiredCard)
    case "pm_card_async": status = .processing
    default:
      status =
        request.captureMethod == .manual
        ? .requiresCapture(capturableMinorUnits: amount) : .succeeded(capturedMinorUnits: amount)
    }
    self.intents[id] = Intent(amount: amount, status: status, paymentMethod: request.paymentMethod)
    let payment = ProviderPayment(providerPaymentID: id, status: status)
    self.answers[idempotencyKey] = .payment(payment)
    return payment
  }

  public func capturePayment(
    providerPaymentID: String, amountMinorUnits: Int64, idempotencyKey: String
  ) async throws(ProviderError) -> ProviderPayment {
    try self.admit("capture_payment \(idempotencyKey)")
    if case .payment(let payment)? = self.answers[idempotencyKey] { return payment }
    guard var intent = self.intents[providerPaymentID] else {
      throw .rejected(status: 404, code: "resource_missing", message: "no such payment_intent")
    }
    guard case .requiresCapture(let capturable) = intent.status else {
      throw .rejected(
        status: 400, code: "payment_intent_unexpected_state", message: "this PaymentIntent could not be captured")
    }
    guard amountMinorUnits <= capturable else {
      throw .rejected(status: 400, code: "amount_too_large", message: "amount to capture exceeds the capturable amount")
    }
    intent.status = .succeeded(capturedMinorUnits: amountMinorUnits)
    self.intents[providerPaymentID] = intent
    let payment = ProviderPayment(providerPaymentID: providerPaymentID, status: intent.status)
    self.answers[idempotencyKey] = .payment(payment)
    return payment
  }

  public func cancelPayment(
    providerPaymentID: String, idempotencyKey: String
  ) async throws(ProviderError) -> ProviderPayment {
    try self.admit("cancel_payment \(idempotencyKey)")
    if case .payment(let payment)? = self.answers[idempotencyKey] { return payment }
    guard var intent = self.intents[providerPaymentID] else {
      throw .rejected(status: 404, code: "resource_missing", message: "no such payment_intent")
    }
    switch intent.status {
    case .requiresCapture, .processing: intent.status = .canceled
    default:
      throw .rejected(
        status: 400, code: "payment_intent_unexpected_state", message: "this PaymentIntent could not be canceled")
    }
    self.intents[providerPaymentID] = intent
    let payment = ProviderPayment(providerPaymentID: providerPaymentID, status: intent.status)
    self.answers[idempotencyKey] = .payment(payment)
    return payment
  }

  public func createRefund(
    providerPaymentID: String, amountMinorUnits: Int64, idempotencyKey: String
  ) async throws(ProviderError) -> ProviderRefund {
    try self.admit("create_refund \(idempotencyKey)")
    if case .refund(let refund)? = self.answers[idempotencyKey] { return refund }
    guard var intent = self.intents[providerPaymentID] else {
      throw .rejected(status: 404, code: "resource_missing", message: "no such payment_intent")
    }
    guard case .succeeded(let captured) = intent.status, amountMinorUnits <= captured - intent.refunded else {
      throw .rejected(status: 400, code: "amount_too_large", message: "refund exceeds what is left of the charge")
    }
    let status: ProviderRefund.Status
    switch intent.paymentMethod {
    case "pm_card_refundFail": status = .failed("declined")
    case "pm_card_refundPending": status = .pending
    default: status = .succeeded
    }
    if case .failed = status {} else { intent.refunded += amountMinorUnits }
    self.intents[providerPaymentID] = intent
    let refund = ProviderRefund(providerRefundID: self.nextID("re"), status: status)
    self.refunds[refund.providerRefundID] = refund
    self.answers[idempotencyKey] = .refund(refund)
    return refund
  }

  public func retrievePayment(providerPaymentID: String) async throws(ProviderError) -> ProviderPayment {
    try self.admit("retrieve_payment \(providerPaymentID)")
    guard let intent = self.intents[providerPaymentID] else {
      throw .rejected(status: 404, code: "resource_missing", message: "no such payment_intent")
    }
    return ProviderPayment(providerPaymentID: providerPaymentID, status: intent.status)
  }

  public func retrieveRefund(providerRefundID: String) async throws(ProviderError) -> ProviderRefund {
    try self.admit("retrieve_refund \(providerRefundID)")
    guard let refund = self.refunds[providerRefundID] else {
      throw .rejected(status: 404, code: "resource_missing", message: "no such refund")
    }
    return refund
  }
}
