import Crypto
import Foundation
public import GRPCCore
import GRPCProtobuf
public import Logging
import ServiceContextModule
import ServiceLifecycle
import SwiftProtobuf
import Synchronization
public import TenderAPI
public import TenderCore

/// `tender.payments.v1.PaymentService`: CreatePayment, CapturePayment and CancelPayment (keyed,
/// exactly-once towards the provider), GetPayment, ListPayments and WatchPayments.
public struct PaymentRPCService: Tender_Payments_V1_PaymentService.ServiceProtocol {
  private let payments: any PaymentStore
  /// The store's two-statement path for new keyed payments, when it has one.
  private let creation: (any KeyedPaymentCreation)?
  /// Where provider calls that write nothing else are recorded, when the store keeps them.
  private let calls: (any ProviderCallLog)?
  private let idempotency: any IdempotencyStore
  private let provider: any PaymentProvider
  private let logger: Logger
  private let pageTokens: PageTokens
  /// How long a request owns its idempotency key before the completer may take over.
  private let lock: Duration
  /// How often WatchPayments looks for new events.
  private let watchInterval: Duration

  public init(
    payments: any PaymentStore,
    idempotency: any IdempotencyStore,
    provider: any PaymentProvider,
    pageTokens: PageTokens,
    logger: Logger,
    lock: Duration = .seconds(30),
    watchInterval: Duration = .milliseconds(250)
  ) {
    self.watchInterval = watchInterval
    self.payments = payments
    self.creation = payments as? any KeyedPaymentCreation
    self.calls = payments as? any ProviderCallLog
    self.idempotency = idempotency
    self.provider = provider
    self.pageTokens = pageTokens
    self.logger = logger
    self.lock = lock
  }

  static let createMethod = Tender_Payments_V1_PaymentService.Method.CreatePayment.descriptor.fullyQualifiedMethod

  // MARK: CreatePayment

  public func createPayment(
    request: ServerRequest<Tender_Payments_V1_CreatePaymentRequest>,
    context: ServerContext
  ) async throws -> ServerResponse<Tender_Payments_V1_CreatePaymentResponse> {
    let caller = try AuthRPCService.caller()
    let merchant = MerchantID(unchecked: caller.merchantID)
    let key = try IdempotencyKeys.key(request.metadata)
    // Everything is validated before the key is recorded: a refused request stores nothing.
    let draft = try Self.validate(request.message, merchant: merchant)
    let fingerprint = try IdempotencyKeys.fingerprint(method: Self.createMethod, message: request.message)
    let keyed = IdempotencyRequest(merchant: merchant, key: key, method: Self.createMethod, fingerprint: fingerprint)

    // A new key: claimed together with the payment in one statement.
    if let creation = self.creation, try await creation.insertClaiming(draft, request: keyed, lockFor: self.lock) != nil {
      CrashPoints.reach("create_payment.payment_created")
      return try await self.authorize(draft, key: key)
    }
    let payment: PaymentRecord
    switch try await self.idempotency.claim(keyed, lockFor: self.lock) {
    case .replay(let stored):
      return try IdempotencyKeys.replay(stored)
    case .reused:
      throw IdempotencyKeys.reused
    case .inUse:
      throw IdempotencyKeys.inUse
    case .started(let record), .resumed(let record):
      CrashPoints.reach("create_payment.claimed")
      if let existing = record.paymentID, let stored = try await self.payments.payment(existing, merchant: merchant) {
        payment = stored
      } else {
        payment = draft
        _ = try await self.payments.insert(payment, step: IdempotencyStep(merchant: merchant, key: key, point: .paymentCreated))
        CrashPoints.reach("create_payment.payment_created")
      }
    }
    return try await self.authorize(payment, key: key)
  }

