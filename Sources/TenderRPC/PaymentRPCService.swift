import Crypto
public import Foundation
public import GRPCCore
import GRPCProtobuf
public import Logging
import ServiceContextModule
import ServiceLifecycle
import SwiftProtobuf
import Synchronization
public import TenderAPI
public import TenderCore
public import TenderAuth
public import TenderOperations

/// `tender.payments.v1.PaymentService`: CreatePayment, CapturePayment and CancelPayment (keyed,
/// exactly-once towards the provider), GetPayment, ListPayments and WatchPayments.
public struct PaymentRPCService: Tender_Payments_V1_PaymentService.ServiceProtocol {
  private let payments: any PaymentStore
  private let operations: PaymentOperations
  private let runner: KeyedOperationRunner
  private let logger: Logger
  private let pageTokens: PageTokens
  /// Every WatchPayments stream's source of new events.
  private let feed: PaymentEventFeed
  /// Whether a stream's token is still valid, asked when its standing may have changed.
  private let recheck: @Sendable (VerifiedToken) async -> AuthFailure?
  /// Open WatchPayments streams, per client and in this process.
  private let watches: OpenStreams
  /// The time new payments are stamped with.
  private let now: @Sendable () -> Date

  public init(
    payments: any PaymentStore,
    runner: KeyedOperationRunner,
    provider: any PaymentProvider,
    pageTokens: PageTokens,
    now: @escaping @Sendable () -> Date,
    logger: Logger,
    feed: PaymentEventFeed,
    recheck: @escaping @Sendable (VerifiedToken) async -> AuthFailure?,
    watchesPerClient: Int = 32,
    watchesPerProcess: Int = 1024
  ) {
    self.feed = feed
    self.recheck = recheck
    self.watches = OpenStreams(perOwner: watchesPerClient, perProcess: watchesPerProcess)
    self.now = now
    self.payments = payments
    self.runner = runner
    self.operations = PaymentOperations(
      runner: runner, payments: payments, provider: provider, answers: Self.answers, now: now, logger: logger)
    self.pageTokens = pageTokens
    self.logger = logger
  }

  static let createMethod = Tender_Payments_V1_PaymentService.Method.CreatePayment.descriptor.fullyQualifiedMethod
  static let captureMethod = Tender_Payments_V1_PaymentService.Method.CapturePayment.descriptor.fullyQualifiedMethod
  static let cancelMethod = Tender_Payments_V1_PaymentService.Method.CancelPayment.descriptor.fullyQualifiedMethod

  /// The payment operations' answers, as callers receive them.
  static let answers = PaymentAnswers(
    created: { try Self.storedResponse(for: $0) },
    changed: { operation, record in
      let payment = PaymentMessages.payment(record)
      if operation == .capturePayment {
        return StoredResponse(
          code: 0,
          message: try IdempotencyKeys.serialize(
            Tender_Payments_V1_CapturePaymentResponse.with { $0.payment = payment }), details: [])
      }
      return StoredResponse(
        code: 0,
        message: try IdempotencyKeys.serialize(Tender_Payments_V1_CancelPaymentResponse.with { $0.payment = payment }),
        details: [])
    },
    refusal: { try IdempotencyKeys.stored(APIError.domain($0)) },
    providerRefused: { operation, code in
      if operation == .createPayment {
        return try IdempotencyKeys.stored(
          APIError.status(
            .internalError, reason: "PROVIDER_REJECTED", message: "the payment provider refused the request"))
      }
      return try IdempotencyKeys.stored(
        APIError.status(
          .failedPrecondition, reason: "PROVIDER_REFUSED", message: "the payment provider refused (\(code.prefix(100)))"
        ))
    }
  )

  /// The caller's keyed request: its merchant, key and fingerprint.
  static func keyed(_ request: ServerRequest<some SwiftProtobuf.Message>, method: String) throws -> IdempotencyRequest {
    let caller = try AuthRPCService.caller()
    let key = try IdempotencyKeys.key(request.metadata)
    return IdempotencyRequest(
      merchant: caller.merchantID, key: key, method: method,
      fingerprint: try IdempotencyKeys.fingerprint(method: method, message: request.message)
    )
  }

  // MARK: CreatePayment

