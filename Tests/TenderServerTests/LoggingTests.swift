import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import SwiftProtobuf
import TenderAPI
import TenderTesting
import Testing

@Suite("Request logging")
struct LoggingTests {
  @Test(
    "Each RPC writes one line with trace id, merchant, client, method, peer, code and duration, and no metadata values")
  func oneLinePerRPC() async throws {
    let store = RecordingLogHandler.Store()
    let secret = "Bearer eyJhbGciOiJFZERTQSJ9.c2VjcmV0LXRva2VuLXZhbHVl.c2lnbmF0dXJl"
    let token = try await TestServer.with(rpc: .tls, logger: store.logger(level: .info)) { server in
      let token = try await server.token(scopes: ["payments:read"])
      try await server.withClient { client in
        let health = Grpc_Health_V1_Health.Client(wrapping: client)
        _ = try await health.check(.init(), metadata: ["authorization": .string(secret)])
        _ = try? await health.check(
          .with { $0.service = "4111111111111111" }, metadata: ["authorization": .string(secret)])
        let payments = Tender_Payments_V1_PaymentService.Client(wrapping: client)
        _ = try? await payments.getPayment(
          .with { $0.paymentID = "pay_1" }, metadata: ["authorization": .string(secret)])
        var metadata = TestServer.bearer(token)
        metadata.addString("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", forKey: "traceparent")
        _ = try? await payments.getPayment(.with { $0.paymentID = "pay_1" }, metadata: metadata)
      }
      return token
    }
    let lines = store.all.filter { $0.message == "rpc" }
    #expect(lines.count == 4)
    #expect(lines.map { $0.metadata["rpc.code"] } == ["OK", "NOT_FOUND", "UNAUTHENTICATED", "NOT_FOUND"])
    #expect(
      lines.map { $0.metadata["rpc.method"] } == [
        "grpc.health.v1.Health/Check", "grpc.health.v1.Health/Check", "tender.payments.v1.PaymentService/GetPayment",
        "tender.payments.v1.PaymentService/GetPayment",
      ])
    // The refused call says why; the authenticated one says who, and carries the caller's trace.
    #expect(lines[2].metadata["auth.failure"] == "wrong_type")
    #expect(lines[2].metadata["client_id"] == nil)
    #expect(lines[3].metadata["merchant_id"] == TestServer.merchantID)
    #expect(lines[3].metadata["client_id"]?.hasPrefix("cli_") == true)
    #expect(lines[3].metadata["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736")
    for line in lines {
      #expect(line.metadata["rpc.peer"]?.hasPrefix("ipv4:127.0.0.1:") == true)
      #expect(Double(line.metadata["rpc.duration_ms"] ?? "") != nil)
    }
    // Neither the token nor request contents reach any log record.
    for record in store.all {
      let text = record.message + " " + record.metadata.values.joined(separator: " ")
      #expect(!text.contains("eyJhbGciOiJFZERTQSJ9"))
      #expect(!text.contains("4111111111111111"))
      #expect(!text.contains(token))
    }
  }
}

@Suite("Request logging of cancelled calls")
struct CancelledCallLoggingTests {
  // Over TLS: the client's RST_STREAM is what cancels the handler (the in-process transport does
  // not pass a client's cancellation on to a handler that is not writing).
  @Test("A client that cancels its stream is logged as CANCELLED at info, not as UNKNOWN at error")
  func cancelledStream() async throws {
    let store = RecordingLogHandler.Store()
    try await TestServer.with(rpc: .tls, logger: store.logger(level: .info)) { server in
      try await server.withClient { client in
        let health = Grpc_Health_V1_Health.Client(wrapping: client)
        let (seen, seenContinuation) = AsyncStream.makeStream(of: Void.self)
        let watcher = Task {
          try await health.watch(.init()) { response in
            for try await _ in response.messages { seenContinuation.yield() }
          }
        }
        for await _ in seen { break }
        watcher.cancel()
        _ = await watcher.result
        // The server's line is written once the cancellation has reached it.
        let deadline = ContinuousClock.now + .seconds(10)
        while Self.line(store, Self.healthWatch) == nil, ContinuousClock.now < deadline {
          try await Task.sleep(for: .milliseconds(10))
        }
      }
    }
    let line = try #require(Self.line(store, Self.healthWatch))
    #expect(line.metadata["rpc.code"] == "CANCELLED" && line.level == .info, "\(line)")
    #expect(line.metadata["rpc.error_type"] == nil)
  }

  @Test("An idle WatchPayments stream whose client cancels it ends at once (logged CANCELLED), not at the drain")
  func cancelledPaymentWatch() async throws {
    let store = RecordingLogHandler.Store()
    try await TestServer.with(rpc: .tls, logger: store.logger(level: .info)) { server in
      let token = try await server.token(scopes: ["payments:read"])
      try await server.withClient { client in
        let payments = Tender_Payments_V1_PaymentService.Client(wrapping: client)
        let (open, openContinuation) = AsyncStream.makeStream(of: Void.self)
        let watcher = Task {
          try await payments.watchPayments(.init(), metadata: TestServer.bearer(token)) { response in
            // The server has accepted the stream (its headers are here); no event will come.
            openContinuation.yield()
            for try await _ in response.messages {}
          }
        }
        for await _ in open { break }
        watcher.cancel()
        _ = await watcher.result
        let deadline = ContinuousClock.now + .seconds(10)
        while Self.line(store, "tender.payments.v1.PaymentService/WatchPayments") == nil, ContinuousClock.now < deadline
        {
          try await Task.sleep(for: .milliseconds(10))
        }
        // Checked while the server still runs: the drain would end the stream anyway.
        let line = try #require(Self.line(store, "tender.payments.v1.PaymentService/WatchPayments"))
        #expect(line.metadata["rpc.code"] == "CANCELLED" && line.level == .info, "\(line)")
      }
    }
  }

  static func line(_ store: RecordingLogHandler.Store, _ method: String) -> RecordingLogHandler.Record? {
    store.all.first { $0.message == "rpc" && $0.metadata["rpc.method"] == method }
  }

  static let healthWatch = "grpc.health.v1.Health/Watch"
}
