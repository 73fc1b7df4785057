public import Foundation
public import Logging
import Synchronization
public import TenderCore

/// CreateRefund over the ports: the amount is reserved with the pending refund in one
/// transaction, the provider asked exactly once under a derived key, and the refund settled with
/// the stored answer in another; the completer drives the same steps.
public struct RefundOperations: Sendable {
  let runner: KeyedOperationRunner
  let refunds: any RefundStore
  /// The store's two-statement path for new keyed refunds, when it has one.
  let creation: (any KeyedRefundCreation)?
  let payments: any PaymentStore
  let provider: any PaymentProvider
  /// CreateRefund's answer: the refund as settled.
  let answer: @Sendable (RefundRecord) throws -> StoredResponse
  /// A refusal by Tender's own rules, stored as the key's answer.
  let refusal: @Sendable (DomainError) throws -> StoredResponse
  /// The time a record is stamped with, at the precision the store keeps.
  let now: @Sendable () -> Date
  let logger: Logger

  public init(
    runner: KeyedOperationRunner,
    refunds: any RefundStore,
    payments: any PaymentStore,
    provider: any PaymentProvider,
    answer: @escaping @Sendable (RefundRecord) throws -> StoredResponse,
    refusal: @escaping @Sendable (DomainError) throws -> StoredResponse,
    now: @escaping @Sendable () -> Date,
    logger: Logger
  ) {
    self.runner = runner
    self.refunds = refunds
    self.creation = refunds as? any KeyedRefundCreation
    self.payments = payments
    self.provider = provider
    self.answer = answer
    self.refusal = refusal
    self.now = now
    self.logger = logger
  }

  /// Claims `request`'s key and refunds `draft` exactly once. `.open` carries the pending refund
  /// while the provider's outcome is unknown (its amount stays reserved).
  public func create(_ draft: RefundDraft, request: IdempotencyRequest) async throws -> KeyedOutcome<RefundRecord> {
    // A new key and a payment that allows the refund as read: the key claimed with the refund,
    // its reservation and the provider call's record in one statement.
    if let creation = self.creation, let (refund, payment, requestID) = try await self.claim(draft, request, creation) {
      try CrashPoints.reach("create_refund.refund_created")
      let owner = KeyOwner(merchant: request.merchant, key: request.key, token: 1)
      return try await self.runner.owning(owner) {
        try await self.send(refund, owner: owner, history: .nothingSent, payment: payment, begun: requestID)
      }
    }
    return try await self.runner.run(request) { record in
      let merchant = request.merchant
      if let existing = record.refundID, let refund = try await self.refunds.refund(existing, merchant: merchant) {
        return try await self.send(refund, owner: record.owner, history: record.history)
      }
      let refund: RefundRecord
      do {
        guard
          let (created, _) = try await self.refunds.create(
            draft, step: IdempotencyStep(owner: record.owner, point: .refundCreated))
        else {
          // Nothing was written: the key is freed rather than bound to a payment that does not exist.
          try await self.runner.idempotency.release(record.owner)
          throw PaymentOperations.notFound(draft.paymentID)
        }
        refund = created
        try CrashPoints.reach("create_refund.refund_created")
      } catch let error as DomainError where error.kind != .notFound {
        // The payment's state refuses the refund (not captured, nothing left): a stored answer.
        let stored = try self.refusal(error)
        try await self.runner.idempotency.finish(record.owner, response: stored)
        return .answered(stored, replayed: false)
      }
      return try await self.send(refund, owner: record.owner, history: record.history)
    }
  }

