import Foundation
public import GRPCCore
import GRPCProtobuf
public import Logging
import SwiftProtobuf
import Synchronization
public import TenderAPI
public import TenderCore

/// `tender.refunds.v1.RefundService`. CreateRefund reserves the amount on the payment and records
/// the pending refund in one transaction (so concurrent refunds can never exceed the captured
/// money), asks the provider under a key derived from the caller's, and settles the refund and
/// stores the answer in a second transaction; the completer finishes what a crash or a timeout
/// interrupted.
public struct RefundRPCService: Tender_Refunds_V1_RefundService.ServiceProtocol {
  private let refunds: any RefundStore
  private let payments: any PaymentStore
  private let idempotency: any IdempotencyStore
  private let provider: any PaymentProvider
  private let pageTokens: PageTokens
  private let logger: Logger
  private let lock: Duration
  private let calls: (any ProviderCallLog)?

  public init(
    refunds: any RefundStore,
    payments: any PaymentStore,
    idempotency: any IdempotencyStore,
    provider: any PaymentProvider,
    pageTokens: PageTokens,
    logger: Logger,
    lock: Duration = .seconds(30)
  ) {
    self.refunds = refunds
    self.payments = payments
    self.calls = payments as? any ProviderCallLog
    self.idempotency = idempotency
    self.provider = provider
    self.pageTokens = pageTokens
    self.logger = logger
    self.lock = lock
  }

  static let createMethod = Tender_Refunds_V1_RefundService.Method.CreateRefund.descriptor.fullyQualifiedMethod

  // MARK: CreateRefund

  public func createRefund(
    request: ServerRequest<Tender_Refunds_V1_CreateRefundRequest>,
    context: ServerContext
  ) async throws -> ServerResponse<Tender_Refunds_V1_CreateRefundResponse> {
    let caller = try AuthRPCService.caller()
    let merchant = MerchantID(unchecked: caller.merchantID)
    let key = try IdempotencyKeys.key(request.metadata)
    let draft = try Self.validate(request.message, merchant: merchant)
    let keyed = IdempotencyRequest(
      merchant: merchant, key: key, method: Self.createMethod,
      fingerprint: try IdempotencyKeys.fingerprint(method: Self.createMethod, message: request.message)
    )
    let record: IdempotencyRecord
    switch try await self.idempotency.claim(keyed, lockFor: self.lock) {
    case .replay(let stored): return try IdempotencyKeys.replay(stored)
    case .reused: throw IdempotencyKeys.reused
    case .inUse: throw IdempotencyKeys.inUse
    case .started(let claimed), .resumed(let claimed): record = claimed
    }

    if let existing = record.refundID, let refund = try await self.refunds.refund(existing, merchant: merchant) {
      return try await self.send(refund, key: key)
    }
    let refund: RefundRecord
    do {
      guard let (created, _) = try await self.refunds.create(draft, step: IdempotencyStep(merchant: merchant, key: key, point: .refundCreated)) else {
        // Nothing was written: the key is freed rather than bound to a payment that does not exist.
        try await self.idempotency.release(merchant: merchant, key: key)
        throw APIError.status(.notFound, reason: "PAYMENT_NOT_FOUND", message: "no payment \(draft.paymentID.rawValue)", metadata: ["field": "payment_id"])
      }
      refund = created
      CrashPoints.reach("create_refund.refund_created")
    } catch let error as DomainError {
      // The payment's state refuses the refund (not captured, nothing left): a stored answer.
      let stored = try IdempotencyKeys.stored(APIError.domain(error))
      try await self.idempotency.finish(merchant: merchant, key: key, response: stored)
      return try IdempotencyKeys.response(stored, replayed: false)
    }
    return try await self.send(refund, key: key)
  }

