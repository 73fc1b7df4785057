import Foundation
import GRPCCore
import GRPCInProcessTransport
import GRPCNIOTransportHTTP2
import Prometheus
import SwiftProtobuf
import TenderAPI
import TenderServer
import TenderTesting
import Testing

@Suite("RPC metrics")
struct MetricsTests {
  /// The value of the sample `name` whose labels are exactly `labels`, or nil when there is none.
  static func value(_ text: String, _ name: String, _ labels: [String: String]) -> Double? {
    if labels.isEmpty {
      for line in text.split(separator: "\n") where line.hasPrefix(name + " ") {
        return Double(line.dropFirst(name.count + 1).trimmingCharacters(in: .whitespaces))
      }
      return nil
    }
    for line in text.split(separator: "\n") where line.hasPrefix(name + "{") {
      guard let close = line.lastIndex(of: "}") else { continue }
      let body = line[line.index(line.startIndex, offsetBy: name.count + 1)..<close]
      var parsed: [String: String] = [:]
      for pair in body.split(separator: ",") {
        let parts = pair.split(separator: "=", maxSplits: 1)
        guard parts.count == 2 else { continue }
        parsed[String(parts[0])] = String(parts[1].dropFirst().dropLast())
      }
      if parsed == labels {
        return Double(line[line.index(after: close)...].trimmingCharacters(in: .whitespaces))
      }
    }
    return nil
  }

  @Test("After known calls, the go-grpc-prometheus series show exactly those calls, refused ones included")
  func exactSeriesAfterKnownCalls() async throws {
    try await InProcessServer.with { server in
      try await server.withClient { client in
        let health = Grpc_Health_V1_Health.Client(wrapping: client)
        for _ in 0..<3 { _ = try await health.check(.init()) }
        _ = try? await health.check(.with { $0.service = "no.such.Service" })
        let payments = Tender_Payments_V1_PaymentService.Client(wrapping: client)
        _ = try? await payments.getPayment(.with { $0.paymentID = "pay_1" })
        let reflection = Grpc_Reflection_V1_ServerReflection.Client(wrapping: client)
        _ = try await reflection.serverReflectionInfo(
          requestProducer: { writer in
            try await writer.write(.with { $0.listServices = "" })
            try await writer.write(.with { $0.fileByFilename = "tender/type/v1/money.proto" })
          }
        ) { response in
          for try await _ in response.messages {}
        }
      }
      let text = server.application.metrics.emitToString()
      let check = ["grpc_type": "unary", "grpc_service": "grpc.health.v1.Health", "grpc_method": "Check"]
      #expect(Self.value(text, "grpc_server_started_total", check) == 4)
      #expect(Self.value(text, "grpc_server_handled_total", check.merging(["grpc_code": "OK"]) { $1 }) == 3)
      #expect(Self.value(text, "grpc_server_handled_total", check.merging(["grpc_code": "NotFound"]) { $1 }) == 1)
      #expect(Self.value(text, "grpc_server_msg_received_total", check) == 4)
      #expect(Self.value(text, "grpc_server_msg_sent_total", check) == 3)
      #expect(Self.value(text, "grpc_server_handling_seconds_count", check) == 4)

      let getPayment = [
        "grpc_type": "unary", "grpc_service": "tender.payments.v1.PaymentService", "grpc_method": "GetPayment",
      ]
      #expect(Self.value(text, "grpc_server_started_total", getPayment) == 1)
      // Refused by auth (no token), and still counted: metrics sit outside auth.
      #expect(
        Self.value(text, "grpc_server_handled_total", getPayment.merging(["grpc_code": "Unauthenticated"]) { $1 }) == 1)
      #expect(Self.value(text, "tender_auth_failures_total", ["reason": "missing_token"]) == 1)
      #expect(Self.value(text, "tender_auth_failures_total", ["reason": "bad_signature"]) == 0)
      #expect(Self.value(text, "grpc_server_msg_sent_total", getPayment) == 0)

      let reflection = [
        "grpc_type": "bidi_stream", "grpc_service": "grpc.reflection.v1.ServerReflection",
        "grpc_method": "ServerReflectionInfo",
      ]
      #expect(Self.value(text, "grpc_server_msg_received_total", reflection) == 2)
      #expect(Self.value(text, "grpc_server_msg_sent_total", reflection) == 2)
      #expect(Self.value(text, "grpc_server_handled_total", reflection.merging(["grpc_code": "OK"]) { $1 }) == 1)
    }
  }
}
