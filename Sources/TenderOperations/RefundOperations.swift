public import Logging
import Synchronization
public import TenderCore

/// CreateRefund over the ports: the amount is reserved with the pending refund in one
/// transaction, the provider asked exactly once under a derived key, and the refund settled with
/// the stored answer in another; the completer drives the same steps.
public struct RefundOperations: Sendable {
  let runner: KeyedOperationRunner
  let refunds: any RefundStore
  let payments: any PaymentStore
  let provider: any PaymentProvider
  /// CreateRefund's answer: the refund as settled.
  let answer: @Sendable (RefundRecord) throws -> StoredResponse
  /// A refusal by Tender's own rules, stored as the key's answer.
  let refusal: @Sendable (DomainError) throws -> StoredResponse
  let logger: Logger

  public init(
    runner: KeyedOperationRunner,
    refunds: any RefundStore,
    payments: any PaymentStore,
    provider: any PaymentProvider,
    answer: @escaping @Sendable (RefundRecord) throws -> StoredResponse,
    refusal: @escaping @Sendable (DomainError) throws -> StoredResponse,
    logger: Logger
  ) {
    self.runner = runner
    self.refunds = refunds
    self.payments = payments
    self.provider = provider
    self.answer = answer
    self.refusal = refusal
    self.logger = logger
  }

  /// Claims `request`'s key and refunds `draft` exactly once. `.open` carries the pending refund
  /// while the provider's outcome is unknown (its amount stays reserved).
  public func create(_ draft: RefundDraft, request: IdempotencyRequest) async throws -> KeyedOutcome<RefundRecord> {
    try await self.runner.run(request) { record in
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
  func send(
    _ refund: RefundRecord, owner: KeyOwner, history: ProviderHistory
  ) async throws -> KeyedOutcome<RefundRecord> {
    let merchant = refund.merchantID
    guard refund.status == .pending else {
      // Settled already: store its answer; the provider is not asked again.
      return try await self.settle(refund, owner: owner, outcome: nil, call: nil)
    }
    guard let payment = try await self.payments.payment(refund.paymentID, merchant: merchant),
      let providerPaymentID = payment.providerPaymentID
    else {
      return try await self.settle(
        refund, owner: owner,
        outcome: .failed(providerRefundID: nil, message: "the payment has no provider payment to refund"), call: nil)
    }
    let call = ProviderCall(
      merchant: merchant, payment: refund.paymentID, refund: refund.id, operation: .createRefund,
      providerKey: KeyedOperationRunner.providerKey(merchant: merchant, key: owner.key, operation: .createRefund),
      amountMinorUnits: refund.amount.minorUnits
    )
    let provider = self.provider
    let amount = refund.amount.minorUnits
    let exchange = try await self.runner.callProvider(owner: owner, history: history, call: call) {
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
