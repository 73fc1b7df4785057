public import Foundation
public import Logging
import Synchronization
public import TenderCore

/// How the payment use cases' answers are written for the wire (the RPC layer supplies them, so
/// the stored bytes are exactly what callers receive).
public struct PaymentAnswers: Sendable {
  /// CreatePayment's answer for a payment the provider answered about (the payment, or its decline).
  public var created: @Sendable (PaymentRecord) throws -> StoredResponse
  /// CapturePayment's / CancelPayment's answer: the payment as changed.
  public var changed: @Sendable (ProviderCall.Operation, PaymentRecord) throws -> StoredResponse
  /// A refusal by Tender's own rules (a domain error), stored as the key's answer.
  public var refusal: @Sendable (DomainError) throws -> StoredResponse
  /// The provider refused the request itself (a 4xx): the code it gave.
  public var providerRefused: @Sendable (ProviderCall.Operation, String) throws -> StoredResponse

  public init(
    created: @escaping @Sendable (PaymentRecord) throws -> StoredResponse,
    changed: @escaping @Sendable (ProviderCall.Operation, PaymentRecord) throws -> StoredResponse,
    refusal: @escaping @Sendable (DomainError) throws -> StoredResponse,
    providerRefused: @escaping @Sendable (ProviderCall.Operation, String) throws -> StoredResponse
  ) {
    self.created = created
    self.changed = changed
    self.refusal = refusal
    self.providerRefused = providerRefused
  }
}

/// The keyed payment operations (CreatePayment, CapturePayment, CancelPayment) over the ports,
/// each as steps the runner drives, for callers and for the completer alike.
public struct PaymentOperations: Sendable {
  let runner: KeyedOperationRunner
  let payments: any PaymentStore
  /// The store's two-statement path for new keyed payments, when it has one.
  let creation: (any KeyedPaymentCreation)?
  let provider: any PaymentProvider
  let answers: PaymentAnswers
  /// The time a record is stamped with, at the precision the store keeps.
  let now: @Sendable () -> Date
  let logger: Logger

  public init(
    runner: KeyedOperationRunner, payments: any PaymentStore, provider: any PaymentProvider, answers: PaymentAnswers,
    now: @escaping @Sendable () -> Date, logger: Logger
  ) {
    self.now = now
    self.runner = runner
    self.payments = payments
    self.creation = payments as? any KeyedPaymentCreation
    self.provider = provider
    self.answers = answers
    self.logger = logger
  }

  static func notFound(_ id: PaymentID) -> DomainError {
    DomainError(.notFound, reason: "PAYMENT_NOT_FOUND", field: "payment_id", message: "no such payment")
  }

  // MARK: CreatePayment

  /// Creates `draft` (validated, processing) under `request`'s key and authorizes it at the
  /// provider exactly once. `.open` carries the payment while the provider's outcome is unknown.
  public func create(_ draft: PaymentRecord, request: IdempotencyRequest) async throws -> KeyedOutcome<PaymentRecord> {
    let merchant = request.merchant
    let call = ProviderCall(
      merchant: merchant, payment: draft.id, operation: .createPayment,
      providerKey: KeyedOperationRunner.providerKey(merchant: merchant, key: request.key, operation: .createPayment),
      amountMinorUnits: draft.ledger.amount.minorUnits
    )
    // A new key: claimed together with the payment and the provider call's record in one statement.
    if let creation = self.creation,
      let (_, requestID) = try await creation.insertClaiming(
        draft, request: request, lockFor: self.runner.lock, call: call)
    {
      try CrashPoints.reach("create_payment.payment_created")
      let owner = KeyOwner(merchant: merchant, key: request.key, token: 1)
      return try await self.runner.owning(owner) {
        try await self.authorize(draft, owner: owner, history: .nothingSent, begun: requestID)
      }
    }
    return try await self.runner.run(request) { record in
      try CrashPoints.reach("create_payment.claimed")
      let payment: PaymentRecord
      if let existing = record.paymentID, let stored = try await self.payments.payment(existing, merchant: merchant) {
        payment = stored
      } else {
        payment = draft
        _ = try await self.payments.insert(payment, step: IdempotencyStep(owner: record.owner, point: .paymentCreated))
        try CrashPoints.reach("create_payment.payment_created")
      }
      return try await self.authorize(payment, owner: record.owner, history: record.history, begun: nil)
    }
  }