  /// Calls the provider for `payment` under a key derived from the caller's, applies the outcome
  /// and stores the response, in one transaction.
  func authorize(_ payment: PaymentRecord, key: String) async throws -> ServerResponse<Tender_Payments_V1_CreatePaymentResponse> {
    let merchant = payment.merchantID
    let providerKey = IdempotencyKeys.providerKey(merchant: merchant, key: key, operation: ProviderCall.Operation.createPayment.rawValue)
    let call = { (outcome: ProviderCall.Outcome) in
      ProviderCall(merchant: merchant, payment: payment.id, operation: .createPayment, providerKey: providerKey, outcome: outcome)
    }
    let outcome: ProviderPayment
    do {
      outcome = try await self.provider.createPayment(
        ProviderPaymentRequest(amount: payment.ledger.amount, captureMethod: payment.ledger.captureMethod, paymentMethod: payment.paymentMethod, paymentID: payment.id),
        idempotencyKey: providerKey
      )
    } catch .outcomeUnknown(let problem) {
      // The provider may have acted: keep the payment PROCESSING and the key locked; a retry after
      // the lock expires, or the completer, asks again with the same provider key.
      self.logger.warning("provider outcome unknown; payment stays processing", metadata: ["payment_id": "\(payment.id)", "problem": "\(problem)"])
      try await self.calls?.record(call(.unknown))
      return ServerResponse(message: .with { $0.payment = PaymentMessages.payment(payment) })
    } catch .unreachable(let problem) {
      // Nothing reached the provider: the payment fails as a provider error and the key is freed,
      // so the same request can be tried again.
      self.logger.error("provider unreachable", metadata: ["payment_id": "\(payment.id)", "problem": "\(problem)"])
      _ = try await self.payments.update(payment.id, merchant: merchant, step: nil) { record in
        if record.ledger.status == .processing { try record.ledger.providerFailed(.providerError) }
      }
      try await self.calls?.record(call(.failed))
      try await self.idempotency.release(merchant: merchant, key: key)
      throw IdempotencyKeys.providerUnavailable
    } catch .rejected(let status, let code, _) {
      self.logger.error("provider rejected the request", metadata: ["payment_id": "\(payment.id)", "status": "\(status)", "code": "\(code)"])
      let step = IdempotencyStep<PaymentRecord>(merchant: merchant, key: key, point: .finished, providerCall: call(.failed)) { _ in
        try IdempotencyKeys.stored(APIError.status(.internalError, reason: "PROVIDER_REJECTED", message: "the payment provider refused the request"))
      }
      _ = try await self.payments.update(payment.id, merchant: merchant, step: step) { record in
        if record.ledger.status == .processing { try record.ledger.providerFailed(.providerError) }
      }
      throw APIError.status(.internalError, reason: "PROVIDER_REJECTED", message: "the payment provider refused the request")
    }

    CrashPoints.reach("create_payment.provider_answered")

    if let creation = self.creation, payment.ledger.status == .processing {
      // One statement, as long as the payment is still processing (nobody else finished it).
      var final = payment
      final.providerPaymentID = outcome.providerPaymentID
      try Self.apply(outcome, to: &final)
      final.updateTime = StoredTime.now()
      let response = try Self.storedResponse(for: final)
      if try await creation.finishProcessing(final, key: key, response: response, call: call(Self.callOutcome(outcome))) {
        return try IdempotencyKeys.response(response, replayed: false)
      }
    }

    // The answer is serialized once, inside the transaction that stores it, and sent as stored:
    // serializing again could order map entries differently.
    let written = Mutex<StoredResponse?>(nil)
    let step = IdempotencyStep<PaymentRecord>(merchant: merchant, key: key, point: .finished, providerCall: call(Self.callOutcome(outcome))) { record in
      let response = try Self.storedResponse(for: record)
      written.withLock { $0 = response }
      return response
    }
    guard try await self.payments.update(payment.id, merchant: merchant, step: step, { record in
      record.providerPaymentID = outcome.providerPaymentID
      try Self.apply(outcome, to: &record)
    }) != nil else {
      throw APIError.status(.internalError, reason: "PAYMENT_VANISHED", message: "the payment could not be found after authorization")
    }
    // The first answer is made from the stored bytes too, so it equals every replay.
    guard let stored = written.withLock({ $0 }) else {
      throw APIError.status(.internalError, reason: "RESPONSE_NOT_STORED", message: "the payment's answer was not stored")
    }
    return try IdempotencyKeys.response(stored, replayed: false)
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

  /// The provider's answer to a new payment, applied to it while it is still processing.
  static func apply(_ outcome: ProviderPayment, to record: inout PaymentRecord) throws {
    guard record.ledger.status == .processing else { return }
    switch outcome.status {
    case .requiresCapture, .succeeded: try record.ledger.providerAuthorized()
    case .failed(let reason): try record.ledger.providerFailed(reason)
    case .processing: break
    case .canceled: try record.ledger.providerFailed(.providerError)
    }
  }

  /// What a finished CreatePayment answers: the payment, or CARD_DECLINED naming it.
  static func storedResponse(for record: PaymentRecord) throws -> StoredResponse {
    if record.ledger.status == .failed, let reason = record.ledger.failureReason {
      return try IdempotencyKeys.stored(
        APIError.status(
          .failedPrecondition,
          reason: reason == .providerError ? "PROVIDER_ERROR" : "CARD_DECLINED",
          message: "the payment was declined (\(reason.rawValue))",
          metadata: ["payment_id": record.id.rawValue, "decline_reason": reason.rawValue]
        )
      )
    }
    let message = Tender_Payments_V1_CreatePaymentResponse.with { $0.payment = PaymentMessages.payment(record) }
    return StoredResponse(code: 0, message: try IdempotencyKeys.serialize(message), details: [])
  }

  static func validate(_ message: Tender_Payments_V1_CreatePaymentRequest, merchant: MerchantID) throws -> PaymentRecord {
    guard message.hasAmount else {
      throw APIError.invalidArgument(field: "amount", reason: "FIELD_REQUIRED", message: "amount is required")
    }
    let amount: Money
    do {
      amount = try Money.validated(minorUnits: message.amount.amountMinor, currencyCode: message.amount.currency, field: "amount")
    } catch {
      throw APIError.domain(error)
    }
    let captureMethod: CaptureMethod
    switch message.captureMethod {
    case .automatic: captureMethod = .automatic
    case .manual: captureMethod = .manual
    default:
      throw APIError.invalidArgument(field: "capture_method", reason: "FIELD_REQUIRED", message: "capture_method must be AUTOMATIC or MANUAL")
    }
    let token = message.paymentMethodToken
    guard !token.isEmpty else {
      throw APIError.invalidArgument(field: "payment_method_token", reason: "FIELD_REQUIRED", message: "payment_method_token is required")
    }
    guard token.utf8.count <= 255, token.unicodeScalars.allSatisfy({ $0.isASCII && $0.value > 0x20 && $0.value < 0x7F }) else {
      throw APIError.invalidArgument(field: "payment_method_token", reason: "FIELD_INVALID", message: "payment_method_token must be a provider token of at most 255 printable characters")
    }
    try FreeText.check(token, field: "payment_method_token", limit: 255)
    try FreeText.check(message.description_p, field: "description", limit: 1000)
    try FreeText.check(message.customerReference, field: "customer_reference", limit: 255)
    try FreeText.checkMetadata(message.metadata)
    let now = StoredTime.now()
    return PaymentRecord(
      id: .random(),
      merchantID: merchant,
      ledger: PaymentLedger(amount: amount, captureMethod: captureMethod),
      paymentMethod: token,
      customerReference: message.customerReference,
      description: message.description_p,
      metadata: message.metadata,
      providerPaymentID: nil,
      createTime: now,
      updateTime: now
    )
  }

  // MARK: GetPayment

  public func getPayment(
    request: ServerRequest<Tender_Payments_V1_GetPaymentRequest>,
    context: ServerContext
  ) async throws -> ServerResponse<Tender_Payments_V1_GetPaymentResponse> {
    let caller = try AuthRPCService.caller()
    let id = try PaymentMessages.paymentID(request.message.paymentID)
    guard let record = try await self.payments.payment(id, merchant: MerchantID(unchecked: caller.merchantID)) else {
      throw APIError.status(.notFound, reason: "PAYMENT_NOT_FOUND", message: "no payment \(id.rawValue)", metadata: ["field": "payment_id"])
    }
    return ServerResponse(message: .with { $0.payment = PaymentMessages.payment(record) })
  }

  // MARK: CapturePayment, CancelPayment

  public func capturePayment(
    request: ServerRequest<Tender_Payments_V1_CapturePaymentRequest>,
    context: ServerContext
  ) async throws -> ServerResponse<Tender_Payments_V1_CapturePaymentResponse> {
    guard request.message.amountMinor >= 0 else {
      throw APIError.invalidArgument(field: "amount_minor", reason: "AMOUNT_INVALID", message: "amount_minor must be zero (everything authorized) or positive")
    }
    let amount = request.message.amountMinor == 0 ? nil : request.message.amountMinor
    return try await self.changePayment(
      request: request,
      paymentID: request.message.paymentID,
      method: Tender_Payments_V1_PaymentService.Method.CapturePayment.descriptor.fullyQualifiedMethod,
      operation: .capturePayment,
      check: { ledger in _ = try ledger.capture(amount) },
      callProvider: { payment, providerKey async throws(ProviderError) -> ProviderPayment in
        guard let providerID = payment.providerPaymentID else {
          throw ProviderError.rejected(status: 0, code: "no_provider_payment", message: "the payment has no provider id")
        }
        return try await self.provider.capturePayment(
          providerPaymentID: providerID, amountMinorUnits: amount ?? payment.ledger.capturableMinorUnits, idempotencyKey: providerKey
        )
      },
      apply: { ledger, outcome in
        guard case .succeeded(let captured) = outcome.status else {
          throw DomainError(.failedPrecondition, reason: "PROVIDER_REFUSED_CAPTURE", message: "the provider did not capture the payment")
        }
        _ = try ledger.capture(captured)
      },
      respond: { record in Tender_Payments_V1_CapturePaymentResponse.with { $0.payment = PaymentMessages.payment(record) } }
    )
  }

  public func cancelPayment(
    request: ServerRequest<Tender_Payments_V1_CancelPaymentRequest>,
    context: ServerContext
  ) async throws -> ServerResponse<Tender_Payments_V1_CancelPaymentResponse> {
    try FreeText.check(request.message.reason, field: "reason", limit: 500)
    return try await self.changePayment(
      request: request,
      paymentID: request.message.paymentID,
      method: Tender_Payments_V1_PaymentService.Method.CancelPayment.descriptor.fullyQualifiedMethod,
      operation: .cancelPayment,
      check: { ledger in try ledger.cancel() },
      callProvider: { payment, providerKey async throws(ProviderError) -> ProviderPayment in
        guard let providerID = payment.providerPaymentID else {
          throw ProviderError.rejected(status: 0, code: "no_provider_payment", message: "the payment has no provider id")
        }
        return try await self.provider.cancelPayment(providerPaymentID: providerID, idempotencyKey: providerKey)
      },
      apply: { ledger, outcome in
        guard case .canceled = outcome.status else {
          throw DomainError(.failedPrecondition, reason: "PROVIDER_REFUSED_CANCEL", message: "the provider did not cancel the payment")
        }
        try ledger.cancel()
      },
      respond: { record in Tender_Payments_V1_CancelPaymentResponse.with { $0.payment = PaymentMessages.payment(record) } }
    )
  }

  /// A keyed change of an existing payment through the provider (capture, cancel): claim the key,
  /// check the domain rules, ask the provider under a derived key, apply its answer and store the
  /// response in one transaction. Domain refusals are stored answers too; an unreachable provider
  /// frees the key.
  private func changePayment<Input: SwiftProtobuf.Message, Output: SwiftProtobuf.Message>(
    request: ServerRequest<Input>,
    paymentID: String,
    method: String,
    operation: ProviderCall.Operation,
    check: @Sendable (inout PaymentLedger) throws -> Void,
    callProvider: (PaymentRecord, String) async throws(ProviderError) -> ProviderPayment,
    apply: @escaping @Sendable (inout PaymentLedger, ProviderPayment) throws -> Void,
    respond: @escaping @Sendable (PaymentRecord) -> Output
  ) async throws -> ServerResponse<Output> {
    let caller = try AuthRPCService.caller()
    let merchant = MerchantID(unchecked: caller.merchantID)
    let key = try IdempotencyKeys.key(request.metadata)
    let id = try PaymentMessages.paymentID(paymentID)
    let keyed = IdempotencyRequest(merchant: merchant, key: key, method: method, fingerprint: try IdempotencyKeys.fingerprint(method: method, message: request.message))
    switch try await self.idempotency.claim(keyed, lockFor: self.lock) {
    case .replay(let stored): return try IdempotencyKeys.replay(stored)
    case .reused: throw IdempotencyKeys.reused
    case .inUse: throw IdempotencyKeys.inUse
    case .started, .resumed:
      break
    }
    guard let payment = try await self.payments.payment(id, merchant: merchant) else {
      // Nothing happened: the key is freed rather than bound to a payment that does not exist.
      try await self.idempotency.release(merchant: merchant, key: key)
      throw APIError.status(.notFound, reason: "PAYMENT_NOT_FOUND", message: "no payment \(id.rawValue)", metadata: ["field": "payment_id"])
    }
    var preview = payment.ledger
    do {
      try check(&preview)
    } catch let error as DomainError {
      let stored = try IdempotencyKeys.stored(APIError.domain(error))
      try await self.idempotency.finish(merchant: merchant, key: key, response: stored)
      return try IdempotencyKeys.response(stored, replayed: false)
    }

    let providerKey = IdempotencyKeys.providerKey(merchant: merchant, key: key, operation: operation.rawValue)
    let call = { (outcome: ProviderCall.Outcome) in
      ProviderCall(merchant: merchant, payment: id, operation: operation, providerKey: providerKey, outcome: outcome)
    }
    let outcome: ProviderPayment
    do {
      outcome = try await callProvider(payment, providerKey)
    } catch .unreachable {
      try await self.calls?.record(call(.failed))
      try await self.idempotency.release(merchant: merchant, key: key)
      throw IdempotencyKeys.providerUnavailable
    } catch .outcomeUnknown {
      // The lock expires and a retry with the same key asks the provider again (same derived key).
      try await self.calls?.record(call(.unknown))
      throw APIError.status(.unavailable, reason: "PROVIDER_OUTCOME_UNKNOWN", message: "the payment provider did not answer in time; retry with the same idempotency-key")
    } catch .rejected(_, let code, _) {
      try await self.calls?.record(call(.failed))
      let stored = try IdempotencyKeys.stored(APIError.status(.failedPrecondition, reason: "PROVIDER_REFUSED", message: "the payment provider refused (\(code))"))
      try await self.idempotency.finish(merchant: merchant, key: key, response: stored)
      return try IdempotencyKeys.response(stored, replayed: false)
    }

    let written = Mutex<StoredResponse?>(nil)
    let step = IdempotencyStep<PaymentRecord>(merchant: merchant, key: key, point: .finished, providerCall: call(.succeeded)) { record in
      let response = StoredResponse(code: 0, message: try IdempotencyKeys.serialize(respond(record)), details: [])
      written.withLock { $0 = response }
      return response
    }
    do {
      _ = try await self.payments.update(id, merchant: merchant, step: step) { record in
        try apply(&record.ledger, outcome)
      }
    } catch let error as DomainError {
      // Another request changed the payment first (e.g. capture racing cancel).
      try await self.calls?.record(call(.succeeded))
      let stored = try IdempotencyKeys.stored(APIError.domain(error))
      try await self.idempotency.finish(merchant: merchant, key: key, response: stored)
      return try IdempotencyKeys.response(stored, replayed: false)
    }
    guard let stored = written.withLock({ $0 }) else {
      throw APIError.status(.internalError, reason: "RESPONSE_NOT_STORED", message: "the answer was not stored")
    }
    return try IdempotencyKeys.response(stored, replayed: false)
  }

  public func listPayments(
    request: ServerRequest<Tender_Payments_V1_ListPaymentsRequest>,
    context: ServerContext
  ) async throws -> ServerResponse<Tender_Payments_V1_ListPaymentsResponse> {
    let caller = try AuthRPCService.caller()
    let merchant = MerchantID(unchecked: caller.merchantID)
    let message = request.message
    guard (0...100).contains(message.pageSize) else {
      throw APIError.invalidArgument(field: "page_size", reason: "FIELD_INVALID", message: "page_size must be from 1 to 100 (0 means 20)")
    }
    var statuses: [PaymentStatus] = []
    for (index, status) in message.statuses.enumerated() {
      switch status {
      case .processing: statuses.append(.processing)
      case .requiresCapture: statuses.append(.requiresCapture)
      case .succeeded: statuses.append(.succeeded)
      case .failed: statuses.append(.failed)
      case .canceled: statuses.append(.canceled)
      default:
        throw APIError.invalidArgument(field: "statuses[\(index)]", reason: "FIELD_INVALID", message: "statuses[\(index)] must be a payment status")
      }
    }
    try FreeText.check(message.customerReference, field: "customer_reference", limit: 255)
    let start = message.hasCreateTimeStart ? message.createTimeStart.date : nil
    let end = message.hasCreateTimeEnd ? message.createTimeEnd.date : nil
    if let start, let end, start >= end {
      throw APIError.invalidArgument(field: "create_time_end", reason: "FIELD_INVALID", message: "create_time_end must be after create_time_start")
    }
    // The filter is part of the token: a token cannot be used with another filter.
    var filterOnly = message
    filterOnly.pageSize = 0
    filterOnly.pageToken = ""
    let filterHash = try IdempotencyKeys.fingerprint(method: "list_payments", message: filterOnly)
    var cursor: PageCursor?
    if !message.pageToken.isEmpty {
      guard let opened = self.pageTokens.open(message.pageToken, merchant: merchant, filter: filterHash) else {
        throw APIError.invalidArgument(field: "page_token", reason: "PAGE_TOKEN_INVALID", message: "page_token is not a token of this list")
      }
      cursor = opened
    }
    let page = try await self.payments.list(
      merchant: merchant,
      filter: PaymentFilter(statuses: statuses, customerReference: message.customerReference.isEmpty ? nil : message.customerReference, createdFrom: start, createdBefore: end),
      pageSize: message.pageSize == 0 ? 20 : Int(message.pageSize),
      after: cursor
    )
    return ServerResponse(
      message: .with {
        $0.payments = page.items.map(PaymentMessages.payment)
        $0.nextPageToken = page.next.map { self.pageTokens.seal($0, merchant: merchant, filter: filterHash) } ?? ""
      }
    )
  }

  public func watchPayments(
    request: ServerRequest<Tender_Payments_V1_WatchPaymentsRequest>,
    context: ServerContext
  ) async throws -> StreamingServerResponse<Tender_Payments_V1_WatchPaymentsResponse> {
    let caller = try AuthRPCService.caller()
    let merchant = MerchantID(unchecked: caller.merchantID)
    let start: EventPosition
    if request.message.cursor.isEmpty {
      start = try await self.payments.currentPosition()
    } else {
      guard let position = self.pageTokens.openCursor(request.message.cursor, merchant: merchant) else {
        throw APIError.invalidArgument(field: "cursor", reason: "CURSOR_INVALID", message: "cursor is not a cursor of this merchant's events")
      }
      start = position
    }
    let payments = self.payments
    let tokens = self.pageTokens
    let interval = self.watchInterval
    return StreamingServerResponse { writer in
      var after = start
      // Events become readable in position order (see PaymentStore.events), so reading after the
      // last position sent never skips one; the stream ends cleanly when the server drains.
      while !Task.isCancelled && !Task.isShuttingDownGracefully {
        let events = try await payments.events(merchant: merchant, after: after, limit: 100)
        for event in events {
          let payment = try await payments.payment(event.paymentID, merchant: merchant)
          try await writer.write(
            .with {
              $0.cursor = tokens.sealCursor(event.position, merchant: merchant)
              $0.eventType = PaymentMessages.eventType(event.type)
              $0.paymentID = event.paymentID.rawValue
              $0.refundID = event.refundID?.rawValue ?? ""
              if let payment { $0.payment = PaymentMessages.payment(payment) }
              $0.eventTime = Google_Protobuf_Timestamp(date: event.createTime)
            }
          )
          after = event.position
        }
        if events.count < 100 {
          try? await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
        }
      }
      return [:]
    }
  }
}

extension PaymentRPCService {
  /// Finishes keyed CreatePayment operations left in the middle (a crash, a provider timeout)
  /// once their lock has expired: the provider is asked again under the same derived key (so it
  /// answers, never charges twice), the outcome is applied and the answer stored. Records that
  /// never got past `started` wrote nothing and are released.
  /// Returns how many records it resolved.
  public func completeStale(limit: Int = 50) async throws -> Int {
    try await self.idempotency.takeOverStale(method: Self.createMethod, limit: limit, lockFor: self.lock) { claimed in
      guard let paymentID = claimed.paymentID, let payment = try await self.payments.payment(paymentID, merchant: claimed.request.merchant) else {
        return false
      }
      // Declines and provider refusals end as stored answers: the operation is finished either way.
      _ = try? await self.authorize(payment, key: claimed.request.key)
      self.logger.notice("completed an interrupted payment", metadata: ["payment_id": "\(payment.id)"])
      return true
    }
  }
}

/// Checks of free text: length, and never anything that looks like a card number.
enum FreeText {
  static func check(_ text: String, field: String, limit: Int) throws {
    guard text.count <= limit else {
      throw APIError.invalidArgument(field: field, reason: "FIELD_TOO_LONG", message: "\(field) is longer than \(limit) characters")
    }
    if CardNumbers.containsCardNumber(text) { throw APIError.domain(.cardDataRejected(field: field)) }
  }

