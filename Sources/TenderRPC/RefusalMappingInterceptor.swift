public import GRPCCore

/// Answers the failures no handler names with the precise status a client can act on:
/// - a request message that cannot be decoded: INVALID_ARGUMENT, `ErrorInfo` reason
///   `MESSAGE_MALFORMED` (no field can be named: the bytes are not a message of the method's
///   type), instead of the decoder's bare status. It changes nothing, since the handler never
///   sees a message;
/// - a dependency that went away under the call (the database restarted, its connection
///   dropped, a statement or lock timeout passed): UNAVAILABLE, reason `DATABASE_UNAVAILABLE`,
///   which clients retry with the same idempotency key, instead of an UNKNOWN nobody may retry.
///   Nothing is lost by the retry: a keyed operation's progress is in its key (a step that did
///   not commit did not happen), and a key a failed call still owns is taken over once its lock
///   expires.
public struct RefusalMappingInterceptor: ServerInterceptor {
  private let isUnavailable: @Sendable (any Error) -> Bool

  /// - Parameter isUnavailable: whether an error is a dependency being unavailable (the
  ///   composition root knows the stores' error types).
  public init(isUnavailable: @escaping @Sendable (any Error) -> Bool) {
    self.isUnavailable = isUnavailable
  }

  /// The answer to a message that does not decode.
  public static let malformedMessage = APIError.status(
    .invalidArgument, reason: "MESSAGE_MALFORMED", message: "the request message cannot be decoded")

  /// The answer to a call whose database went away under it.
  public static let databaseUnavailable = APIError.status(
    .unavailable, reason: "DATABASE_UNAVAILABLE", message: "the database is unavailable right now; retry")

  public func intercept<Input: Sendable, Output: Sendable>(
    request: StreamingServerRequest<Input>,
    context: ServerContext,
    next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
  ) async throws -> StreamingServerResponse<Output> {
    var request = request
    request.messages = RPCAsyncSequence(wrapping: Decoded(base: request.messages))
    let isUnavailable = self.isUnavailable
    let response: StreamingServerResponse<Output>
    do {
      response = try await next(request, context)
    } catch let error where isUnavailable(error) {
      throw Self.databaseUnavailable
    }
    guard case .success(var contents) = response.accepted else { return response }
    let producer = contents.producer
    contents.producer = { writer in
      do {
        return try await producer(writer)
      } catch let error where isUnavailable(error) {
        throw Self.databaseUnavailable
      }
    }
    return StreamingServerResponse(accepted: .success(contents))
  }

  struct Decoded<Element: Sendable>: AsyncSequence, Sendable {
    typealias Failure = any Error
    let base: RPCAsyncSequence<Element, any Error>

    func makeAsyncIterator() -> Iterator { Iterator(base: self.base.makeAsyncIterator()) }

    struct Iterator: AsyncIteratorProtocol {
      var base: RPCAsyncSequence<Element, any Error>.AsyncIterator

      mutating func next() async throws -> Element? {
        do {
          return try await self.base.next()
        } catch let error as RPCError where error.code == .invalidArgument {
          // The decoder's refusal (the transport reports its own failures with other codes).
          throw RefusalMappingInterceptor.malformedMessage
        }
      }
    }
  }
}
