public import GRPCCore

/// A request message that cannot be decoded is answered like every other bad input: INVALID_ARGUMENT
/// with `ErrorInfo` reason `MESSAGE_MALFORMED` (no field can be named: the bytes are not a message
/// of the method's type), instead of the decoder's bare status. It changes nothing, since the
/// handler never sees a message.
public struct MalformedMessageInterceptor: ServerInterceptor {
  public init() {}

  public func intercept<Input: Sendable, Output: Sendable>(
    request: StreamingServerRequest<Input>,
    context: ServerContext,
    next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
  ) async throws -> StreamingServerResponse<Output> {
    var request = request
    request.messages = RPCAsyncSequence(wrapping: Decoded(base: request.messages))
    return try await next(request, context)
  }

  /// The answer to a message that does not decode.
  public static let refusal = APIError.status(
    .invalidArgument, reason: "MESSAGE_MALFORMED", message: "the request message cannot be decoded")

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
          throw MalformedMessageInterceptor.refusal
        }
      }
    }
  }
}
