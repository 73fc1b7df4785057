import GRPCCore
import Synchronization
import TenderRPC
import Testing

@Suite("Caller deadlines, enforced by Tender's transport")
struct CallerDeadlineTransportTests {
  /// Serves one stream of `parts` to the handler.
  struct OneStream: ServerTransport {
    typealias Bytes = [UInt8]
    let parts: [RPCRequestPart<[UInt8]>]
    let context: ServerContext

    func listen(
      streamHandler: @escaping @Sendable (RPCStream<Inbound, Outbound>, ServerContext) async -> Void
    ) async throws {
      let parts = self.parts
      let inbound = RPCAsyncSequence<RPCRequestPart<[UInt8]>, any Error>(
        wrapping: AsyncThrowingStream { continuation in
          for part in parts { continuation.yield(part) }
          continuation.finish()
        })
      let stream = RPCStream(
        descriptor: self.context.descriptor, inbound: inbound,
        outbound: RPCWriter<RPCResponsePart<[UInt8]>>.Closable(wrapping: Discarding()))
      await streamHandler(stream, self.context)
    }

    func beginGracefulShutdown() {}
  }

  struct Discarding: ClosableRPCWriterProtocol {
    func write(_ element: RPCResponsePart<[UInt8]>) async throws {}
    func write(contentsOf elements: some Sequence<RPCResponsePart<[UInt8]>>) async throws {}
    func finish() async {}
    func finish(throwing error: any Error) async {}
  }

  struct Seen: Sendable {
    var metadata: Metadata?
    var messages: [[UInt8]] = []
    var deadline: Duration?
  }

  static func context() -> ServerContext {
    ServerContext(
      descriptor: MethodDescriptor(fullyQualifiedService: "tender.payments.v1.PaymentService", method: "WatchPayments"),
      remotePeer: "ipv4:127.0.0.1:1", localPeer: "ipv4:127.0.0.1:2", cancellation: .init())
  }

  /// Serves `parts` through the transport; `whileServing` runs in the handler once it has read
  /// the stream.
  static func serve(
    _ parts: [RPCRequestPart<[UInt8]>], context: ServerContext,
    whileServing: @escaping @Sendable (ServerContext) async throws -> Void = { _ in }
  ) async throws -> Seen {
    let seen = Mutex(Seen())
    try await CallerDeadlineTransport(OneStream(parts: parts, context: context)).listen { stream, context in
      seen.withLock { $0.deadline = CallerDeadline.current }
      do {
        for try await part in stream.inbound {
          switch part {
          case .metadata(let metadata): seen.withLock { $0.metadata = metadata }
          case .message(let bytes): seen.withLock { $0.messages.append(bytes) }
          }
        }
        try await whileServing(context)
      } catch {
        Issue.record("serving failed: \(error)")
      }
    }
    return seen.withLock { $0 }
  }

  @Test(
    "A call's grpc-timeout leaves its metadata, is given to the handlers and cancels the RPC when it passes",
    .timeLimit(.minutes(1)))
  func deadlineEnforced() async throws {
    let context = Self.context()
    let seen = try await Self.serve(
      [.metadata(["grpc-timeout": "50m", "authorization": "Bearer x"]), .message([1, 2]), .message([3])],
      context: context
    ) { context in
      // Returns once the transport cancels the RPC; the time limit fails the test otherwise.
      try await context.cancellation.cancelled
    }
    #expect(seen.deadline == .milliseconds(50))
    #expect(seen.metadata.map { Array($0[stringValues: "grpc-timeout"]) } == [])
    #expect(seen.metadata.map { Array($0[stringValues: "authorization"]) } == ["Bearer x"])
    #expect(seen.messages == [[1, 2], [3]])
    #expect(context.cancellation.isCancelled)
  }

  @Test("A call without grpc-timeout passes through untouched and is not cancelled")
  func noDeadline() async throws {
    let context = Self.context()
    let seen = try await Self.serve([.metadata(["authorization": "Bearer x"]), .message([7])], context: context)
    #expect(seen.deadline == nil)
    #expect(seen.metadata.map { Array($0[stringValues: "authorization"]) } == ["Bearer x"])
    #expect(seen.messages == [[7]])
    #expect(!context.cancellation.isCancelled)
  }

  @Test("A call that ends before its deadline is not cancelled")
  func endsFirst() async throws {
    let context = Self.context()
    let seen = try await Self.serve([.metadata(["grpc-timeout": "1H"]), .message([7])], context: context)
    #expect(seen.deadline == .seconds(3600))
    #expect(!context.cancellation.isCancelled)
  }

  @Test(
    "grpc-timeout values decode as the gRPC specification writes them",
    arguments: [
      ("1H", Duration.seconds(3600)), ("2M", .seconds(120)), ("30S", .seconds(30)), ("250m", .milliseconds(250)),
      ("7u", .microseconds(7)), ("99999999n", .nanoseconds(99_999_999)), ("00000001S", .seconds(1)),
    ])
  func decodes(value: String, expected: Duration) {
    #expect(CallerDeadline.decode(value) == expected)
  }

  @Test(
    "Malformed grpc-timeout values are not deadlines",
    arguments: ["", "S", "1", "123456789S", "1x", "-1S", "1.5S", " 1S", "1s", "١S"])
  func malformed(value: String) {
    #expect(CallerDeadline.decode(value) == nil)
  }
}
