import Foundation
import Logging
import PostgresNIO
import TenderDevSupport
import TenderPostgres
import TenderTesting
import Testing

/// The database URL's TLS modes against a real PostgreSQL serving TLS with a certificate of a
/// test CA that names `localhost` only.
@Suite("PostgreSQL over TLS: sslmode verify-ca and verify-full with sslrootcert")
struct PostgresTLSTests {
  @Test(
    "verify-full needs the trusted CA and the host's name; verify-ca needs the CA only; each connection then uses TLS"
  )
  func verification() async throws {
    let directory = URL(fileURLWithPath: "/tmp").appendingPathComponent("tender-test-pgtls-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: directory.path)
    defer { try? FileManager.default.removeItem(at: directory) }
    let authority = try DevCertificateAuthority()
    let stranger = try DevCertificateAuthority(name: "Another CA")
    let issued = try authority.issueServerCertificate(dnsNames: ["localhost"], ipAddresses: [])
    let ca = directory.appendingPathComponent("ca.pem").path
    let other = directory.appendingPathComponent("other-ca.pem").path
    try authority.certificatePEM.write(toFile: ca, atomically: true, encoding: .utf8)
    try stranger.certificatePEM.write(toFile: other, atomically: true, encoding: .utf8)
    let port = try LocalPostgres.freePort()
    let cluster = try await LocalPostgres.start(
      in: directory.appendingPathComponent("postgres"), port: port, database: "tender_tls", durable: false,
      tls: (issued.certificatePEM, issued.privateKeyPEM))
    defer { cluster.destroy() }

    enum Outcome: Equatable {
      /// A session, encrypted or not.
      case session(ssl: Bool)
      /// The pool's connection attempt failed in the TLS handshake (certificate verification).
      case refusedByTLS
      case nothing
    }
    /// What a client with the URL's settings gets: a session, or the TLS refusal its pool logs.
    func outcome(_ host: String, _ query: String) async throws -> Outcome {
      var configuration = try DatabaseURL.configuration(from: "postgres://postgres@\(host):\(port)/tender_tls?\(query)")
      configuration.options.connectTimeout = .seconds(10)
      let records = RecordingLogHandler.Store()
      let logger = records.logger(label: "tender.test.postgres-tls", level: .debug)
      let client = PostgresClient(configuration: configuration, backgroundLogger: logger)
      return await withTaskGroup(of: Outcome?.self) { group in
        group.addTask {
          await client.run()
          return nil
        }
        group.addTask {
          guard let rows = try? await client.query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") else {
            return nil
          }
          return (try? await rows.collect().first?.decode(Bool.self)).map { .session(ssl: $0) } ?? nil
        }
        group.addTask {
          // Until the pool reports a failed TLS handshake (it retries; the query waits meanwhile).
          for _ in 0..<600 {
            let refused = records.all.contains { record in
              let text = (record.message + " " + record.metadata.values.joined(separator: " ")).lowercased()
              return text.contains("handshake") || text.contains("certificate")
            }
            if refused { return .refusedByTLS }
            try? await Task.sleep(for: .milliseconds(50))
          }
          return .nothing
        }
        var answer = Outcome.nothing
        for await result in group {
          guard let result else { continue }
          answer = result
          break
        }
        group.cancelAll()
        return answer
      }
    }

    #expect(try await outcome("localhost", "sslmode=verify-full&sslrootcert=\(ca)") == .session(ssl: true))
    #expect(try await outcome("127.0.0.1", "sslmode=verify-ca&sslrootcert=\(ca)") == .session(ssl: true))
    #expect(try await outcome("localhost", "sslmode=require") == .session(ssl: true))
    #expect(try await outcome("localhost", "sslmode=disable") == .session(ssl: false))
    // The certificate does not name 127.0.0.1.
    #expect(try await outcome("127.0.0.1", "sslmode=verify-full&sslrootcert=\(ca)") == .refusedByTLS)
    // Another CA's roots, or the system's, do not trust the certificate.
    #expect(try await outcome("localhost", "sslmode=verify-full&sslrootcert=\(other)") == .refusedByTLS)
    #expect(try await outcome("127.0.0.1", "sslmode=verify-ca&sslrootcert=\(other)") == .refusedByTLS)
    #expect(try await outcome("localhost", "sslmode=verify-full") == .refusedByTLS)
  }

  @Test("sslrootcert is refused without a verifying sslmode, and when it cannot be read")
  func refusedSettings() {
    #expect(throws: DatabaseURL.Invalid.self) {
      try DatabaseURL.configuration(from: "postgres://u@db/tender?sslmode=require&sslrootcert=/etc/hostname")
    }
    #expect(throws: DatabaseURL.Invalid.self) {
      try DatabaseURL.configuration(from: "postgres://u@db/tender?sslmode=verify-full&sslrootcert=/no/such/ca.pem")
    }
    #expect(throws: DatabaseURL.Invalid.self) {
      try DatabaseURL.configuration(from: "postgres://u@db/tender?sslmode=verify-everything")
    }
  }
}
