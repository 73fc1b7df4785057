import GRPCCore
import Synchronization
import TenderRPC
import Testing

@Suite("Default deadline for unary RPCs")
struct DefaultDeadlineInterceptorTests {
  static let descriptor = MethodDescriptor(
    fullyQualifiedService: "tender.payments.v1.PaymentService", method: "GetPayment")

  static func context() -> ServerContext {
    ServerContext(
      descriptor: descriptor, remotePeer: "ipv4:127.0.0.1:1", localPeer: "ipv4:127.0.0.1:2", cancellation: .init())
  }

  static func request(_ metadata: Metadata = [:]) -> StreamingServerRequest<String> {
    StreamingServerRequest(single: ServerRequest(metadata: metadata, message: "request"))
  }

  /// Runs the response's producer and returns what it wrote.
  static func messages(of response: StreamingServerResponse<String>) async throws -> [String] {
    let contents = try response.accepted.get()
    let collector = Collector()
    _ = try await contents.producer(RPCWriter(wrapping: collector))
    return collector.messages.withLock { $0 }
  }

  final class Collector: RPCWriterProtocol {
    let messages = Mutex<[String]>([])
    func write(_ element: String) async throws { self.messages.withLock { $0.append(element) } }
    func write(contentsOf elements: some Sequence<String>) async throws {
      for element in elements { try await self.write(element) }
    }
  }

  @Test("A handler that outlives the default deadline is cut off with DEADLINE_EXCEEDED")
  func slowHandlerCutOff() async throws {
    let interceptor = DefaultDeadlineInterceptor(deadline: .milliseconds(50))
    let started = ContinuousClock.now
    let error = await #expect(throws: RPCError.self) {
      _ = try await interceptor.intercept(request: Self.request(), context: Self.context()) {
        _, _ -> StreamingServerResponse<String> in
        try await Task.sleep(for: .seconds(30))
        return StreamingServerResponse(single: ServerResponse(message: "late"))
      }
    }
    #expect(error?.code == .deadlineExceeded)
    // The slow handler (30 s) was cancelled rather than awaited. The bound is loose: other suites
    // start throwaway databases on the same two cores and can stall the run for seconds.
    #expect(ContinuousClock.now - started < .seconds(25))
  }

  @Test("A handler within the deadline answers normally")
  func fastHandlerPasses() async throws {
    let interceptor = DefaultDeadlineInterceptor(deadline: .seconds(5))
    let response = try await interceptor.intercept(request: Self.request(), context: Self.context()) {
      _, _ -> StreamingServerResponse<String> in
      StreamingServerResponse(single: ServerResponse(message: "ok"))
    }
    #expect(try await Self.messages(of: response) == ["ok"])
  }

  @Test("A call that carries its own grpc-timeout is left to the transport")
  func ownDeadlineRespected() async throws {
    let interceptor = DefaultDeadlineInterceptor(deadline: .milliseconds(20))
    let response = try await interceptor.intercept(
      request: Self.request(["grpc-timeout": "10S"]), context: Self.context()
    ) { _, _ -> StreamingServerResponse<String> in
      try await Task.sleep(for: .milliseconds(200))
      return StreamingServerResponse(single: ServerResponse(message: "slow but within its own deadline"))
    }
    #expect(try await Self.messages(of: response) == ["slow but within its own deadline"])
  }
}
