public import Foundation

/// A payment as Tender stores and returns it.
public struct PaymentRecord: Sendable, Hashable {
  public let id: PaymentID
  public let merchantID: MerchantID
  public var ledger: PaymentLedger
  /// The provider's token for the payment method (e.g. `pm_…`); never card data.
  public let paymentMethod: String
  public let customerReference: String
  public let description: String
  public let metadata: [String: String]
  public var providerPaymentID: String?
  public let createTime: Date
  public var updateTime: Date

  public init(
    id: PaymentID,
    merchantID: MerchantID,
    ledger: PaymentLedger,
    paymentMethod: String,
    customerReference: String,
    description: String,
    metadata: [String: String],
    providerPaymentID: String?,
    createTime: Date,
    updateTime: Date
  ) {
    self.id = id
    self.merchantID = merchantID
    self.ledger = ledger
    self.paymentMethod = paymentMethod
    self.customerReference = customerReference
    self.description = description
    self.metadata = metadata
    self.providerPaymentID = providerPaymentID
    self.createTime = createTime
    self.updateTime = updateTime
  }
}

/// What happened to a payment (or one of its refunds), in the merchant's event feed.
public enum PaymentEventType: String, Sendable, Hashable, CaseIterable {
  case paymentCreated = "payment_created"
  case paymentRequiresCapture = "payment_requires_capture"
  case paymentSucceeded = "payment_succeeded"
  case paymentFailed = "payment_failed"
  case paymentCanceled = "payment_canceled"
  case refundCreated = "refund_created"
  case refundSucceeded = "refund_succeeded"
  case refundFailed = "refund_failed"

  /// The event recorded when a payment enters `status`.
  public static func entering(_ status: PaymentStatus) -> PaymentEventType {
    switch status {
    case .processing: return .paymentCreated
    case .requiresCapture: return .paymentRequiresCapture
    case .succeeded: return .paymentSucceeded
    case .failed: return .paymentFailed
    case .canceled: return .paymentCanceled
    }
  }
}

/// Where an event sits in the feed: its writing transaction, then its id. Readers see events only
/// once every older transaction has finished, so positions become visible in order and a reader
/// resuming after a position misses nothing.
public struct EventPosition: Sendable, Hashable, Comparable, CustomStringConvertible {
  /// The writing transaction's 64-bit id.
  public let transaction: Int64
  public let id: Int64

  public init(transaction: Int64, id: Int64) {
    self.transaction = transaction
    self.id = id
  }

  /// Before every event.
  public static let start = EventPosition(transaction: 0, id: 0)

  public static func < (lhs: EventPosition, rhs: EventPosition) -> Bool {
    (lhs.transaction, lhs.id) < (rhs.transaction, rhs.id)
  }

  public var description: String { "\(self.transaction).\(self.id)" }
}

public struct PaymentEvent: Sendable, Hashable {
  /// Position in the feed: strictly increasing in the order readers see events.
  public let position: EventPosition
  public let merchantID: MerchantID
  public let paymentID: PaymentID
  public let refundID: RefundID?
  public let type: PaymentEventType
  public let fromStatus: PaymentStatus?
  public let toStatus: PaymentStatus?
  public let amountMinorUnits: Int64?
  public let createTime: Date

  public init(
    position: EventPosition, merchantID: MerchantID, paymentID: PaymentID, refundID: RefundID?, type: PaymentEventType,
    fromStatus: PaymentStatus?, toStatus: PaymentStatus?, amountMinorUnits: Int64?, createTime: Date
  ) {
    self.position = position
    self.merchantID = merchantID
    self.paymentID = paymentID
    self.refundID = refundID
    self.type = type
    self.fromStatus = fromStatus
    self.toStatus = toStatus
    self.amountMinorUnits = amountMinorUnits
    self.createTime = createTime
  }
}

/// Which payments a list returns, newest first.
public struct PaymentFilter: Sendable, Hashable {
  /// Any of these statuses; empty means all.
  public var statuses: [PaymentStatus]
  public var customerReference: String?
  /// Created at or after / strictly before.
  public var createdFrom: Date?
  public var createdBefore: Date?

