public import GRPCCore
public import ServiceContextModule
public import Tracing
import TenderCore

/// The outermost interceptor: one server span per RPC, a child of the caller's W3C
/// `traceparent`/`tracestate` when sent, named `package.Service/Method` with the OpenTelemetry RPC
/// attributes. The span is current (in `ServiceContext`) while the handler runs, so database spans
/// become its children. It also starts the RPC's `CallRecord`.
public struct TracingInterceptor<T: Tracer>: ServerInterceptor {
  private let tracer: T
  /// The trace id of a span's context, for log lines (nil when the tracer records none).
  private let traceID: @Sendable (ServiceContext) -> String?

  public init(tracer: T, traceID: @escaping @Sendable (ServiceContext) -> String? = { _ in nil }) {
    self.tracer = tracer
    self.traceID = traceID
  }

  public func intercept<Input: Sendable, Output: Sendable>(
    request: StreamingServerRequest<Input>,
    context: ServerContext,
    next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
  ) async throws -> StreamingServerResponse<Output> {
    var parent = ServiceContext.current ?? .topLevel
    self.tracer.extract(request.metadata, into: &parent, using: MetadataExtractor())
    let descriptor = context.descriptor
    let span = self.tracer.startSpan(descriptor.fullyQualifiedMethod, context: parent, ofKind: .server)
    span.attributes["rpc.system"] = "grpc"
    span.attributes["rpc.service"] = descriptor.service.fullyQualifiedService
    span.attributes["rpc.method"] = descriptor.method
    var current = span.context
    let record = CallRecord(traceID: self.traceID(current) ?? Self.traceID(fromTraceparent: request.metadata))
    current.callRecord = record

    @Sendable func finish(_ code: RPCError.Code?) {
      span.attributes["rpc.grpc.status_code"] = Int(code?.rawValue ?? 0)
      let snapshot = record.snapshot
      if let caller = snapshot.caller {
        span.attributes["tender.merchant_id"] = caller.merchantID.rawValue
        span.attributes["tender.client_id"] = caller.clientID
      }
      if let reason = snapshot.authFailure {
        span.attributes["tender.auth.failure"] = reason
      }
      if let code, RequestLoggingInterceptor.isServerFault(code) {
        span.setStatus(SpanStatus(code: .error, message: RequestLoggingInterceptor.canonicalName(code)))
      }
      span.end()
    }

    let response = try await ServiceContext.withValue(current) {
      try await RPCOutcome.observe(request: request, context: context, next: next) { code, _ in finish(code) }
    }
    return RPCOutcome.propagating(current, into: response)
  }

  /// The trace id of a valid W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), if one was sent.
  static func traceID(fromTraceparent metadata: Metadata) -> String? {
    guard let value = metadata[stringValues: "traceparent"].first(where: { _ in true }) else { return nil }
    let parts = value.split(separator: "-")
    guard parts.count >= 4, parts[1].count == 32, parts[1].allSatisfy(\.isHexDigit),
      parts[1] != String(repeating: "0", count: 32)
    else { return nil }
    return String(parts[1])
  }
}

/// Reads propagation headers (`traceparent`, `tracestate`, …) from gRPC metadata.
struct MetadataExtractor: Extractor {
  func extract(key: String, from carrier: Metadata) -> String? {
    carrier[stringValues: key].first(where: { _ in true })
  }
}
