import Foundation
import NIOSSL
import Prometheus
import TenderDevSupport
import TenderServer
import TenderTesting
import Testing

@Suite("TLS certificates reloaded without a restart")
struct TLSReloadTests {
  @Test(
    "A renewed certificate is served on both listeners without a restart; a pair whose key does not match is refused and the last good one kept"
  )
  func renewedCertificateServed() async throws {
    try await TestServer.with(
      rpc: .tls,
      configure: { flags, _ in flags[.tlsReloadInterval] = "200ms" }
    ) { server in
      let original = try NIOSSLCertificate(bytes: Array(server.certificates.server.certificatePEM.utf8), format: .pem)
      let trust = Array(server.certificates.authority.certificatePEM.utf8)
      for port in [server.port, server.httpPort] {
        #expect(try await Self.servedCertificate(port: port, trust: trust) == original)
      }
      let metrics = { server.application.metrics.emitToString() }
      let originalExpiry = try #require(
        MetricsTests.value(metrics(), "tender_tls_certificate_expiry_timestamp_seconds", [:]))

      // Half a renewal: the new certificate is on disk, its key not yet. Refused, counted, and the
      // old pair is still served.
      let renewed = try server.certificates.authority.issueServerCertificate(days: 30)
      try renewed.certificatePEM.write(
        toFile: server.certificates.serverCertificatePath, atomically: true, encoding: .utf8)
      _ = try await SettlementTests.eventually("counted a refused reload") {
        (MetricsTests.value(metrics(), "tender_tls_reload_failures_total", [:]) ?? 0) >= 1 ? true : nil
      }
      for port in [server.port, server.httpPort] {
        #expect(try await Self.servedCertificate(port: port, trust: trust) == original)
      }

      // The key arrives: new connections get the new certificate, on gRPC and on the bridge.
      try renewed.privateKeyPEM.write(toFile: server.certificates.serverKeyPath, atomically: true, encoding: .utf8)
      let expected = try NIOSSLCertificate(bytes: Array(renewed.certificatePEM.utf8), format: .pem)
      for port in [server.port, server.httpPort] {
        _ = try await SettlementTests.eventually("served the renewed certificate on \(port)") {
          try await Self.servedCertificate(port: port, trust: trust) == expected ? true : nil
        }
      }
      let renewedExpiry = try #require(
        MetricsTests.value(metrics(), "tender_tls_certificate_expiry_timestamp_seconds", [:]))
      // 30 days instead of 365.
      #expect(abs(originalExpiry - renewedExpiry - 335 * 86_400) < 120)
      // An RPC over a new connection is served with it.
      try await server.withTLSClient { client in
        #expect(await TLSTests.checkFailure(client, timeout: .seconds(30)) == nil)
      }
    }
  }

  /// The leaf certificate the server presents in a TLS handshake on `port` (verified against `trust`).
  static func servedCertificate(port: Int, trust: [UInt8]) async throws -> NIOSSLCertificate? {
    var configuration = TLSConfiguration.makeClientConfiguration()
    configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(trust))
    configuration.applicationProtocols = ["h2", "http/1.1"]
    return try await TLSHandshake.handshake(host: "127.0.0.1", port: port, configuration: configuration)
      .peerCertificate
  }
}