  /// Asks the provider to refund a pending refund (again: the derived key makes a repeat an answer,
  /// never a second refund), settles it and stores the answer in one transaction.
  func send(_ refund: RefundRecord, key: String) async throws -> ServerResponse<Tender_Refunds_V1_CreateRefundResponse> {
    let merchant = refund.merchantID
    let providerKey = IdempotencyKeys.providerKey(merchant: merchant, key: key, operation: ProviderCall.Operation.createRefund.rawValue)
    let call = { (outcome: ProviderCall.Outcome) in
      ProviderCall(merchant: merchant, payment: refund.paymentID, refund: refund.id, operation: .createRefund, providerKey: providerKey, outcome: outcome)
    }
    var called: ProviderCall?
    let outcome: RefundOutcome
    if refund.status != .pending {
      outcome = .pending(providerRefundID: refund.providerRefundID ?? "")
    } else if let payment = try await self.payments.payment(refund.paymentID, merchant: merchant), let providerPaymentID = payment.providerPaymentID {
      do {
        let answer = try await self.provider.createRefund(
          providerPaymentID: providerPaymentID,
          amountMinorUnits: refund.amount.minorUnits,
          idempotencyKey: providerKey
        )
        CrashPoints.reach("create_refund.provider_answered")
        switch answer.status {
        case .succeeded:
          outcome = .succeeded(providerRefundID: answer.providerRefundID)
          called = call(.succeeded)
        case .pending:
          outcome = .pending(providerRefundID: answer.providerRefundID)
          called = call(.sent)
        case .failed(let message):
          outcome = .failed(providerRefundID: answer.providerRefundID, message: message)
          called = call(.declined)
        }
      } catch .outcomeUnknown(let problem) {
        // The provider may have refunded: the refund stays pending and the key locked; a retry
        // after the lock expires, or the completer, asks again under the same provider key.
        self.logger.warning("provider outcome unknown; refund stays pending", metadata: ["refund_id": "\(refund.id)", "problem": "\(problem)"])
        try await self.calls?.record(call(.unknown))
        return ServerResponse(message: .with { $0.refund = RefundMessages.refund(refund) })
      } catch .unreachable(let problem) {
        // Nothing reached the provider: the refund fails, its amount is refundable again, and the
        // key is freed so the same request can be tried again.
        self.logger.error("provider unreachable", metadata: ["refund_id": "\(refund.id)", "problem": "\(problem)"])
        let failed = IdempotencyStep<RefundRecord>(merchant: merchant, key: key, point: .refundCreated, providerCall: call(.failed))
        _ = try await self.refunds.settle(refund.id, merchant: merchant, outcome: .failed(providerRefundID: nil, message: "the payment provider could not be reached"), step: failed)
        try await self.idempotency.release(merchant: merchant, key: key)
        throw IdempotencyKeys.providerUnavailable
      } catch .rejected(let status, let code, _) {
        self.logger.error("provider rejected the refund", metadata: ["refund_id": "\(refund.id)", "status": "\(status)", "code": "\(code)"])
        outcome = .failed(providerRefundID: nil, message: "the payment provider refused the refund (\(code))")
        called = call(.failed)
      }
    } else {
      outcome = .failed(providerRefundID: nil, message: "the payment has no provider payment to refund")
    }

    // Serialized once, inside the transaction that stores it, and sent as stored.
    let written = Mutex<StoredResponse?>(nil)
    let step = IdempotencyStep<RefundRecord>(merchant: merchant, key: key, point: .finished, providerCall: called) { record in
      let response = StoredResponse(code: 0, message: try IdempotencyKeys.serialize(Tender_Refunds_V1_CreateRefundResponse.with { $0.refund = RefundMessages.refund(record) }), details: [])
      written.withLock { $0 = response }
      return response
    }
    guard try await self.refunds.settle(refund.id, merchant: merchant, outcome: outcome, step: step) != nil,
      let stored = written.withLock({ $0 })
    else {
      throw APIError.status(.internalError, reason: "RESPONSE_NOT_STORED", message: "the refund's answer was not stored")
    }
    return try IdempotencyKeys.response(stored, replayed: false)
  }

  static func validate(_ message: Tender_Refunds_V1_CreateRefundRequest, merchant: MerchantID) throws -> RefundDraft {
    let paymentID = try PaymentMessages.paymentID(message.paymentID)
    guard message.amountMinor >= 0 else {
      throw APIError.invalidArgument(field: "amount_minor", reason: "AMOUNT_INVALID", message: "amount_minor must be zero (everything refundable) or positive")
    }
    guard message.amountMinor <= Money.defaultMaximumMinorUnits else {
      throw APIError.invalidArgument(field: "amount_minor", reason: "AMOUNT_INVALID", message: "amount_minor must be at most \(Money.defaultMaximumMinorUnits)")
    }
    let reason: RefundReason?
    switch message.reason {
    case .unspecified: reason = nil
    case .requestedByCustomer: reason = .requestedByCustomer
    case .duplicate: reason = .duplicate
    case .fraudulent: reason = .fraudulent
    default:
      throw APIError.invalidArgument(field: "reason", reason: "FIELD_INVALID", message: "reason must be a refund reason")
    }
    try FreeText.checkMetadata(message.metadata)
    return RefundDraft(
      id: .random(),
      merchantID: merchant,
      paymentID: paymentID,
      amountMinorUnits: message.amountMinor == 0 ? nil : message.amountMinor,
      reason: reason,
      metadata: message.metadata
    )
  }

  // MARK: Reads