  public init(
    statuses: [PaymentStatus] = [], customerReference: String? = nil, createdFrom: Date? = nil,
    createdBefore: Date? = nil
  ) {
    self.statuses = statuses
    self.customerReference = customerReference
    self.createdFrom = createdFrom
    self.createdBefore = createdBefore
  }
}

/// Where the next page starts: just after this (create time, id) in newest-first order.
public struct PageCursor: Sendable, Hashable {
  /// Microseconds since 1970, PostgreSQL's own precision, so the position is exact.
  public let createTimeMicroseconds: Int64
  public let id: String

  public init(createTimeMicroseconds: Int64, id: String) {
    self.createTimeMicroseconds = createTimeMicroseconds
    self.id = id
  }
}

public struct Page<Item: Sendable>: Sendable {
  public let items: [Item]
  /// Nil on the last page.
  public let next: PageCursor?

  public init(items: [Item], next: PageCursor?) {
    self.items = items
    self.next = next
  }
}

/// Moves a keyed operation's idempotency record in the same transaction as the payment or refund
/// write it describes, so the record never claims more (or less) than the database holds. Every
/// step is fenced: it writes nothing, and the whole transaction rolls back with `FencedOut`, once
/// its owner has lost the key.
public struct IdempotencyStep<Record: Sendable>: Sendable {
  public enum Action: Sendable {
    /// The operation reached this recovery point.
    case advance(RecoveryPoint)
    /// Done: the response to store, made from the record (payment or refund) as written.
    case finish(@Sendable (Record) throws -> StoredResponse)
    /// The operation ended without an answer to keep (nothing reached the provider): the key is
    /// freed for a new attempt.
    case release
  }

  public let owner: KeyOwner
  public let action: Action
  /// The provider call whose ending this step records, in the same transaction.
  public let providerCall: ProviderCallEnd?

  public init(owner: KeyOwner, action: Action, providerCall: ProviderCallEnd? = nil) {
    self.owner = owner
    self.action = action
    self.providerCall = providerCall
  }

  public init(owner: KeyOwner, point: RecoveryPoint) {
    precondition(point != .finished, "a finished step stores a response")
    self.init(owner: owner, action: .advance(point))
  }
}

/// How a recorded provider call ended (its row was written before the call was made).
public struct ProviderCallEnd: Sendable, Hashable {
  public let requestID: Int64
  public let outcome: ProviderCall.Outcome
  /// The provider's id of the object, when its answer named one.
  public init(requestID: Int64, outcome: ProviderCall.Outcome) {
    self.requestID = requestID
    self.outcome = outcome
  }
}

/// One call to the payment provider, kept for audit and reconciliation: with the provider's
/// idempotency key, every call can be matched with the provider's own records. A call is recorded
/// before it is made (outcome `unknown`), so a crash in the middle leaves a trace, and its
/// ending is written with the change it causes.
public struct ProviderCall: Sendable, Hashable {
  public enum Operation: String, Sendable, Hashable {
    case createPayment = "create_payment"
    case capturePayment = "capture_payment"
    case cancelPayment = "cancel_payment"
    case createRefund = "create_refund"
  }

  public enum Outcome: String, Sendable, Hashable {
    /// Accepted, not final yet (asynchronous settlement, a pending refund).
    case sent
    case succeeded
    /// The provider said no (a decline, a failed refund).
    case declined
    /// The provider refused the request itself.
    case failed
    /// No answer (yet): the provider may or may not have acted.
    case unknown
    /// Nothing reached the provider.
    case unreachable
  }

  public let merchant: MerchantID
  public let payment: PaymentID
  public let refund: RefundID?
  public let operation: Operation
  /// The idempotency key the provider received.
  public let providerKey: String
  public let outcome: Outcome
  /// The amount asked for (capture, refund, payment), so an interrupted call can be repeated.
  public let amountMinorUnits: Int64?

  public init(
    merchant: MerchantID, payment: PaymentID, refund: RefundID? = nil, operation: Operation, providerKey: String,
    outcome: Outcome = .unknown,
    amountMinorUnits: Int64? = nil
  ) {
    self.merchant = merchant
    self.payment = payment
    self.refund = refund
    self.operation = operation
    self.providerKey = providerKey
    self.outcome = outcome
    self.amountMinorUnits = amountMinorUnits
  }
}

