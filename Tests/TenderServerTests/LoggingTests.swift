import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import SwiftProtobuf
import TenderAPI
import TenderTesting
import Testing

@Suite("Request logging")
struct LoggingTests {
  @Test("Each RPC writes one line with method, peer, code and duration, and no metadata values")
  func oneLinePerRPC() async throws {
    let store = RecordingLogHandler.Store()
    let secret = "Bearer eyJhbGciOiJFZERTQSJ9.c2VjcmV0LXRva2VuLXZhbHVl.c2lnbmF0dXJl"
    try await TestServer.with(logger: store.logger(level: .info)) { server in
      try await server.withClient { client in
        let health = Grpc_Health_V1_Health.Client(wrapping: client)
        _ = try await health.check(.init(), metadata: ["authorization": .string(secret)])
        _ = try? await health.check(.with { $0.service = "4111111111111111" }, metadata: ["authorization": .string(secret)])
        let payments = Tender_Payments_V1_PaymentService.Client(wrapping: client)
        _ = try? await payments.getPayment(.with { $0.paymentID = "pay_1" }, metadata: ["authorization": .string(secret)])
      }
    }
    let lines = store.all.filter { $0.message == "rpc" }
    #expect(lines.count == 3)
    #expect(lines.map { $0.metadata["rpc.code"] } == ["OK", "NOT_FOUND", "UNIMPLEMENTED"])
    #expect(lines.map { $0.metadata["rpc.method"] } == [
      "grpc.health.v1.Health/Check", "grpc.health.v1.Health/Check", "tender.payments.v1.PaymentService/GetPayment",
    ])
    for line in lines {
      #expect(line.metadata["rpc.peer"]?.hasPrefix("ipv4:127.0.0.1:") == true)
      #expect(Double(line.metadata["rpc.duration_ms"] ?? "") != nil)
    }
    // Neither the token nor request contents reach any log record.
    for record in store.all {
      let text = record.message + " " + record.metadata.values.joined(separator: " ")
      #expect(!text.contains("eyJhbGciOiJFZERTQSJ9"))
      #expect(!text.contains("4111111111111111"))
    }
  }
}
