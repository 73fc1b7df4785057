public import GRPCCore
public import Logging
import ServiceContextModule
import TenderCore

/// Writes one structured line per RPC when it ends: trace id, merchant, client, method, peer,
/// status code, duration, and why auth refused if it did.
///
/// Only these fields are logged; request messages and metadata (where tokens travel) never are.
public struct RequestLoggingInterceptor: ServerInterceptor {
  private let logger: Logger

  public init(logger: Logger) {
    self.logger = logger
  }

  public func intercept<Input: Sendable, Output: Sendable>(
    request: StreamingServerRequest<Input>,
    context: ServerContext,
    next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
  ) async throws -> StreamingServerResponse<Output> {
    let start = ContinuousClock.now
    let logger = self.logger
    let method = context.descriptor.fullyQualifiedMethod
    let peer = context.remotePeer
    let record = ServiceContext.current?.callRecord
    @Sendable func log(_ code: RPCError.Code?, unmapped: (any Error)?) {
      let level: Logger.Level = code.map(Self.isServerFault) == true ? .error : .info
      // Below the logger's level the line's fields are not even made.
      guard logger.logLevel <= level else { return }
      let elapsed = ContinuousClock.now - start
      let microseconds = elapsed.components.seconds * 1_000_000 + elapsed.components.attoseconds / 1_000_000_000_000
      var metadata: Logger.Metadata = [
        "rpc.method": "\(method)",
        "rpc.peer": "\(peer)",
        "rpc.code": "\(Self.canonicalName(code))",
        "rpc.duration_ms": "\(Double(microseconds) / 1000)",
      ]
      // Its type only: an error's text may carry request data.
      if let unmapped { metadata["rpc.error_type"] = "\(String(reflecting: type(of: unmapped)))" }
      if let snapshot = record?.snapshot {
        if let traceID = snapshot.traceID { metadata["trace_id"] = "\(traceID)" }
        if let caller = snapshot.caller {
          metadata["merchant_id"] = "\(caller.merchantID)"
          metadata["client_id"] = "\(caller.clientID)"
        }
        if let reason = snapshot.authFailure { metadata["auth.failure"] = "\(reason)" }
      }
      logger.log(level: level, "rpc", metadata: metadata)
    }

    return try await RPCOutcome.observe(request: request, context: context, next: next) { code, unmapped in
      log(code, unmapped: unmapped)
    }
  }

  /// The status name as gRPC specifies it (`OK`, `NOT_FOUND`, …), which log queries expect.
  static func canonicalName(_ code: RPCError.Code?) -> String {
    guard let code else { return "OK" }
    switch code {
    case .cancelled: return "CANCELLED"
    case .unknown: return "UNKNOWN"
    case .invalidArgument: return "INVALID_ARGUMENT"
    case .deadlineExceeded: return "DEADLINE_EXCEEDED"
    case .notFound: return "NOT_FOUND"
    case .alreadyExists: return "ALREADY_EXISTS"
    case .permissionDenied: return "PERMISSION_DENIED"
    case .resourceExhausted: return "RESOURCE_EXHAUSTED"
    case .failedPrecondition: return "FAILED_PRECONDITION"
    case .aborted: return "ABORTED"
    case .outOfRange: return "OUT_OF_RANGE"
    case .unimplemented: return "UNIMPLEMENTED"
    case .internalError: return "INTERNAL"
    case .unavailable: return "UNAVAILABLE"
    case .dataLoss: return "DATA_LOSS"
    case .unauthenticated: return "UNAUTHENTICATED"
    default: return "CODE_\(code.rawValue)"
    }
  }

  static func isServerFault(_ code: RPCError.Code) -> Bool {
    switch code {
    case .unknown, .internalError, .dataLoss, .unavailable, .deadlineExceeded: return true
    default: return false
    }
  }
}