  /// The completer's steps for an interrupted CreatePayment; false when it never created a payment.
  public func resumeCreate(_ record: IdempotencyRecord) async throws -> Bool {
    guard let id = record.paymentID,
      let payment = try await self.payments.payment(id, merchant: record.request.merchant)
    else { return false }
    do {
      _ = try await self.authorize(payment, owner: record.owner, history: record.history, begun: nil)
    } catch KeyedRefusal.providerUnavailable {
      // Ended as failed, nothing having reached the provider: resolved too.
    }
    return true
  }

  /// Asks the provider to authorize `payment` (processing) and applies what the outcome policy
  /// decides. A payment that is no longer processing was settled already: its answer is stored
  /// and the provider is not asked again.
  func authorize(
    _ payment: PaymentRecord, owner: KeyOwner, history: ProviderHistory, begun: Int64?
  ) async throws -> KeyedOutcome<PaymentRecord> {
    let merchant = payment.merchantID
    guard payment.ledger.status == .processing else {
      return try await self.finishUnchanged(payment.id, owner: owner, call: nil) { try self.answers.created($0) }
    }
    let call = ProviderCall(
      merchant: merchant, payment: payment.id, operation: .createPayment,
      providerKey: KeyedOperationRunner.providerKey(merchant: merchant, key: owner.key, operation: .createPayment),
      amountMinorUnits: payment.ledger.amount.minorUnits
    )
    let provider = self.provider
    let request = ProviderPaymentRequest(
      amount: payment.ledger.amount, captureMethod: payment.ledger.captureMethod, paymentMethod: payment.paymentMethod,
      paymentID: payment.id
    )
    let exchange = try await self.runner.callProvider(owner: owner, history: history, call: call, begun: begun) {
      await .of { () async throws(ProviderError) in
        try await provider.createPayment(request, idempotencyKey: call.providerKey)
      }
    }
    try CrashPoints.reach("create_payment.provider_answered")

    switch (exchange.next, exchange.result) {
    case (.wait, _):
      // The provider may have acted: the payment stays PROCESSING and the key locked until a
      // retry or the completer asks again under the same provider key.
      try await self.runner.calls.end(exchange.ended(.unknown), owner: owner)
      return .open(payment)
    case (.failForSure, _):
      // Nothing of this operation ever reached the provider: the payment fails and the key is
      // freed in one transaction, so the same request can be sent again.
      _ = try await self.payments.update(
        payment.id, merchant: merchant,
        step: IdempotencyStep(owner: owner, action: .release, providerCall: exchange.ended(.unreachable))
      ) {
        record in
        if record.ledger.status == .processing { try record.ledger.providerFailed(.providerError) }
      }
      try CrashPoints.reach("create_payment.failed_for_sure")
      throw KeyedRefusal.providerUnavailable
    case (.apply, .failure(let error)):
      // The provider refused the request itself: the payment fails with a provider error.
      self.logger.error(
        "provider refused the payment", metadata: ["payment_id": "\(payment.id)", "problem": "\(error)"])
      let code = error.code
      let refused = try self.answers.providerRefused(.createPayment, code)
      return try await self.finish(payment.id, owner: owner, call: exchange.ended(.failed), answer: { _ in refused }) {
        record in
        if record.ledger.status == .processing { try record.ledger.providerFailed(.providerError) }
      }
    case (.apply, .success(let outcome)):
      let ended = exchange.ended(Self.callOutcome(outcome))
      if let creation = self.creation {
        // One statement, as long as the payment is still processing and the key still ours.
        var final = payment
        final.providerPaymentID = outcome.providerPaymentID
        _ = ProviderState.apply(outcome.status, to: &final)
        final.updateTime = self.now()
        let response = try self.answers.created(final)
        if try await creation.finishProcessing(final, owner: owner, response: response, call: ended) {
          return .answered(response, replayed: false)
        }
      }
      return try await self.finish(payment.id, owner: owner, call: ended, answer: { try self.answers.created($0) }) {
        record in
        record.providerPaymentID = record.providerPaymentID ?? outcome.providerPaymentID
        _ = ProviderState.apply(outcome.status, to: &record)
      }
    }
  }

