public import Foundation
public import GRPCCore
import GRPCProtobuf
public import Logging
import SwiftProtobuf
import Synchronization
public import TenderAPI
public import TenderCore
public import TenderOperations

/// `tender.refunds.v1.RefundService`. CreateRefund reserves the amount on the payment and records
/// the pending refund in one transaction (so concurrent refunds can never exceed the captured
/// money), asks the provider under a key derived from the caller's, and settles the refund and
/// stores the answer in a second transaction; the completer finishes what a crash or a timeout
/// interrupted.
public struct RefundRPCService: Tender_Refunds_V1_RefundService.ServiceProtocol {
  private let refunds: any RefundStore
  private let payments: any PaymentStore
  private let runner: KeyedOperationRunner
  private let operations: RefundOperations
  private let pageTokens: PageTokens
  private let logger: Logger

  public init(
    refunds: any RefundStore,
    payments: any PaymentStore,
    runner: KeyedOperationRunner,
    provider: any PaymentProvider,
    pageTokens: PageTokens,
    now: @escaping @Sendable () -> Date,
    logger: Logger
  ) {
    self.refunds = refunds
    self.payments = payments
    self.runner = runner
    self.operations = RefundOperations(
      runner: runner, refunds: refunds, payments: payments, provider: provider,
      answer: { record in
        StoredResponse(
          code: 0,
          message: try IdempotencyKeys.serialize(
            Tender_Refunds_V1_CreateRefundResponse.with { $0.refund = RefundMessages.refund(record) }), details: [])
      },
      refusal: { try IdempotencyKeys.stored(APIError.domain($0)) },
      now: now,
      logger: logger
    )
    self.pageTokens = pageTokens
    self.logger = logger
  }

  static let createMethod = Tender_Refunds_V1_RefundService.Method.CreateRefund.descriptor.fullyQualifiedMethod

  // MARK: CreateRefund

  public func createRefund(
    request: ServerRequest<Tender_Refunds_V1_CreateRefundRequest>,
    context: ServerContext
  ) async throws -> ServerResponse<Tender_Refunds_V1_CreateRefundResponse> {
    let keyed = try PaymentRPCService.keyed(request, method: Self.createMethod)
    let draft = try Self.validate(request.message, merchant: keyed.merchant)
    return try await IdempotencyKeys.respond({ try await self.operations.create(draft, request: keyed) }) { refund in
      .with { $0.refund = RefundMessages.refund(refund) }
    }
  }

  static func validate(_ message: Tender_Refunds_V1_CreateRefundRequest, merchant: MerchantID) throws -> RefundDraft {
    let paymentID = try PaymentMessages.paymentID(message.paymentID)
    guard message.amountMinor >= 0 else {
      throw APIError.invalidArgument(
        field: "amount_minor", reason: "AMOUNT_INVALID",
        message: "amount_minor must be zero (everything refundable) or positive")
    }
    guard message.amountMinor <= Money.defaultMaximumMinorUnits else {
      throw APIError.invalidArgument(
        field: "amount_minor", reason: "AMOUNT_INVALID",
        message: "amount_minor must be at most \(Money.defaultMaximumMinorUnits)")
    }
    let reason: RefundReason?
    switch message.reason {
    case .unspecified: reason = nil
    case .requestedByCustomer: reason = .requestedByCustomer
    case .duplicate: reason = .duplicate
    case .fraudulent: reason = .fraudulent
    default:
      throw APIError.invalidArgument(
        field: "reason", reason: "FIELD_INVALID", message: "reason must be a refund reason")
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
      throw APIError.invalidArgument(
        field: "refund_id", reason: text.isEmpty ? "FIELD_REQUIRED" : "FIELD_INVALID",
        message: "refund_id must be a refund id (re_…)")
    }
    guard let refund = try await self.refunds.refund(id, merchant: caller.merchantID) else {
      throw APIError.status(
        .notFound, reason: "REFUND_NOT_FOUND", message: "no such refund", metadata: ["field": "refund_id"])
    }
    return ServerResponse(message: .with { $0.refund = RefundMessages.refund(refund) })
  }

  public func listRefunds(
    request: ServerRequest<Tender_Refunds_V1_ListRefundsRequest>,
    context: ServerContext
  ) async throws -> ServerResponse<Tender_Refunds_V1_ListRefundsResponse> {
    let caller = try AuthRPCService.caller()
    let merchant = caller.merchantID
    let message = request.message
    guard (0...100).contains(message.pageSize) else {
      throw APIError.invalidArgument(
        field: "page_size", reason: "FIELD_INVALID", message: "page_size must be from 1 to 100 (0 means 20)")
    }
    var payment: PaymentID?
    if !message.paymentID.isEmpty {
      let id = try PaymentMessages.paymentID(message.paymentID)
      // Another merchant's payment is not found, not an empty list.
      guard try await self.payments.payment(id, merchant: merchant) != nil else {
        throw APIError.status(
          .notFound, reason: "PAYMENT_NOT_FOUND", message: "no such payment",
          metadata: ["field": "payment_id"])
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
        throw APIError.invalidArgument(
          field: "page_token", reason: "PAGE_TOKEN_INVALID", message: "page_token is not a token of this list")
      }
      cursor = opened
    }
    let page = try await self.refunds.list(
      merchant: merchant, payment: payment, pageSize: message.pageSize == 0 ? 20 : Int(message.pageSize), after: cursor)
    return ServerResponse(
      message: .with {
        $0.refunds = page.items.map(RefundMessages.refund)
        $0.nextPageToken = page.next.map { self.pageTokens.seal($0, merchant: merchant, filter: filterHash) } ?? ""
      }
    )
  }
}

extension RefundRPCService {
  /// Finishes keyed CreateRefund operations left in the middle once their lock has expired,
  /// through the same steps as the RPC: a pending refund is sent to the provider again under the
  /// same derived key (an answer, never a second refund) and settled; records that never created
  /// a refund are released. Returns how many records it took over.
  public func completeStale(limit: Int = 50) async throws -> Int {
    try await self.runner.takeOverStale(method: Self.createMethod, limit: limit) { claimed in
      try await self.operations.resume(claimed)
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
