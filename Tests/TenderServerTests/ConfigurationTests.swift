import Foundation
import TenderServer
import TenderDevSupport
import TenderTesting
import Testing

@Suite("Invalid configuration exits non-zero with one line naming the setting")
struct ConfigurationTests {
  struct Case: Sendable, CustomTestStringConvertible {
    let name: String
    let arguments: [String]
    let environment: [String: String]
    let setting: String
    let problem: String
    var testDescription: String { self.name }
  }

  /// Certificates and files shared by the cases; made once.
  static let files: (cert: String, key: String, otherKey: String, garbage: String) = {
    let certificates = try! TestCertificates.make()
    let other = try! DevCertificateAuthority().issueServerCertificate()
    let otherKey = certificates.directory.appendingPathComponent("other-key.pem").path
    try! other.privateKeyPEM.write(toFile: otherKey, atomically: true, encoding: .utf8)
    let garbage = certificates.directory.appendingPathComponent("garbage.pem").path
    try! "this is not a key\n".write(toFile: garbage, atomically: true, encoding: .utf8)
    return (certificates.serverCertificatePath, certificates.serverKeyPath, otherKey, garbage)
  }()

  static let database = "postgres://tender@127.0.0.1:5432/tender"
  static let redis = "redis://127.0.0.1:6379"
  static let kek = TestServer.keyEncryptionKey

