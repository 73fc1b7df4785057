public import Foundation

/// Where a refund is in its life: pending until the provider answers, then final.
public enum RefundStatus: String, Sendable, Hashable, CaseIterable {
  /// Sent to the provider; its amount is reserved against the payment's captured money.
  case pending
  case succeeded
  /// The provider could not refund; the reservation was released.
  case failed
}

public enum RefundReason: String, Sendable, Hashable, CaseIterable {
  case requestedByCustomer = "requested_by_customer"
  case duplicate
  case fraudulent
}

/// A refund as Tender stores and returns it.
public struct RefundRecord: Sendable, Hashable {
  public let id: RefundID
  public let merchantID: MerchantID
  public let paymentID: PaymentID
  public let amount: Money
  public private(set) var status: RefundStatus
  public let reason: RefundReason?
  /// The provider's reason when failed.
  public private(set) var failureMessage: String?
  public let metadata: [String: String]
  public var providerRefundID: String?
  public let createTime: Date
  public var updateTime: Date

  public init(
    id: RefundID,
    merchantID: MerchantID,
    paymentID: PaymentID,
    amount: Money,
    status: RefundStatus,
    reason: RefundReason?,
    failureMessage: String?,
    metadata: [String: String],
    providerRefundID: String?,
    createTime: Date,
    updateTime: Date
  ) {
    self.id = id
    self.merchantID = merchantID
    self.paymentID = paymentID
    self.amount = amount
    self.status = status
    self.reason = reason
    self.failureMessage = failureMessage
    self.metadata = metadata
    self.providerRefundID = providerRefundID
    self.createTime = createTime
    self.updateTime = updateTime
  }

  /// The provider returned the money.
  public mutating func succeeded() throws(DomainError) {
    guard self.status == .pending else { throw .refundAlreadyFinal(self.status) }
    self.status = .succeeded
  }

  /// The provider could not refund. The caller releases the amount on the payment's ledger in the
  /// same transaction.
  public mutating func failed(_ message: String) throws(DomainError) {
    guard self.status == .pending else { throw .refundAlreadyFinal(self.status) }
    self.status = .failed
    self.failureMessage = message.isEmpty ? "refund failed" : message
  }
}

/// What a new refund asks for, before the payment is locked and the amount resolved.
public struct RefundDraft: Sendable, Hashable {
  public let id: RefundID
  public let merchantID: MerchantID
  public let paymentID: PaymentID
  /// Nil: everything still refundable when the payment is locked.
  public let amountMinorUnits: Int64?
  public let reason: RefundReason?
  public let metadata: [String: String]

  public init(
    id: RefundID, merchantID: MerchantID, paymentID: PaymentID, amountMinorUnits: Int64?, reason: RefundReason?,
    metadata: [String: String]
  ) {
    precondition(amountMinorUnits.map { $0 > 0 } ?? true, "a refund's amount is positive")
    self.id = id
    self.merchantID = merchantID
    self.paymentID = paymentID
    self.amountMinorUnits = amountMinorUnits
    self.reason = reason
    self.metadata = metadata
  }
}

/// How the provider's answer ends a pending refund.
public enum RefundOutcome: Sendable, Hashable {
  case succeeded(providerRefundID: String)
  /// Still pending at the provider; it will say later.
  case pending(providerRefundID: String)
  case failed(providerRefundID: String?, message: String)
}

/// Durable refunds. Every read and write is scoped to one merchant.
public protocol RefundStore: Sendable {
  /// Locks the payment, reserves the refund's amount on its ledger (the domain refuses a refund
  /// above what is left), inserts the pending refund and its `refund_created` event and moves
  /// `step` along, in one transaction. Nil when the merchant has no such payment.
  func create(_ draft: RefundDraft, step: IdempotencyStep<RefundRecord>?) async throws -> (RefundRecord, PaymentRecord)?
  /// Applies the provider's answer to a pending refund: on failure the reservation is released on
  /// the payment; the event of the change and `step` are written in the same transaction. A
  /// refund that is already final (or `outcome` nil) is left as it is; `step` is applied anyway.
  func settle(
    _ id: RefundID, merchant: MerchantID, outcome: RefundOutcome?, step: IdempotencyStep<RefundRecord>?
  ) async throws -> RefundRecord?
  func refund(_ id: RefundID, merchant: MerchantID) async throws -> RefundRecord?
  /// The merchant's refunds (of one payment when given), newest first.
  func list(
    merchant: MerchantID, payment: PaymentID?, pageSize: Int, after: PageCursor?
  ) async throws -> Page<RefundRecord>
}

/// The fast path of a new keyed CreateRefund: two statements, each its own transaction, where
/// the general path takes a claim, a locked reservation, the provider call's record and a locked
/// settlement.
public protocol KeyedRefundCreation: Sendable {
  /// Claims `request`'s key at recovery point `refund_created` (owner token 1), reserves
  /// `refund`'s amount on its payment, inserts the pending refund and its event, and records
  /// `call` as started, in one statement. The caller has read the payment and checked the refund
  /// against its ledger; the statement reserves only while the stored payment still allows it
  /// (succeeded, the amount within what is left, and its refunded amount still `expectRefunded`
  /// when given). Nil, with nothing written, when the key already exists or the payment no longer
  /// allows the refund: the caller takes the general path. Returns the provider call's row id.
  func insertClaiming(
    _ refund: RefundRecord, expectRefunded: Int64?, request: IdempotencyRequest, lockFor: Duration,
    call: ProviderCall
  ) async throws -> Int64?
  /// Writes `refund` (pending before; now succeeded or still pending with the provider's id,
  /// `updateTime` from the operations' clock), its `refund_succeeded` event when it succeeded,
  /// the call's ending, and `response` as the key's finished answer, in one statement — only if
  /// the stored refund is still pending and `owner` still owns the key. False, with nothing
  /// written, otherwise.
  func finishPending(
    _ refund: RefundRecord, owner: KeyOwner, response: StoredResponse, call: ProviderCallEnd
  ) async throws -> Bool
}
