import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import TenderAPI
import TenderRPC
import TenderServer
import TenderDevSupport
import TenderTesting
import Testing

@Suite("HTTP bridge: health and metrics over TLS")
struct BridgeTests {
  @Test("/healthz and /readyz answer 200 while serving; /metrics serves the RPC series")
  func healthAndMetrics() async throws {
    try await TestServer.with { server in
      let base = "https://localhost:\(server.httpPort)"
      let ca = server.certificates.caPath
      let healthz = try await Curl.get(base + "/healthz", caPath: ca)
      #expect(healthz.status == 200)
      let readyz = try await Curl.get(base + "/readyz", caPath: ca)
      #expect(readyz.status == 200)
      #expect(readyz.body == "ready\n")

      try await server.withClient { client in
        _ = try await Grpc_Health_V1_Health.Client(wrapping: client).check(.init())
      }
      let metrics = try await Curl.get(base + "/metrics", caPath: ca)
      #expect(metrics.status == 200)
      #expect(metrics.contentType.hasPrefix("text/plain; version=0.0.4"))
      #expect(
        metrics.body.contains(
          #"grpc_server_handled_total{grpc_type="unary",grpc_service="grpc.health.v1.Health",grpc_method="Check",grpc_code="OK"} 1"#
        ))

      let missing = try await Curl.get(base + "/nope", caPath: ca)
      #expect(missing.status == 404)
    }
  }

  @Test("/readyz answers 503 while the database is unreachable, /healthz stays 200")
  func notReadyWithoutDatabase() async throws {
    try await TestServer.withUnreachableDatabase { server in
      let base = "https://localhost:\(server.httpPort)"
      // Once the probes have failed enough for the board to say NOT_SERVING.
      for await status in server.application.board.watch("") where status == .notServing { break }
      let readyz = try await Curl.get(base + "/readyz", caPath: server.certificates.caPath)
      #expect(readyz.status == 503)
      let healthz = try await Curl.get(base + "/healthz", caPath: server.certificates.caPath)
      #expect(healthz.status == 200)
    }
  }

  @Test("The bridge refuses TLS 1.1 and clients that do not trust the CA")
  func bridgeTLSRules() async throws {
    try await TestServer.with { server in
      let base = "https://localhost:\(server.httpPort)"
      let old = try await Curl.get(
        base + "/healthz", caPath: server.certificates.caPath, extraArguments: ["--tlsv1.1", "--tls-max", "1.1"])
      #expect(old.exitStatus != 0)
      #expect(old.status == 0)
      let stranger = try DevCertificateAuthority(name: "Some other CA")
      let path = server.certificates.directory.appendingPathComponent("stranger.pem").path
      try stranger.certificatePEM.write(toFile: path, atomically: true, encoding: .utf8)
      let untrusted = try await Curl.get(base + "/healthz", caPath: path)
      #expect(untrusted.exitStatus != 0)
      #expect(untrusted.status == 0)
      let modern = try await Curl.get(
        base + "/healthz", caPath: server.certificates.caPath, extraArguments: ["--tlsv1.2"])
      #expect(modern.status == 200)
    }
  }
}