  public func createPayment(
    request: ServerRequest<Tender_Payments_V1_CreatePaymentRequest>,
    context: ServerContext
  ) async throws -> ServerResponse<Tender_Payments_V1_CreatePaymentResponse> {
    let keyed = try Self.keyed(request, method: Self.createMethod)
    // Everything is validated before the key is recorded: a refused request stores nothing.
    let draft = try Self.validate(request.message, merchant: keyed.merchant, now: self.now())
    return try await IdempotencyKeys.respond({ try await self.operations.create(draft, request: keyed) }) { payment in
      .with { $0.payment = PaymentMessages.payment(payment) }
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

  static func validate(
    _ message: Tender_Payments_V1_CreatePaymentRequest, merchant: MerchantID, now: Date
  ) throws -> PaymentRecord {
    guard message.hasAmount else {
      throw APIError.invalidArgument(field: "amount", reason: "FIELD_REQUIRED", message: "amount is required")
    }
    let amount: Money
    do {
      amount = try Money.validated(
        minorUnits: message.amount.amountMinor, currencyCode: message.amount.currency, field: "amount")
    } catch {
      throw APIError.domain(error)
    }
    let captureMethod: CaptureMethod
    switch message.captureMethod {
    case .automatic: captureMethod = .automatic
    case .manual: captureMethod = .manual
    default:
      throw APIError.invalidArgument(
        field: "capture_method", reason: "FIELD_REQUIRED", message: "capture_method must be AUTOMATIC or MANUAL")
    }
    let token = message.paymentMethodToken
    guard !token.isEmpty else {
      throw APIError.invalidArgument(
        field: "payment_method_token", reason: "FIELD_REQUIRED", message: "payment_method_token is required")
    }
    guard token.utf8.count <= 255, token.unicodeScalars.allSatisfy({ $0.isASCII && $0.value > 0x20 && $0.value < 0x7F })
    else {
      throw APIError.invalidArgument(
        field: "payment_method_token", reason: "FIELD_INVALID",
        message: "payment_method_token must be a provider token of at most 255 printable characters")
    }
    try FreeText.check(token, field: "payment_method_token", limit: 255)
    try FreeText.check(message.description_p, field: "description", limit: 1000)
    try FreeText.check(message.customerReference, field: "customer_reference", limit: 255)
    try FreeText.checkMetadata(message.metadata)
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
    guard let record = try await self.payments.payment(id, merchant: caller.merchantID) else {
      throw APIError.status(
        .notFound, reason: "PAYMENT_NOT_FOUND", message: "no such payment", metadata: ["field": "payment_id"])
    }
    return ServerResponse(message: .with { $0.payment = PaymentMessages.payment(record) })
  }

  // MARK: CapturePayment, CancelPayment

  public func capturePayment(
    request: ServerRequest<Tender_Payments_V1_CapturePaymentRequest>,
    context: ServerContext
  ) async throws -> ServerResponse<Tender_Payments_V1_CapturePaymentResponse> {
    guard request.message.amountMinor >= 0 else {
      throw APIError.invalidArgument(
        field: "amount_minor", reason: "AMOUNT_INVALID",
        message: "amount_minor must be zero (everything authorized) or positive")
    }
    let keyed = try Self.keyed(request, method: Self.captureMethod)
    let id = try PaymentMessages.paymentID(request.message.paymentID)
    let amount = request.message.amountMinor == 0 ? nil : request.message.amountMinor
    return try await IdempotencyKeys.respond({ try await self.operations.change(id, .capture(amount), request: keyed) })
    { payment in
      .with { $0.payment = PaymentMessages.payment(payment) }
    }
  }

  public func cancelPayment(
    request: ServerRequest<Tender_Payments_V1_CancelPaymentRequest>,
    context: ServerContext
  ) async throws -> ServerResponse<Tender_Payments_V1_CancelPaymentResponse> {
    let keyed = try Self.keyed(request, method: Self.cancelMethod)
    let id = try PaymentMessages.paymentID(request.message.paymentID)
    return try await IdempotencyKeys.respond({ try await self.operations.change(id, .cancel, request: keyed) }) {
      payment in
      .with { $0.payment = PaymentMessages.payment(payment) }
    }
  }

  public func listPayments(
    request: ServerRequest<Tender_Payments_V1_ListPaymentsRequest>,
    context: ServerContext
  ) async throws -> ServerResponse<Tender_Payments_V1_ListPaymentsResponse> {
    let caller = try AuthRPCService.caller()
    let merchant = caller.merchantID
    let message = request.message
    guard (0...100).contains(message.pageSize) else {
      throw APIError.invalidArgument(
        field: "page_size", reason: "FIELD_INVALID", message: "page_size must be from 1 to 100 (0 means 20)")
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
        throw APIError.invalidArgument(
          field: "statuses[\(index)]", reason: "FIELD_INVALID", message: "statuses[\(index)] must be a payment status")
      }
    }
    try FreeText.check(message.customerReference, field: "customer_reference", limit: 255)
    let start = message.hasCreateTimeStart ? message.createTimeStart.date : nil
    let end = message.hasCreateTimeEnd ? message.createTimeEnd.date : nil
    if let start, let end, start >= end {
      throw APIError.invalidArgument(
        field: "create_time_end", reason: "FIELD_INVALID", message: "create_time_end must be after create_time_start")
    }
    // The filter is part of the token: a token cannot be used with another filter.
    var filterOnly = message
    filterOnly.pageSize = 0
    filterOnly.pageToken = ""
    let filterHash = try IdempotencyKeys.fingerprint(method: "list_payments", message: filterOnly)
    var cursor: PageCursor?
    if !message.pageToken.isEmpty {
      guard let opened = self.pageTokens.open(message.pageToken, merchant: merchant, filter: filterHash) else {
        throw APIError.invalidArgument(
          field: "page_token", reason: "PAGE_TOKEN_INVALID", message: "page_token is not a token of this list")
      }
      cursor = opened
    }
    let page = try await self.payments.list(
      merchant: merchant,
      filter: PaymentFilter(
        statuses: statuses, customerReference: message.customerReference.isEmpty ? nil : message.customerReference,
        createdFrom: start, createdBefore: end),
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
    let merchant = caller.merchantID
    var resumeFrom: EventPosition?
    if !request.message.cursor.isEmpty {
      guard let position = self.pageTokens.openCursor(request.message.cursor, merchant: merchant) else {
        throw APIError.invalidArgument(
          field: "cursor", reason: "CURSOR_INVALID", message: "cursor is not a cursor of this merchant's events")
      }
      resumeFrom = position
    }
    guard let token = ServiceContext.current?.accessToken else {
      throw APIError.status(.unauthenticated, reason: "TOKEN_MISSING", message: "an access token is required")
    }
    let watches = self.watches
    if let exceeded = watches.open(owner: caller.clientID) {
      throw exceeded.refusal(reason: "TOO_MANY_STREAMS", streams: "WatchPayments streams", owner: "client")
    }
    // A refused stream costs no database read: the position is read only once the stream is admitted.
    let start: EventPosition
    do {
      if let resumeFrom { start = resumeFrom } else { start = try await self.payments.currentPosition() }
    } catch {
      watches.close(owner: caller.clientID)
      throw error
    }
    let (payments, tokens, feed, recheck) = (self.payments, self.pageTokens, self.feed, self.recheck)
    return StreamingServerResponse { writer in
      defer { watches.close(owner: caller.clientID) }
      func send(_ event: PaymentEvent, _ payment: PaymentRecord?) async throws {
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
      }
      var after = start
      while true {
        let subscription = try await feed.subscribe(
          merchant: merchant, clientID: caller.clientID, tokenID: caller.tokenID)
        defer { subscription.end(.closed) }
        // The backlog up to where the feed stood is read here, once; the feed delivers the rest.
        // Events become readable in position order (see PaymentStore.events), so reading after
        // the last position sent never skips one.
        backlog: while after < subscription.position {
          let events = try await payments.events(merchant: merchant, after: after, limit: 100)
          for event in events {
            guard event.position <= subscription.position else { break backlog }
            try await send(event, try await payments.payment(event.paymentID, merchant: merchant))
            after = event.position
          }
          if events.count < 100 { break }
        }
        // A reset stream does not cancel this task, and an idle one writes nothing that could
        // fail: its cancellation ends the subscription; so do the drain and the token's expiry.
        let expiry = Task {
          // Not `Task.sleep`: cancelled when the stream ends, it would hold this task until then.
          guard (try? await Sleep.for(.seconds(max(0, token.expireTime.timeIntervalSinceNow)))) != nil else {
            return
          }
          subscription.end(.closed)
        }
        defer { expiry.cancel() }
        let draining = DrainFlag()
        try await withRPCCancellationHandler {
          try await withGracefulShutdownHandler {
            for await message in subscription.messages {
              switch message {
              case .events(let delivered):
                for item in delivered where item.event.position > after {
                  try await send(item.event, item.payment)
                  after = item.event.position
                }
              case .standingChanged:
                if let failure = await recheck(token) { throw Self.streamRefusal(failure) }
              }
            }
          } onGracefulShutdown: {
            draining.raise()
            subscription.end(.closed)
          }
        } onCancelRPC: {
          subscription.end(.closed)
        }
        if token.expireTime <= Date() { throw Self.streamRefusal(.expired) }
        // A watch never ends by itself: a drain tells the client to watch again (another replica,
        // or this one restarted) from the last cursor it got.
        if draining.isRaised { throw Self.drainRefusal }
        guard subscription.end == .fellBehind else { return [:] }
      }
    }
  }

  /// How a stream ends when the server drains.
  static var drainRefusal: GoogleRPCStatus {
    APIError.status(
      .unavailable, reason: "SERVER_DRAINING",
      message: "the server is shutting down; watch again from the last cursor received")
  }

  /// How a stream ends when its token stops being valid, as the auth interceptor refuses a call.
  static func streamRefusal(_ failure: AuthFailure) -> GoogleRPCStatus {
    APIError.status(.unauthenticated, reason: failure.errorReason, message: AuthInterceptor.message(for: failure))
  }
}

extension PaymentRPCService {
  /// Finishes keyed CreatePayment, CapturePayment and CancelPayment operations left in the middle
  /// (a crash, a provider timeout) once their lock has expired, through the same steps as the
  /// RPCs: the provider is asked again under the same derived key (an answer, never a second
  /// charge). Records that cannot have reached the provider are released. Returns how many
  /// records it took over.
  public func completeStale(limit: Int = 50) async throws -> Int {
    let created = try await self.runner.takeOverStale(method: Self.createMethod, limit: limit) { claimed in
      try await self.operations.resumeCreate(claimed)
    }
    let captured = try await self.runner.takeOverStale(method: Self.captureMethod, limit: limit) { claimed in
      try await self.operations.resumeChange(claimed, operation: .capturePayment)
    }
    let canceled = try await self.runner.takeOverStale(method: Self.cancelMethod, limit: limit) { claimed in
      try await self.operations.resumeChange(claimed, operation: .cancelPayment)
    }
    return created + captured + canceled
  }
}

/// Checks of the text Tender stores from a caller (`StoredText`): a length in UTF-8 bytes, no
/// control characters, nothing that looks like a card number; each refusal names the field.
enum FreeText {
  /// All of a request's metadata together, keys and values, in UTF-8 bytes.
  static let metadataTotalBytes = 8192

  static func check(_ text: String, field: String, limit: Int) throws {
    switch StoredText.problem(text, maximumBytes: limit) {
    case nil: return
    case .tooLong(let maximum):
      throw APIError.invalidArgument(
        field: field, reason: "FIELD_TOO_LONG", message: "\(field) is longer than \(maximum) bytes (UTF-8)")
    case .controlCharacter:
      throw APIError.invalidArgument(
        field: field, reason: "FIELD_CONTROL_CHARACTERS", message: "\(field) must not contain control characters")
    case .cardNumber:
      throw APIError.domain(.cardDataRejected(field: field))
    }
  }

  static func checkMetadata(_ metadata: [String: String]) throws {
    guard metadata.count <= 50 else {
      throw APIError.invalidArgument(
        field: "metadata", reason: "METADATA_TOO_LARGE", message: "metadata holds at most 50 entries")
    }
    var total = 0
    for (key, value) in metadata.sorted(by: { $0.key < $1.key }) {
      guard (1...40).contains(key.utf8.count) else {
        throw APIError.invalidArgument(
          field: "metadata", reason: "METADATA_TOO_LARGE", message: "metadata keys are 1 to 40 bytes (UTF-8)")
      }
      try self.check(key, field: "metadata", limit: 40)
      try self.check(value, field: "metadata[\(key)]", limit: 500)
      total += key.utf8.count + value.utf8.count
    }
    guard total <= Self.metadataTotalBytes else {
      throw APIError.invalidArgument(
        field: "metadata", reason: "METADATA_TOO_LARGE",
        message: "metadata holds at most \(Self.metadataTotalBytes) bytes (UTF-8) of keys and values")
    }
  }
}

/// Domain ↔ wire for payments.
enum PaymentMessages {
  static func paymentID(_ text: String) throws -> PaymentID {
    guard let id = PaymentID(text) else {
      throw APIError.invalidArgument(
        field: "payment_id", reason: text.isEmpty ? "FIELD_REQUIRED" : "FIELD_INVALID",
        message: "payment_id must be a payment id (pay_…)")
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

/// Set once a drain has begun.
private final class DrainFlag: Sendable {
  private let raised = Mutex(false)

  func raise() { self.raised.withLock { $0 = true } }

  var isRaised: Bool { self.raised.withLock { $0 } }
}
