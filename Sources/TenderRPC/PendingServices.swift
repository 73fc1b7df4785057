public import GRPCCore
public import TenderAPI

/// Registered so that every Tender RPC is routed; methods whose implementation has not shipped
/// answer UNIMPLEMENTED (a precise status, not a crash and not UNKNOWN).
private func notYetServed(_ context: ServerContext) -> RPCError {
  RPCError(code: .unimplemented, message: "\(context.descriptor.fullyQualifiedMethod) is not served by this version of Tender")
}

/// PaymentService, registered before its methods ship.
public struct PendingPaymentService: Tender_Payments_V1_PaymentService.SimpleServiceProtocol {
  public init() {}

  public func createPayment(request: Tender_Payments_V1_CreatePaymentRequest, context: ServerContext) async throws -> Tender_Payments_V1_CreatePaymentResponse {
    throw notYetServed(context)
  }
  public func capturePayment(request: Tender_Payments_V1_CapturePaymentRequest, context: ServerContext) async throws -> Tender_Payments_V1_CapturePaymentResponse {
    throw notYetServed(context)
  }
  public func cancelPayment(request: Tender_Payments_V1_CancelPaymentRequest, context: ServerContext) async throws -> Tender_Payments_V1_CancelPaymentResponse {
    throw notYetServed(context)
  }
  public func getPayment(request: Tender_Payments_V1_GetPaymentRequest, context: ServerContext) async throws -> Tender_Payments_V1_GetPaymentResponse {
    throw notYetServed(context)
  }
  public func listPayments(request: Tender_Payments_V1_ListPaymentsRequest, context: ServerContext) async throws -> Tender_Payments_V1_ListPaymentsResponse {
    throw notYetServed(context)
  }
  public func watchPayments(request: Tender_Payments_V1_WatchPaymentsRequest, response: RPCWriter<Tender_Payments_V1_WatchPaymentsResponse>, context: ServerContext) async throws {
    throw notYetServed(context)
  }
}

/// RefundService, registered before its methods ship.
public struct PendingRefundService: Tender_Refunds_V1_RefundService.SimpleServiceProtocol {
  public init() {}

  public func createRefund(request: Tender_Refunds_V1_CreateRefundRequest, context: ServerContext) async throws -> Tender_Refunds_V1_CreateRefundResponse {
    throw notYetServed(context)
  }
  public func getRefund(request: Tender_Refunds_V1_GetRefundRequest, context: ServerContext) async throws -> Tender_Refunds_V1_GetRefundResponse {
    throw notYetServed(context)
  }
  public func listRefunds(request: Tender_Refunds_V1_ListRefundsRequest, context: ServerContext) async throws -> Tender_Refunds_V1_ListRefundsResponse {
    throw notYetServed(context)
  }
}
