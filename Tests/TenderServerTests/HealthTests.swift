import GRPCCore
import GRPCNIOTransportHTTP2
import ServiceLifecycle
import TenderAPI
import SwiftProtobuf
import GRPCProtobuf
import TenderRPC
import TenderServer
import TenderTesting
import Testing

@Suite("Health")
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
        #expect(try error?.unpackGoogleRPCStatus()?.details.compactMap(\.errorInfo).first?.reason == "SERVICE_UNKNOWN")
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

/// What an unauthenticated caller can hold through Health.
@Suite("Health limits")
struct HealthLimitTests {
  @Test("A service name over 256 bytes is INVALID_ARGUMENT naming the field, in Check and in Watch")
  func longNamesRefused() async throws {
    try await InProcessServer.with { server in
      try await server.withClient { client in
        let health = Grpc_Health_V1_Health.Client(wrapping: client)
        let long = String(repeating: "a", count: HealthService.maximumServiceNameBytes + 1)
        let check = await #expect(throws: RPCError.self) { try await health.check(.with { $0.service = long }) }
        #expect(check?.code == .invalidArgument && check?.reason == "SERVICE_NAME_TOO_LONG")
        let violation = try check?.unpackGoogleRPCStatus()?.details.compactMap(\.badRequest).first?.violations.first
        #expect(violation?.field == "service")
        let watch = await #expect(throws: RPCError.self) {
          try await health.watch(.with { $0.service = long }) { response in
            for try await _ in response.messages {}
          }
        }
        #expect(watch?.code == .invalidArgument && watch?.reason == "SERVICE_NAME_TOO_LONG")
        // Bytes, not characters: 129 two-byte characters are 258 bytes.
        let wide = String(repeating: "é", count: 129)
        let wideCheck = await #expect(throws: RPCError.self) { try await health.check(.with { $0.service = wide }) }
        #expect(wideCheck?.reason == "SERVICE_NAME_TOO_LONG")
        // At the limit, an unknown name is just unknown.
        let atLimit = String(repeating: "a", count: HealthService.maximumServiceNameBytes)
        let unknown = await #expect(throws: RPCError.self) { try await health.check(.with { $0.service = atLimit }) }
        #expect(unknown?.code == .notFound)
        #expect(server.application.board.watches.streams == 0)
      }
    }
  }

  @Test(
    "Watches per connection are capped (RESOURCE_EXHAUSTED past 16); ended ones free their place and leave nothing behind"
  )
  func watchesCapped() async throws {
    // Over TLS: one connection is one peer, and a cancelled call resets its stream.
    try await TestServer.with(rpc: .tls) { server in
      let board = server.application.board
      try await server.withClient { client in
        let health = Grpc_Health_V1_Health.Client(wrapping: client)
        // Sixteen open watches of distinct unknown names, each past its first answer.
        let (started, startedContinuation) = AsyncStream.makeStream(of: Void.self)
        let open = Task {
          try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<16 {
              group.addTask {
                try await health.watch(.with { $0.service = "unknown.Service\(index)" }) { response in
                  for try await _ in response.messages { startedContinuation.yield() }
                }
              }
            }
            try await group.waitForAll()
          }
        }
        var seen = 0
        for await _ in started {
          seen += 1
          if seen == 16 { break }
        }
        #expect(board.watches.streams == 16 && board.watches.names == 16)
        let refused = await #expect(throws: RPCError.self) {
          try await health.watch(.with { $0.service = "one.More" }) { response in
            for try await _ in response.messages {}
          }
        }
        #expect(refused?.code == .resourceExhausted && refused?.reason == "TOO_MANY_WATCHES")
        open.cancel()
        _ = await open.result
        // Cancelled on the client; the server's streams end as the cancellation reaches them.
        let deadline = ContinuousClock.now + .seconds(10)
        while board.watches.streams > 0, ContinuousClock.now < deadline {
          try await Task.sleep(for: .milliseconds(10))
        }
        #expect(board.watches.streams == 0 && board.watches.names == 0)
        // The places are free again (each once its handler has returned, just after its stream).
        var again: Grpc_Health_V1_HealthCheckResponse.ServingStatus?
        while again == nil, ContinuousClock.now < deadline {
          do {
            again = try await health.watch(.with { $0.service = "" }) { response in
              for try await message in response.messages { return message.status }
              return nil
            }
          } catch let error as RPCError where error.reason == "TOO_MANY_WATCHES" {
            try await Task.sleep(for: .milliseconds(10))
          }
        }
        #expect(again == .serving)
      }
    }
  }
}
