import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import TenderAPI
import TenderServer
import TenderDevSupport
import TenderTesting
import Testing

@Suite("Process lifecycle of tender serve")
struct LifecycleTests {
  @Test("SIGTERM reports NOT_SERVING to watchers, finishes their streams cleanly and exits 0")
  func sigtermDrains() async throws {
    let certificates = try TestCertificates.make()
    defer { try? FileManager.default.removeItem(at: certificates.directory) }
    let tender = try await RunningTender([
      "serve", "--grpc-address", "127.0.0.1:0", "--http-address", "127.0.0.1:0",
      "--tls-cert", certificates.serverCertificatePath, "--tls-key", certificates.serverKeyPath,
      "--database-url", try await TestPostgres.makeDatabase(), "--migrate",
      "--redis-url", try await TestRedis.sharedServer().url, "--key-encryption-key", TestServer.keyEncryptionKey,
      "--provider-url", "http://127.0.0.1:9", "--provider-api-key", "sk_test_unused",
      "--health-probe-interval", "100ms",
    ])

    var config = HTTP2ClientTransport.Posix.Config.defaults
    config.backoff.initial = .milliseconds(50)
    let transport = try HTTP2ClientTransport.Posix(
      target: .ipv4(host: "127.0.0.1", port: tender.port),
      transportSecurity: .tls { tls in
        tls.trustRoots = .certificates([.bytes(Array(certificates.authority.certificatePEM.utf8), format: .pem)])
      },
      config: config
    )
    let statuses = try await withGRPCClient(transport: transport) { client in
      let health = Grpc_Health_V1_Health.Client(wrapping: client)
      return try await health.watch(.init()) { response in
        var seen: [Grpc_Health_V1_HealthCheckResponse.ServingStatus] = []
        for try await message in response.messages {
          seen.append(message.status)
          if message.status == .serving, !seen.dropLast().contains(.serving) {
            tender.send(SIGTERM)
          }
        }
        return seen
      }
    }
    // The stream may begin NOT_SERVING until the first database probe answers.
    #expect(statuses.last == .notServing)
    #expect(statuses.contains(.serving))
    let status = try await tender.waitForExit(timeout: .seconds(20))
    #expect(status == 0, "\(tender.log)")
    #expect(tender.log.contains("draining: health reports NOT_SERVING"))
    #expect(tender.log.contains("gRPC server stopped"))
  }
}
