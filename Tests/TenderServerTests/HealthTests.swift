import GRPCCore
import GRPCNIOTransportHTTP2
import ServiceLifecycle
import TenderAPI
import SwiftProtobuf
import TenderServer
import TenderTesting
import Testing

@Suite("Health over TLS")
struct HealthTests {
  @Test("Check answers SERVING for the server and each Tender service, NOT_FOUND for unknown ones")
  func checkReportsServing() async throws {
    try await TestServer.with { server in
      try await server.withClient { client in
        let health = Grpc_Health_V1_Health.Client(wrapping: client)
        // Readiness is re-probed every 200 ms with a 2 s timeout; on a machine loaded by the whole
        // suite one probe can time out and flip it for a moment. Each service must be SERVING
        // again within a few seconds, never stay anything else.
        func settled(_ service: String) async throws -> Grpc_Health_V1_HealthCheckResponse.ServingStatus {
          let deadline = ContinuousClock.now + .seconds(10)
          var status = try await health.check(.with { $0.service = service }).status
          while status != .serving, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(100))
            status = try await health.check(.with { $0.service = service }).status
          }
          return status
        }
        let server = try await settled("")
        #expect(server == .serving)
        for service in [
          "tender.payments.v1.PaymentService", "tender.refunds.v1.RefundService", "tender.auth.v1.AuthService",
        ] {
          let status = try await settled(service)
          #expect(status == .serving, "\(service)")
        }
        let error = await #expect(throws: RPCError.self) {
          try await health.check(.with { $0.service = "no.such.Service" })
        }
        #expect(error?.code == .notFound)
      }
    }
  }

  @Test("Watch streams SERVING, then NOT_SERVING as soon as the drain begins, then ends")
  func watchReportsNotServingOnDrain() async throws {
    try await TestServer.with { server in
      try await server.withClient { client in
        let health = Grpc_Health_V1_Health.Client(wrapping: client)
        let statuses = try await health.watch(.init()) { response in
          var seen: [Grpc_Health_V1_HealthCheckResponse.ServingStatus] = []
          for try await message in response.messages {
            seen.append(message.status)
            if seen.count == 1 {
              #expect(message.status == .serving)
              await server.application.serviceGroup.triggerGracefulShutdown()
            }
          }
          return seen
        }
        #expect(statuses == [.serving, .notServing])
      }
    }
  }

  @Test("Watch of an unknown service answers SERVICE_UNKNOWN instead of failing")
  func watchUnknownService() async throws {
    try await TestServer.with { server in
      try await server.withClient { client in
        let health = Grpc_Health_V1_Health.Client(wrapping: client)
        let first = try await health.watch(.with { $0.service = "no.such.Service" }) {
          response -> Grpc_Health_V1_HealthCheckResponse.ServingStatus? in
          for try await message in response.messages { return message.status }
          return nil
        }
        #expect(first == .serviceUnknown)
      }
    }
  }

  @Test("Health reports NOT_SERVING while the database is unreachable")
  func notServingWithoutDatabase() async throws {
    try await TestServer.withUnreachableDatabase { server in
      try await server.withClient { client in
        let health = Grpc_Health_V1_Health.Client(wrapping: client)
        // Give the monitor several probe intervals; it must never report SERVING.
        for _ in 0..<5 {
          #expect(try await health.check(.init()).status == .notServing)
          try await Task.sleep(for: .milliseconds(200))
        }
      }
    }
  }
}