  static func checkMetadata(_ metadata: [String: String]) throws {
    guard metadata.count <= 50 else {
      throw APIError.invalidArgument(field: "metadata", reason: "METADATA_TOO_LARGE", message: "metadata holds at most 50 entries")
    }
    for (key, value) in metadata.sorted(by: { $0.key < $1.key }) {
      guard (1...40).contains(key.count) else {
        throw APIError.invalidArgument(field: "metadata", reason: "METADATA_TOO_LARGE", message: "metadata keys are 1 to 40 characters")
      }
      try self.check(key, field: "metadata", limit: 40)
      try self.check(value, field: "metadata[\(key)]", limit: 500)
    }
  }
}

/// Domain ↔ wire for payments.
enum PaymentMessages {
  static func paymentID(_ text: String) throws -> PaymentID {
    guard let id = PaymentID(text) else {
      throw APIError.invalidArgument(field: "payment_id", reason: text.isEmpty ? "FIELD_REQUIRED" : "FIELD_INVALID", message: "payment_id must be a payment id (pay_…)")
    }
    return id
  }

  static func eventType(_ type: PaymentEventType) -> Tender_Payments_V1_PaymentEventType {
    switch type {
    case .paymentCreated: return .paymentCreated
    case .paymentRequiresCapture: return .paymentRequiresCapture
    case .paymentSucceeded: return .paymentSucceeded
    case .paymentFailed: return .paymentFailed
    case .paymentCanceled: return .paymentCanceled
    case .refundCreated: return .refundCreated
    case .refundSucceeded: return .refundSucceeded
    case .refundFailed: return .refundFailed
    }
  }