  static var cases: [Case] {
    let f = files
    let tls = ["--tls-cert", f.cert, "--tls-key", f.key]
    let (database, redis, kek) = (Self.database, Self.redis, Self.kek)
    return [
      Case(
        name: "missing certificate file",
        arguments: ["--tls-cert", "/nonexistent/server.pem", "--tls-key", f.key, "--database-url", database],
        environment: [:], setting: "TENDER_TLS_CERT (--tls-cert)", problem: "does not exist"),
      Case(
        name: "certificate file that is not PEM",
        arguments: ["--tls-cert", f.garbage, "--tls-key", f.key, "--database-url", database], environment: [:],
        setting: "TENDER_TLS_CERT (--tls-cert)", problem: "is not a PEM certificate chain"),
      Case(
        name: "unreadable private key",
        arguments: ["--tls-cert", f.cert, "--tls-key", f.garbage, "--database-url", database], environment: [:],
        setting: "TENDER_TLS_KEY (--tls-key)", problem: "is not a PEM private key"),
      Case(
        name: "key that does not match the certificate",
        arguments: ["--tls-cert", f.cert, "--tls-key", f.otherKey, "--database-url", database], environment: [:],
        setting: "TENDER_TLS_KEY (--tls-key)", problem: "does not match the certificate"),
      Case(
        name: "no certificate and no --insecure", arguments: ["--database-url", database], environment: [:],
        setting: "TENDER_TLS_CERT (--tls-cert)", problem: "is required"),
      Case(
        name: "port out of range", arguments: tls + ["--grpc-address", "127.0.0.1:99999", "--database-url", database],
        environment: [:], setting: "TENDER_GRPC_ADDRESS (--grpc-address)", problem: "must be a number from 0 to 65535"),
      Case(
        name: "address without a port", arguments: tls + ["--grpc-address", "localhost", "--database-url", database],
        environment: [:], setting: "TENDER_GRPC_ADDRESS (--grpc-address)", problem: "must be host:port"),
      Case(
        name: "bad port from the environment", arguments: tls + ["--database-url", database],
        environment: ["TENDER_GRPC_ADDRESS": "0.0.0.0:http"], setting: "TENDER_GRPC_ADDRESS (--grpc-address)",
        problem: "must be a number from 0 to 65535"),
      Case(
        name: "database URL of another scheme", arguments: tls + ["--database-url", "mysql://root@localhost/tender"],
        environment: [:], setting: "TENDER_DATABASE_URL (--database-url)", problem: "must be a postgres:// URL"),
      Case(
        name: "database URL without a database", arguments: tls + ["--database-url", "postgres://tender@localhost"],
        environment: [:], setting: "TENDER_DATABASE_URL (--database-url)", problem: "must name one database"),
      Case(
        name: "database URL with a bad sslmode", arguments: tls,
        environment: ["TENDER_DATABASE_URL": database + "?sslmode=sometimes"],
        setting: "TENDER_DATABASE_URL (--database-url)", problem: "sslmode"),
      Case(
        name: "database URL with a lock timeout that is no duration", arguments: tls,
        environment: ["TENDER_DATABASE_URL": database + "?lock_timeout=soon"],
        setting: "TENDER_DATABASE_URL (--database-url)", problem: "lock_timeout must be a duration"),
      Case(
        name: "metrics token too short to be a secret", arguments: tls + ["--database-url", database],
        environment: ["TENDER_METRICS_TOKEN": "short"], setting: "TENDER_METRICS_TOKEN (--metrics-token)",
        problem: "must be 32 to 256 printable characters"),
      Case(
        name: "no database URL", arguments: tls, environment: [:], setting: "TENDER_DATABASE_URL (--database-url)",
        problem: "is required"),
      Case(
        name: "plaintext with the HTTP bridge on a public address",
        arguments: [
          "--insecure", "--grpc-address", "127.0.0.1:0", "--http-address", "0.0.0.0:8080", "--database-url", database,
        ], environment: [:], setting: "TENDER_INSECURE (--insecure)",
        problem: "only allowed on a loopback address, not '0.0.0.0'"),
      Case(
        name: "HTTP bridge address without a port",
        arguments: tls + ["--http-address", "localhost", "--database-url", database], environment: [:],
        setting: "TENDER_HTTP_ADDRESS (--http-address)", problem: "must be host:port"),
      Case(
        name: "plaintext on a public address",
        arguments: ["--insecure", "--grpc-address", "0.0.0.0:8080", "--database-url", database], environment: [:],
        setting: "TENDER_INSECURE (--insecure)", problem: "only allowed on a loopback address"),
      Case(
        name: "deadline without a unit", arguments: tls + ["--default-deadline", "30", "--database-url", database],
        environment: [:], setting: "TENDER_DEFAULT_DEADLINE (--default-deadline)", problem: "duration"),
      Case(
        name: "zero concurrent streams",
        arguments: tls + ["--max-concurrent-streams", "0", "--database-url", database], environment: [:],
        setting: "TENDER_MAX_CONCURRENT_STREAMS (--max-concurrent-streams)", problem: "whole number"),
      Case(
        name: "no Redis URL", arguments: tls + ["--database-url", database, "--key-encryption-key", kek],
        environment: [:], setting: "TENDER_REDIS_URL (--redis-url)", problem: "is required"),
      Case(
        name: "Redis URL of another scheme",
        arguments: tls + ["--database-url", database, "--redis-url", "http://localhost:6379"], environment: [:],
        setting: "TENDER_REDIS_URL (--redis-url)", problem: "must be a redis:// or rediss:// URL"),
      Case(
        name: "Redis URL with an unknown parameter",
        arguments: tls + ["--database-url", database, "--redis-url", redis + "?timeout=5"], environment: [:],
        setting: "TENDER_REDIS_URL (--redis-url)", problem: "unknown parameter 'timeout'"),
      Case(
        name: "Redis URL with a bad command timeout",
        arguments: tls + ["--database-url", database, "--redis-url", redis + "?command_timeout=fast"], environment: [:],
        setting: "TENDER_REDIS_URL (--redis-url)", problem: "command_timeout must be a duration"),
      Case(
        name: "no key-encryption key", arguments: tls + ["--database-url", database, "--redis-url", redis],
        environment: [:], setting: "TENDER_KEY_ENCRYPTION_KEY (--key-encryption-key)", problem: "is required"),
      Case(
        name: "key-encryption key of the wrong size",
        arguments: tls + ["--database-url", database, "--redis-url", redis],
        environment: ["TENDER_KEY_ENCRYPTION_KEY": "c2hvcnQta2V5"],
        setting: "TENDER_KEY_ENCRYPTION_KEY (--key-encryption-key)", problem: "must be 32 bytes"),
      Case(
        name: "rate limit without a unit", arguments: tls + ["--database-url", database, "--rate-limit", "50"],
        environment: [:], setting: "TENDER_RATE_LIMIT (--rate-limit)", problem: "must look like"),
      Case(
        name: "IssueToken rate limit with a bad burst",
        arguments: tls + ["--database-url", database, "--issue-token-rate-limit", "30/m,burst=0"], environment: [:],
        setting: "TENDER_ISSUE_TOKEN_RATE_LIMIT (--issue-token-rate-limit)", problem: "must look like"),
      Case(
        name: "unknown Redis failure policy",
        arguments: tls + ["--database-url", database, "--rate-limit-on-redis-failure", "maybe"], environment: [:],
        setting: "TENDER_RATE_LIMIT_ON_REDIS_FAILURE (--rate-limit-on-redis-failure)", problem: "must be open or closed"
      ),
      Case(
        name: "token lifetime under a minute",
        arguments: tls + ["--database-url", database, "--token-lifetime", "10s"], environment: [:],
        setting: "TENDER_TOKEN_LIFETIME (--token-lifetime)", problem: "from 1m to 24h"),
      Case(
        name: "idempotency lock not longer than a whole provider call",
        arguments: tls + [
          "--database-url", database, "--redis-url", redis, "--key-encryption-key", kek, "--provider-timeout", "30s",
          "--idempotency-lock", "90s",
        ], environment: [:], setting: "TENDER_IDEMPOTENCY_LOCK (--idempotency-lock)",
        problem: "must be longer than a whole provider call: 94s"),
      Case(
        name: "provider attempts out of range",
        arguments: tls + [
          "--database-url", database, "--redis-url", redis, "--key-encryption-key", kek, "--provider-attempts", "0",
        ], environment: [:], setting: "TENDER_PROVIDER_ATTEMPTS (--provider-attempts)",
        problem: "must be a whole number from 1 to 10"),
      Case(
        name: "client secret cost too low",
        arguments: tls + [
          "--database-url", database, "--redis-url", redis, "--key-encryption-key", kek, "--client-secret-cost", "9",
        ], environment: [:], setting: "TENDER_CLIENT_SECRET_COST (--client-secret-cost)",
        problem: "must be a whole number from 10 to 18"),
      Case(
        name: "provider max backoff not a duration",
        arguments: tls + [
          "--database-url", database, "--redis-url", redis, "--key-encryption-key", kek, "--provider-max-backoff",
          "soon",
        ], environment: [:], setting: "TENDER_PROVIDER_MAX_BACKOFF (--provider-max-backoff)", problem: "duration"),
      Case(
        name: "completer interval of zero",
        arguments: tls + [
          "--database-url", database, "--redis-url", redis, "--key-encryption-key", kek, "--completer-interval", "0s",
        ], environment: [:], setting: "TENDER_COMPLETER_INTERVAL (--completer-interval)", problem: "must be"),
      Case(
        name: "OTLP endpoint without a scheme",
        arguments: tls + ["--database-url", database, "--otlp-endpoint", "localhost:4317"], environment: [:],
        setting: "TENDER_OTLP_ENDPOINT (--otlp-endpoint)", problem: "must be an http:// or https:// URL"),
      Case(
        name: "no provider API key",
        arguments: tls + ["--database-url", database, "--redis-url", redis, "--key-encryption-key", kek],
        environment: [:], setting: "TENDER_PROVIDER_API_KEY (--provider-api-key)", problem: "is required"),
      Case(
        name: "provider URL without a scheme",
        arguments: tls + [
          "--database-url", database, "--redis-url", redis, "--key-encryption-key", kek, "--provider-url",
          "api.stripe.com",
        ], environment: [:], setting: "TENDER_PROVIDER_URL (--provider-url)",
        problem: "must be an http:// or https:// URL"),
      Case(
        name: "provider timeout without a unit",
        arguments: tls + [
          "--database-url", database, "--redis-url", redis, "--key-encryption-key", kek, "--provider-timeout", "10",
        ], environment: [:], setting: "TENDER_PROVIDER_TIMEOUT (--provider-timeout)", problem: "duration"),
      Case(
        name: "no provider connections",
        arguments: tls + [
          "--database-url", database, "--redis-url", redis, "--key-encryption-key", kek, "--provider-connections", "0",
        ], environment: [:], setting: "TENDER_PROVIDER_CONNECTIONS (--provider-connections)",
        problem: "must be a whole number from 1 to 1024"),
      Case(
        name: "no write lanes",
        arguments: tls + ["--database-url", database, "--database-write-lanes", "0"], environment: [:],
        setting: "TENDER_DATABASE_WRITE_LANES (--database-write-lanes)", problem: "must be a whole number from 1 to 64"),
      Case(
        name: "write stall past 10 s",
        arguments: tls + ["--database-url", database, "--database-write-stall", "11s"], environment: [:],
        setting: "TENDER_DATABASE_WRITE_STALL (--database-write-stall)", problem: "must be from 0 to 10s"),
      Case(
        name: "unknown log level", arguments: tls + ["--database-url", database],
        environment: ["TENDER_LOG_LEVEL": "loud"], setting: "TENDER_LOG_LEVEL (--log-level)", problem: "must be one of"),
    ]
  }