  /// How the provider's answer to a new payment is recorded.
  static func callOutcome(_ outcome: ProviderPayment) -> ProviderCall.Outcome {
    switch outcome.status {
    case .requiresCapture, .succeeded: return .succeeded
    case .processing: return .sent
    case .failed(let reason): return reason == .providerError ? .failed : .declined
    case .canceled: return .failed
    }
  }

  // MARK: CapturePayment, CancelPayment

  /// A keyed change of an existing payment through the provider (capture or cancel).
  public struct Change: Sendable {
    public let operation: ProviderCall.Operation
    /// Capture: the amount asked for (nil: everything authorized).
    public let amountMinorUnits: Int64?

    public static func capture(_ amountMinorUnits: Int64?) -> Change {
      Change(operation: .capturePayment, amountMinorUnits: amountMinorUnits)
    }
    public static let cancel = Change(operation: .cancelPayment, amountMinorUnits: nil)

    /// Tender's own rules, checked before the provider is asked.
    func check(_ ledger: inout PaymentLedger) throws(DomainError) {
      switch self.operation {
      case .capturePayment: _ = try ledger.capture(self.amountMinorUnits)
      default: try ledger.cancel()
      }
    }

    /// The provider's answer applied to the payment. The payment may have reached that state
    /// already (a webhook or the reconciler told Tender first): the change succeeded all the same.
    func apply(_ outcome: ProviderPayment, to record: inout PaymentRecord) throws(DomainError) {
      switch (self.operation, outcome.status) {
      case (.capturePayment, .succeeded), (.cancelPayment, .canceled):
        guard ProviderState.apply(outcome.status, to: &record) != .stale else {
          throw DomainError(
            .failedPrecondition, reason: "PAYMENT_STATE_CONFLICT",
            message: "the payment is \(record.ledger.status.name) at Tender")
        }
      case (.capturePayment, _):
        throw DomainError(
          .failedPrecondition, reason: "PROVIDER_REFUSED_CAPTURE", message: "the provider did not capture the payment")
      default:
        throw DomainError(
          .failedPrecondition, reason: "PROVIDER_REFUSED_CANCEL", message: "the provider did not cancel the payment")
      }
    }
  }

  /// Claims `request`'s key and changes payment `id` as `change` says, exactly once at the provider.
  public func change(
    _ id: PaymentID, _ change: Change, request: IdempotencyRequest
  ) async throws -> KeyedOutcome<PaymentRecord> {
    try await self.runner.run(request) { record in
      try CrashPoints.reach("\(change.operation.rawValue).claimed")
      return try await self.change(id, change, owner: record.owner, history: record.history, askedBefore: nil)
    }
  }

  /// The completer's steps for an interrupted capture or cancel: the provider is asked again
  /// exactly as before; false when it was never asked (nothing can have happened).
  public func resumeChange(_ record: IdempotencyRecord, operation: ProviderCall.Operation) async throws -> Bool {
    let providerKey = KeyedOperationRunner.providerKey(
      merchant: record.request.merchant, key: record.request.key, operation: operation)
    guard let earlier = try await self.runner.calls.latest(merchant: record.request.merchant, providerKey: providerKey)
    else { return false }
    let change = Change(operation: operation, amountMinorUnits: earlier.amountMinorUnits)
    do {
      _ = try await self.change(
        earlier.payment, change, owner: record.owner, history: record.history, askedBefore: earlier)
    } catch KeyedRefusal.providerUnavailable, KeyedRefusal.outcomeUnknown {
      // Freed, or still open for the next round.
    }
    return true
  }

