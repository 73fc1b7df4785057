public import GRPCCore

/// A call that fails because a dependency went away under it (the database restarted, its
/// connection dropped, a statement or lock timeout passed) is answered UNAVAILABLE with
/// `ErrorInfo` reason `DATABASE_UNAVAILABLE`, which clients retry with the same idempotency key,
/// instead of an UNKNOWN nobody may retry. Nothing is lost by the retry: a keyed operation's
/// progress is in its key (a step that did not commit did not happen), and a key a failed call
/// still owns is taken over once its lock expires.
public struct UnavailableDependencyInterceptor: ServerInterceptor {
  private let isUnavailable: @Sendable (any Error) -> Bool

  /// - Parameter isUnavailable: whether an error is a dependency being unavailable (the
  ///   composition root knows the stores' error types).
  public init(isUnavailable: @escaping @Sendable (any Error) -> Bool) {
    self.isUnavailable = isUnavailable
  }

  public static let refusal = APIError.status(
    .unavailable, reason: "DATABASE_UNAVAILABLE", message: "the database is unavailable right now; retry")

  public func intercept<Input: Sendable, Output: Sendable>(
    request: StreamingServerRequest<Input>,
    context: ServerContext,
    next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
  ) async throws -> StreamingServerResponse<Output> {
    let isUnavailable = self.isUnavailable
    let response: StreamingServerResponse<Output>
    do {
      response = try await next(request, context)
    } catch let error where isUnavailable(error) {
      throw Self.refusal
    }
    guard case .success(var contents) = response.accepted else { return response }
    let producer = contents.producer
    contents.producer = { writer in
      do {
        return try await producer(writer)
      } catch let error where isUnavailable(error) {
        throw Self.refusal
      }
    }
    return StreamingServerResponse(accepted: .success(contents))
  }
}