  /// The fast path's first statement: nil (nothing written) when the payment is unknown, refuses
  /// the refund by the domain's rules, has nothing to refund at the provider, or changed since it
  /// was read, or when the key exists: the general path then answers each of these as before.
  func claim(
    _ draft: RefundDraft, _ request: IdempotencyRequest, _ creation: any KeyedRefundCreation
  ) async throws -> (RefundRecord, PaymentRecord, Int64)? {
    guard let payment = try await self.payments.payment(draft.paymentID, merchant: draft.merchantID),
      payment.providerPaymentID != nil
    else { return nil }
    var ledger = payment.ledger
    guard let amount = try? ledger.reserveRefund(minorUnits: draft.amountMinorUnits) else { return nil }
    let created = self.now()
    let refund = RefundRecord(
      id: draft.id, merchantID: draft.merchantID, paymentID: draft.paymentID, amount: amount, status: .pending,
      reason: draft.reason, failureMessage: nil, metadata: draft.metadata, providerRefundID: nil,
      createTime: created, updateTime: created
    )
    let call = Self.call(refund, key: request.key)
    // "Everything left" is what was left when read; an explicit amount only needs to fit.
    let expected = draft.amountMinorUnits == nil ? payment.ledger.refundedMinorUnits : nil
    guard
      let requestID = try await creation.insertClaiming(
        refund, expectRefunded: expected, request: request, lockFor: self.runner.lock, call: call)
    else { return nil }
    return (refund, payment, requestID)
  }

  /// The provider call that makes `refund`, under the key's derived provider key.
  static func call(_ refund: RefundRecord, key: String) -> ProviderCall {
    ProviderCall(
      merchant: refund.merchantID, payment: refund.paymentID, refund: refund.id, operation: .createRefund,
      providerKey: KeyedOperationRunner.providerKey(merchant: refund.merchantID, key: key, operation: .createRefund),
      amountMinorUnits: refund.amount.minorUnits
    )
  }

  /// The completer's steps for an interrupted CreateRefund; false when it never created a refund.
  public func resume(_ record: IdempotencyRecord) async throws -> Bool {
    guard let id = record.refundID, let refund = try await self.refunds.refund(id, merchant: record.request.merchant)
    else { return false }
    do {
      _ = try await self.send(refund, owner: record.owner, history: record.history)
    } catch KeyedRefusal.providerUnavailable {
      // Failed, nothing having reached the provider, and the key freed: resolved too.
    }
    return true
  }

