import GRPCCore
import ServiceContextModule

/// Observes how an RPC ends, for interceptors that record it (logging, metrics).
enum RPCOutcome {
  /// Runs `next` and calls `finished` exactly once with the RPC's final code (nil for OK) and,
  /// when a handler threw an error no layer turned into a status (which goes out as UNKNOWN), that
  /// error: when the handler throws, when it rejects the call, or when its response stream ends.
  /// `writer` may wrap the writer the handler's producer writes to.
  static func observe<Input: Sendable, Output: Sendable>(
    request: StreamingServerRequest<Input>,
    context: ServerContext,
    next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>,
    writer: @escaping @Sendable (RPCWriter<Output>) -> RPCWriter<Output> = { $0 },
    finished: @escaping @Sendable (RPCError.Code?, _ unmapped: (any Error)?) -> Void
  ) async throws -> StreamingServerResponse<Output> {
    let response: StreamingServerResponse<Output>
    do {
      response = try await next(request, context)
    } catch {
      finished(self.code(of: error, context), self.unmapped(error, context))
      throw error
    }
    switch response.accepted {
    case .failure(let error):
      // An error an inner layer let through arrives as UNKNOWN carrying it (grpc-swift wraps
      // what an interceptor throws); it is reported as unmapped, so its type is logged.
      finished(error.code, error.code == .unknown ? error.cause.flatMap { self.unmapped($0, context) } : nil)
      return response
    case .success(var contents):
      let producer = contents.producer
      contents.producer = { base in
        do {
          let trailers = try await producer(writer(base))
          // A stream its handler ended because the RPC was cancelled (a reset, or its deadline).
          finished(context.cancellation.isCancelled ? .cancelled : nil, nil)
          return trailers
        } catch {
          finished(self.code(of: error, context), self.unmapped(error, context))
          throw error
        }
      }
      return StreamingServerResponse(accepted: .success(contents))
    }
  }

  /// `error` if no layer made it a status (gRPC sends it as UNKNOWN without a message), unless
  /// the RPC was cancelled.
  static func unmapped(_ error: any Error, _ context: ServerContext) -> (any Error)? {
    if error is RPCError || error is any RPCErrorConvertible || error is CancellationError { return nil }
    if context.cancellation.isCancelled { return nil }
    return error
  }

  /// The status code an RPC that threw `error` ends with: CANCELLED when the RPC was cancelled
  /// (its client went away or reset the stream, or its deadline passed; a write then fails with
  /// whatever the transport says), else what the error becomes on the wire.
  static func code(of error: any Error, _ context: ServerContext) -> RPCError.Code {
    if let error = error as? RPCError { return error.code }
    if let error = error as? any RPCErrorConvertible { return error.rpcErrorCode }
    if error is CancellationError || context.cancellation.isCancelled || Task.isCancelled { return .cancelled }
    return .unknown
  }

  /// The handler's response with its producer (which runs after the interceptor returns, for
  /// streaming responses) run inside `serviceContext`, so the caller and the span stay current.
  static func propagating<Output: Sendable>(
    _ serviceContext: ServiceContext,
    into response: StreamingServerResponse<Output>
  ) -> StreamingServerResponse<Output> {
    guard case .success(var contents) = response.accepted else { return response }
    let producer = contents.producer
    contents.producer = { writer in
      try await ServiceContext.withValue(serviceContext) {
        try await producer(writer)
      }
    }
    return StreamingServerResponse(accepted: .success(contents))
  }
}
