public import GRPCCore
import TenderCore

/// Gives unary RPCs that arrive without a `grpc-timeout` a deadline, so no call can hold a
/// handler forever. Calls that carry their own deadline are left to the transport
/// (`CallerDeadlineTransport`).
public struct DefaultDeadlineInterceptor: ServerInterceptor {
  private let deadline: Duration

  public init(deadline: Duration) {
    self.deadline = deadline
  }

  public func intercept<Input: Sendable, Output: Sendable>(
    request: StreamingServerRequest<Input>,
    context: ServerContext,
    next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
  ) async throws -> StreamingServerResponse<Output> {
    guard CallerDeadline.current == nil,
      request.metadata[stringValues: "grpc-timeout"].first(where: { _ in true }) == nil
    else {
      return try await next(request, context)
    }
    let deadline = self.deadline
    // The handler runs in a child task only while this call is suspended, so `next` never
    // outlives it.
    return try await withoutActuallyEscaping(next) { next in
      try await withThrowingTaskGroup(of: StreamingServerResponse<Output>?.self) { group in
        group.addTask { try await next(request, context) }
        group.addTask {
          // Not `Task.sleep`: cancelled, it would hold this call's task until the deadline.
          try await Sleep.for(deadline)
          return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let response = first else {
          throw RPCError(code: .deadlineExceeded, message: "the server's default deadline of \(deadline) passed")
        }
        return response
      }
    }
  }
}