  @Test("tender serve refuses it", arguments: cases)
  func refused(_ invalid: Case) async throws {
    let outcome = try await TenderExecutable.run(["serve"] + invalid.arguments, environment: invalid.environment)
    #expect(outcome.status == 78)
    let lines = outcome.standardError.split(separator: "\n", omittingEmptySubsequences: true)
    #expect(lines.count == 1, "\(outcome.standardError)")
    let line = String(lines.first ?? "")
    #expect(line.hasPrefix("tender: invalid configuration: \(invalid.setting): "), "\(line)")
    #expect(line.contains(invalid.problem), "\(line)")
  }

  @Test("The database password never appears in a configuration error")
  func passwordNotEchoed() async throws {
    let outcome = try await TenderExecutable.run(
      [
        "serve", "--insecure", "--grpc-address", "127.0.0.1:0", "--http-address", "127.0.0.1:0", "--database-url",
        "postgres://tender:hunter2secret@localhost:5432/tender?sslmode=maybe",
      ]
    )
    #expect(outcome.status == 78)
    #expect(!outcome.standardError.contains("hunter2secret"))
    #expect(outcome.standardError.contains("TENDER_DATABASE_URL"))
  }

  @Test("A key-encryption key that cannot be used is never echoed")
  func keyEncryptionKeyNotEchoed() async throws {
    let files = Self.files
    let outcome = try await TenderExecutable.run(
      [
        "serve", "--tls-cert", files.cert, "--tls-key", files.key, "--database-url", Self.database, "--redis-url",
        Self.redis,
      ],
      environment: ["TENDER_KEY_ENCRYPTION_KEY": "dG9wLXNlY3JldC1idXQtdG9vLXNob3J0"]
    )
    #expect(outcome.status == 78)
    #expect(!outcome.standardError.contains("dG9wLXNlY3JldC1idXQtdG9vLXNob3J0"))
    #expect(outcome.standardError.contains("TENDER_KEY_ENCRYPTION_KEY"))
  }
}