  static func payment(_ record: PaymentRecord) -> Tender_Payments_V1_Payment {
    var message = Tender_Payments_V1_Payment()
    message.paymentID = record.id.rawValue
    message.merchantID = record.merchantID.rawValue
    message.amount = .with {
      $0.amountMinor = record.ledger.amount.minorUnits
      $0.currency = record.ledger.amount.currency.code
    }
    message.amountCapturableMinor = record.ledger.capturableMinorUnits
    message.amountCapturedMinor = record.ledger.capturedMinorUnits
    message.amountRefundedMinor = record.ledger.refundedMinorUnits
    switch record.ledger.status {
    case .processing: message.status = .processing
    case .requiresCapture: message.status = .requiresCapture
    case .succeeded: message.status = .succeeded
    case .failed: message.status = .failed
    case .canceled: message.status = .canceled
    }
    message.captureMethod = record.ledger.captureMethod == .automatic ? .automatic : .manual
    message.paymentMethodToken = record.paymentMethod
    message.description_p = record.description
    message.customerReference = record.customerReference
    message.metadata = record.metadata
    if let reason = record.ledger.failureReason {
      switch reason {
      case .cardDeclined: message.failureReason = .cardDeclined
      case .insufficientFunds: message.failureReason = .insufficientFunds
      case .expiredCard: message.failureReason = .expiredCard
      case .fraudSuspected: message.failureReason = .fraudSuspected
      case .providerError: message.failureReason = .providerError
      case .authorizationExpired: message.failureReason = .authorizationExpired
      }
    }
    message.providerPaymentID = record.providerPaymentID ?? ""
    message.createTime = Google_Protobuf_Timestamp(date: record.createTime)
    message.updateTime = Google_Protobuf_Timestamp(date: record.updateTime)
    return message
  }
}