  /// Asks the provider to refund a pending refund (again: the derived key makes a repeat an
  /// answer, never a second refund) and applies what the outcome policy decides.
  /// - Parameters:
  ///   - payment: the refund's payment when the caller has just read it.
  ///   - begun: the id of the call's record when the caller already wrote it.
  func send(
    _ refund: RefundRecord, owner: KeyOwner, history: ProviderHistory, payment read: PaymentRecord? = nil,
    begun: Int64? = nil
  ) async throws -> KeyedOutcome<RefundRecord> {
    let merchant = refund.merchantID
    guard refund.status == .pending else {
      // Settled already: store its answer; the provider is not asked again.
      return try await self.settle(refund, owner: owner, outcome: nil, call: nil)
    }
    var payment = read
    if payment == nil { payment = try await self.payments.payment(refund.paymentID, merchant: merchant) }
    guard let providerPaymentID = payment?.providerPaymentID else {
      return try await self.settle(
        refund, owner: owner,
        outcome: .failed(providerRefundID: nil, message: "the payment has no provider payment to refund"), call: nil)
    }
    let call = Self.call(refund, key: owner.key)
    let provider = self.provider
    let amount = refund.amount.minorUnits
    let exchange = try await self.runner.callProvider(owner: owner, history: history, call: call, begun: begun) {
      await .of { () async throws(ProviderError) in
        try await provider.createRefund(
          providerPaymentID: providerPaymentID, amountMinorUnits: amount, idempotencyKey: call.providerKey)
      }
    }
    try CrashPoints.reach("create_refund.provider_answered")

    switch (exchange.next, exchange.result) {
    case (.wait, _):
      // The provider may have refunded: the refund stays PENDING (its amount reserved) and the
      // key locked until a retry or the completer asks again under the same provider key.
      try await self.runner.calls.end(exchange.ended(.unknown), owner: owner)
      return .open(refund)
    case (.failForSure, _):
      // Nothing of this refund ever reached the provider: it fails, its amount is refundable
      // again and the key is freed, in one transaction.
      let step = IdempotencyStep<RefundRecord>(
        owner: owner, action: .release, providerCall: exchange.ended(.unreachable))
      _ = try await self.refunds.settle(
        refund.id, merchant: merchant,
        outcome: .failed(providerRefundID: nil, message: "the payment provider could not be reached"), step: step)
      try CrashPoints.reach("create_refund.failed_for_sure")
      throw KeyedRefusal.providerUnavailable
    case (.apply, .failure(let error)):
      self.logger.error("provider refused the refund", metadata: ["refund_id": "\(refund.id)", "problem": "\(error)"])
      let code = error.code
      return try await self.settle(
        refund, owner: owner,
        outcome: .failed(providerRefundID: nil, message: "the payment provider refused the refund (\(code))"),
        call: exchange.ended(.failed)
      )
    case (.apply, .success(let answer)):
      if let creation = self.creation,
        let answered = try await self.finishPending(refund, answer, owner: owner, exchange: exchange, creation)
      {
        return answered
      }
      switch answer.status {
      case .succeeded:
        return try await self.settle(
          refund, owner: owner, outcome: .succeeded(providerRefundID: answer.providerRefundID),
          call: exchange.ended(.succeeded))
      case .pending:
        return try await self.settle(
          refund, owner: owner, outcome: .pending(providerRefundID: answer.providerRefundID),
          call: exchange.ended(.sent))
      case .failed(let message):
        return try await self.settle(
          refund, owner: owner, outcome: .failed(providerRefundID: answer.providerRefundID, message: message),
          call: exchange.ended(.declined)
        )
      }
    }
  }

  /// The provider refunded or took the refund on: one statement writes the refund, its event, the
  /// call's ending and the answer, as long as the refund is still pending and the key ours. Nil,
  /// with nothing written, otherwise (and for a refund the provider failed, whose amount is
  /// released on the payment): the general settlement then decides.
  func finishPending(
    _ refund: RefundRecord, _ answer: ProviderRefund, owner: KeyOwner, exchange: ProviderExchange<ProviderRefund>,
    _ creation: any KeyedRefundCreation
  ) async throws -> KeyedOutcome<RefundRecord>? {
    var final = refund
    final.providerRefundID = answer.providerRefundID
    let ended: ProviderCallEnd
    switch answer.status {
    case .succeeded:
      try final.succeeded()
      ended = exchange.ended(.succeeded)
    case .pending:
      ended = exchange.ended(.sent)
    case .failed:
      return nil
    }
    final.updateTime = self.now()
    let response = try self.answer(final)
    guard try await creation.finishPending(final, owner: owner, response: response, call: ended) else { return nil }
    return .answered(response, replayed: false)
  }

  /// Settles the refund (unless it is final already: `outcome` nil), records the call's ending
  /// and stores the answer made from the refund as written, in one fenced transaction.
  func settle(
    _ refund: RefundRecord, owner: KeyOwner, outcome: RefundOutcome?, call: ProviderCallEnd?
  ) async throws -> KeyedOutcome<RefundRecord> {
    let written = Mutex<StoredResponse?>(nil)
    let answer = self.answer
    let step = IdempotencyStep<RefundRecord>(
      owner: owner,
      action: .finish({ record in
        let response = try answer(record)
        written.withLock { $0 = response }
        return response
      }), providerCall: call)
    guard try await self.refunds.settle(refund.id, merchant: refund.merchantID, outcome: outcome, step: step) != nil,
      let stored = written.withLock({ $0 })
    else {
      throw DomainError(
        .notFound, reason: "REFUND_NOT_FOUND", field: "refund_id", message: "no such refund")
    }
    return .answered(stored, replayed: false)
  }
}