/// The audit log of provider calls.
public protocol ProviderCallLog: Sendable {
  /// Records `call` as started (outcome `unknown`) before it is made, marks the operation's
  /// record as having reached out to the provider and extends its lock, in one statement;
  /// returns the row's id. Throws `FencedOut` (writing nothing) when `owner` lost the key.
  func begin(_ call: ProviderCall, owner: KeyOwner, lockFor: Duration) async throws -> Int64
  /// Records how a call ended when nothing else changes with it (the answer did not come).
  func end(_ call: ProviderCallEnd, owner: KeyOwner) async throws
  /// The latest call made under `providerKey`.
  func latest(merchant: MerchantID, providerKey: String) async throws -> ProviderCall?
}

/// Durable payments. Every read and write is scoped to one merchant: another merchant's id is
/// simply not found.
public protocol PaymentStore: Sendable {
  /// Inserts a new payment and its `payment_created` event in one transaction, moving `step`'s
  /// idempotency record along in the same transaction.
  func insert(_ payment: PaymentRecord, step: IdempotencyStep<PaymentRecord>?) async throws -> PaymentEvent
  func payment(_ id: PaymentID, merchant: MerchantID) async throws -> PaymentRecord?
  /// Locks the payment, lets `change` apply domain rules to it, stores the result, the event of
  /// any status change and `step`, in one transaction. Nil when there is no such payment; the
  /// domain's refusal is rethrown with nothing written.
  func update(
    _ id: PaymentID,
    merchant: MerchantID,
    step: IdempotencyStep<PaymentRecord>?,
    _ change: @escaping @Sendable (inout PaymentRecord) throws -> Void
  ) async throws -> (PaymentRecord, PaymentEvent?)?
  func list(
    merchant: MerchantID, filter: PaymentFilter, pageSize: Int, after: PageCursor?
  ) async throws -> Page<PaymentRecord>
  /// The merchant's events (every merchant's when nil) after `position` that are safe to read
  /// (every older transaction has finished), in position order, at most `limit`.
  func events(merchant: MerchantID?, after position: EventPosition, limit: Int) async throws -> [PaymentEvent]
  /// A position before every event still to come ("now"): reading after it yields what is written
  /// from now on (and possibly a few events committed just before).
  func currentPosition() async throws -> EventPosition
}

extension PaymentStore {
  public func insert(_ payment: PaymentRecord) async throws -> PaymentEvent {
    try await self.insert(payment, step: nil)
  }

  public func update(
    _ id: PaymentID,
    merchant: MerchantID,
    _ change: @escaping @Sendable (inout PaymentRecord) throws -> Void
  ) async throws -> (PaymentRecord, PaymentEvent?)? {
    try await self.update(id, merchant: merchant, step: nil, change)
  }
}

/// The fast path of a new keyed CreatePayment: two statements, each its own transaction, where
/// the general path takes a claim, an insert, the provider call's record and a locked update.
public protocol KeyedPaymentCreation: Sendable {
  /// Claims `request`'s key at recovery point `payment_created` (owner token 1), inserts
  /// `payment` (processing) and its event, and records `call` as started, in one statement.
  /// Nil, with nothing written, when the key already exists: the caller claims it the general
  /// way. Returns the event and the provider call's row id.
  func insertClaiming(
    _ payment: PaymentRecord, request: IdempotencyRequest, lockFor: Duration, call: ProviderCall
  ) async throws -> (PaymentEvent, Int64)?
  /// Writes `payment` (the provider's outcome applied, `updateTime` from the operations' clock), its
  /// status event when the status changed, the call's ending, and `response` as the key's
  /// finished answer, in one statement — only if the stored payment is still processing and
  /// `owner` still owns the key. False, with nothing written, otherwise.
  func finishProcessing(
    _ payment: PaymentRecord, owner: KeyOwner, response: StoredResponse, call: ProviderCallEnd
  ) async throws -> Bool
}