  func change(
    _ id: PaymentID, _ change: Change, owner: KeyOwner, history: ProviderHistory, askedBefore: ProviderCall?
  ) async throws -> KeyedOutcome<PaymentRecord> {
    let merchant = owner.merchant
    guard let payment = try await self.payments.payment(id, merchant: merchant) else {
      // Nothing happened: the key is freed rather than bound to a payment that does not exist.
      try await self.runner.idempotency.release(owner)
      throw Self.notFound(id)
    }
    let providerKey = KeyedOperationRunner.providerKey(merchant: merchant, key: owner.key, operation: change.operation)
    var earlier = askedBefore
    if earlier == nil, history == .maybeSent {
      earlier = try await self.runner.calls.latest(merchant: merchant, providerKey: providerKey)
    }
    if earlier == nil {
      // Tender's rules first; a refusal is the key's stored answer.
      var preview = payment.ledger
      do {
        try change.check(&preview)
      } catch {
        let stored = try self.answers.refusal(error)
        try await self.runner.idempotency.finish(owner, response: stored)
        return .answered(stored, replayed: false)
      }
    }
    guard let providerPaymentID = payment.providerPaymentID else {
      let stored = try self.answers.providerRefused(change.operation, "no_provider_payment")
      try await self.runner.idempotency.finish(owner, response: stored)
      return .answered(stored, replayed: false)
    }
    // The same parameters as any earlier call under this provider key: the provider answers a
    // repeat, and would refuse other parameters under the same key.
    let amount =
      earlier?.amountMinorUnits
      ?? (change.operation == .capturePayment ? change.amountMinorUnits ?? payment.ledger.capturableMinorUnits : nil)
    let call = ProviderCall(
      merchant: merchant, payment: id, operation: change.operation, providerKey: providerKey, amountMinorUnits: amount)
    let provider = self.provider
    let exchange = try await self.runner.callProvider(owner: owner, history: history, call: call) {
      await .of { () async throws(ProviderError) in
        if change.operation == .capturePayment {
          return try await provider.capturePayment(
            providerPaymentID: providerPaymentID, amountMinorUnits: amount ?? 0, idempotencyKey: providerKey)
        }
        return try await provider.cancelPayment(providerPaymentID: providerPaymentID, idempotencyKey: providerKey)
      }
    }
    try CrashPoints.reach("\(change.operation.rawValue).provider_answered")

    switch (exchange.next, exchange.result) {
    case (.wait, _):
      try await self.runner.calls.end(exchange.ended(.unknown), owner: owner)
      throw KeyedRefusal.outcomeUnknown
    case (.failForSure, _):
      _ = try await self.payments.update(
        id, merchant: merchant,
        step: IdempotencyStep(owner: owner, action: .release, providerCall: exchange.ended(.unreachable))
      ) { _ in }
      try CrashPoints.reach("\(change.operation.rawValue).failed_for_sure")
      throw KeyedRefusal.providerUnavailable
    case (.apply, .failure(let error)):
      let code = error.code
      let refused = try self.answers.providerRefused(change.operation, code)
      return try await self.finishUnchanged(id, owner: owner, call: exchange.ended(.failed)) { _ in refused }
    case (.apply, .success(let outcome)):
      do {
        return try await self.finish(
          id, owner: owner, call: exchange.ended(.succeeded), answer: { try self.answers.changed(change.operation, $0) }
        ) { record in
          try change.apply(outcome, to: &record)
        }
      } catch let error as DomainError {
        // Another request changed the payment first (e.g. capture racing cancel).
        let stored = try self.answers.refusal(error)
        return try await self.finishUnchanged(id, owner: owner, call: exchange.ended(.succeeded)) { _ in stored }
      }
    }
  }

  // MARK: Steps

  /// Applies `change` to the payment and stores the answer made from it, with the provider
  /// call's ending, in one fenced transaction; the answer is sent from the stored bytes.
  func finish(
    _ id: PaymentID,
    owner: KeyOwner,
    call: ProviderCallEnd?,
    answer: @escaping @Sendable (PaymentRecord) throws -> StoredResponse,
    _ change: @escaping @Sendable (inout PaymentRecord) throws -> Void
  ) async throws -> KeyedOutcome<PaymentRecord> {
    // Serialized once, inside the transaction that stores it, and sent as stored.
    let written = Mutex<StoredResponse?>(nil)
    let step = IdempotencyStep<PaymentRecord>(
      owner: owner,
      action: .finish({ record in
        let response = try answer(record)
        written.withLock { $0 = response }
        return response
      }), providerCall: call)
    guard try await self.payments.update(id, merchant: owner.merchant, step: step, change) != nil,
      let stored = written.withLock({ $0 })
    else {
      throw Self.notFound(id)
    }
    return .answered(stored, replayed: false)
  }

  /// Stores an answer that changes nothing of the payment (fenced like every step).
  func finishUnchanged(
    _ id: PaymentID,
    owner: KeyOwner,
    call: ProviderCallEnd?,
    answer: @escaping @Sendable (PaymentRecord) throws -> StoredResponse
  ) async throws -> KeyedOutcome<PaymentRecord> {
    try await self.finish(id, owner: owner, call: call, answer: answer) { _ in }
  }
}