  public func getRefund(
    request: ServerRequest<Tender_Refunds_V1_GetRefundRequest>,
    context: ServerContext
  ) async throws -> ServerResponse<Tender_Refunds_V1_GetRefundResponse> {
    let caller = try AuthRPCService.caller()
    let text = request.message.refundID
    guard let id = RefundID(text) else {
      throw APIError.invalidArgument(field: "refund_id", reason: text.isEmpty ? "FIELD_REQUIRED" : "FIELD_INVALID", message: "refund_id must be a refund id (re_…)")
    }
    guard let refund = try await self.refunds.refund(id, merchant: MerchantID(unchecked: caller.merchantID)) else {
      throw APIError.status(.notFound, reason: "REFUND_NOT_FOUND", message: "no refund \(id.rawValue)", metadata: ["field": "refund_id"])
    }
    return ServerResponse(message: .with { $0.refund = RefundMessages.refund(refund) })
  }

  public func listRefunds(
    request: ServerRequest<Tender_Refunds_V1_ListRefundsRequest>,
    context: ServerContext
  ) async throws -> ServerResponse<Tender_Refunds_V1_ListRefundsResponse> {
    let caller = try AuthRPCService.caller()
    let merchant = MerchantID(unchecked: caller.merchantID)
    let message = request.message
    guard (0...100).contains(message.pageSize) else {
      throw APIError.invalidArgument(field: "page_size", reason: "FIELD_INVALID", message: "page_size must be from 1 to 100 (0 means 20)")
    }
    var payment: PaymentID?
    if !message.paymentID.isEmpty {
      let id = try PaymentMessages.paymentID(message.paymentID)
      // Another merchant's payment is not found, not an empty list.
      guard try await self.payments.payment(id, merchant: merchant) != nil else {
        throw APIError.status(.notFound, reason: "PAYMENT_NOT_FOUND", message: "no payment \(id.rawValue)", metadata: ["field": "payment_id"])
      }
      payment = id
    }
    var filterOnly = message
    filterOnly.pageSize = 0
    filterOnly.pageToken = ""
    let filterHash = try IdempotencyKeys.fingerprint(method: "list_refunds", message: filterOnly)
    var cursor: PageCursor?
    if !message.pageToken.isEmpty {
      guard let opened = self.pageTokens.open(message.pageToken, merchant: merchant, filter: filterHash) else {
        throw APIError.invalidArgument(field: "page_token", reason: "PAGE_TOKEN_INVALID", message: "page_token is not a token of this list")
      }
      cursor = opened
    }
    let page = try await self.refunds.list(merchant: merchant, payment: payment, pageSize: message.pageSize == 0 ? 20 : Int(message.pageSize), after: cursor)
    return ServerResponse(
      message: .with {
        $0.refunds = page.items.map(RefundMessages.refund)
        $0.nextPageToken = page.next.map { self.pageTokens.seal($0, merchant: merchant, filter: filterHash) } ?? ""
      }
    )
  }
}

extension RefundRPCService {
  /// Finishes keyed CreateRefund operations left in the middle once their lock has expired: a
  /// pending refund is sent to the provider again under the same derived key (an answer, never a
  /// second refund) and settled; records that never created a refund are released. Returns how
  /// many records it resolved.
  public func completeStale(limit: Int = 50) async throws -> Int {
    try await self.idempotency.takeOverStale(method: Self.createMethod, limit: limit, lockFor: self.lock) { claimed in
      guard let refundID = claimed.refundID, let refund = try await self.refunds.refund(refundID, merchant: claimed.request.merchant) else {
        return false
      }
      // An unreachable provider fails the refund and frees the key: resolved as well.
      _ = try? await self.send(refund, key: claimed.request.key)
      self.logger.notice("completed an interrupted refund", metadata: ["refund_id": "\(refund.id)"])
      return true
    }
  }
}

/// Domain ↔ wire for refunds.
enum RefundMessages {
  static func refund(_ record: RefundRecord) -> Tender_Refunds_V1_Refund {
    var message = Tender_Refunds_V1_Refund()
    message.refundID = record.id.rawValue
    message.paymentID = record.paymentID.rawValue
    message.merchantID = record.merchantID.rawValue
    message.amount = .with {
      $0.amountMinor = record.amount.minorUnits
      $0.currency = record.amount.currency.code
    }
    switch record.status {
    case .pending: message.status = .pending
    case .succeeded: message.status = .succeeded
    case .failed: message.status = .failed
    }
    switch record.reason {
    case nil: message.reason = .unspecified
    case .requestedByCustomer: message.reason = .requestedByCustomer
    case .duplicate: message.reason = .duplicate
    case .fraudulent: message.reason = .fraudulent
    }
    message.failureMessage = record.failureMessage ?? ""
    message.providerRefundID = record.providerRefundID ?? ""
    message.metadata = record.metadata
    message.createTime = Google_Protobuf_Timestamp(date: record.createTime)
    message.updateTime = Google_Protobuf_Timestamp(date: record.updateTime)
    return message
  }
}
