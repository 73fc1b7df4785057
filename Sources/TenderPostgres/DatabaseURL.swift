import Foundation
public import PostgresNIO
import NIOSSL

/// Parses a libpq-style `postgres://user:password@host:port/database?sslmode=…` URL.
///
/// `host` may also be given as a query parameter naming a Unix socket directory
/// (`postgres://user@/db?host=/run/postgresql&port=5432`). `sslmode` accepts `disable`, `prefer`
/// (the default), `require`, `verify-ca` (the server's certificate must chain to a trusted root)
/// and `verify-full` (and must name the host); `sslrootcert=/path/ca.pem` names the roots to trust
/// for the verifying modes (the system's otherwise). Every connection runs with a `statement_timeout`
/// and a `lock_timeout` (defaults `defaultStatementTimeout` and `defaultLockTimeout`; the URL's
/// query parameters of those names, in PostgreSQL's units such as `500ms` or `10s`, or `0` for
/// none), so a call never waits on the database without end.
public enum DatabaseURL {
  public static let defaultStatementTimeout = "15s"
  public static let defaultLockTimeout = "5s"

  /// Why a URL was refused; the message never repeats the password.
  public struct Invalid: Error, CustomStringConvertible {
    public let description: String
  }

  public static func configuration(from string: String) throws -> PostgresClient.Configuration {
    guard let components = URLComponents(string: string),
      let scheme = components.scheme, scheme == "postgres" || scheme == "postgresql"
    else {
      throw Invalid(description: "must be a postgres:// URL")
    }
    let query = Dictionary(
      (components.queryItems ?? []).map { ($0.name, $0.value ?? "") },
      uniquingKeysWith: { _, last in last }
    )
    guard let username = components.user ?? query["user"], !username.isEmpty else {
      throw Invalid(description: "must name a user (postgres://USER@host/database)")
    }
    let password = components.password ?? query["password"]
    var database = components.path
    if database.hasPrefix("/") { database.removeFirst() }
    guard !database.isEmpty, !database.contains("/") else {
      throw Invalid(description: "must name one database (postgres://user@host/DATABASE)")
    }
    let portText = query["port"] ?? components.port.map(String.init) ?? "5432"
    guard let port = Int(portText), (1...65535).contains(port) else {
      throw Invalid(description: "port must be between 1 and 65535")
    }

    let host = components.host.flatMap { $0.isEmpty ? nil : $0 } ?? query["host"] ?? "localhost"
    var configuration: PostgresClient.Configuration
    if host.hasPrefix("/") {
      let socket = host.hasSuffix("/") ? "\(host).s.PGSQL.\(port)" : "\(host)/.s.PGSQL.\(port)"
      configuration = .init(unixSocketPath: socket, username: username, password: password, database: database)
    } else {
      let tls: PostgresClient.Configuration.TLS
      switch query["sslmode"] ?? "prefer" {
      case "disable":
        tls = .disable
      case "prefer", "allow":
        var tlsConfiguration = TLSConfiguration.makeClientConfiguration()
        tlsConfiguration.certificateVerification = .none
        tls = .prefer(tlsConfiguration)
      case "require":
        var tlsConfiguration = TLSConfiguration.makeClientConfiguration()
        tlsConfiguration.certificateVerification = .none
        tls = .require(tlsConfiguration)
      case "verify-ca", "verify-full":
        // verify-ca: the certificate must chain to a trusted root; verify-full: and name the host.
        var tlsConfiguration = TLSConfiguration.makeClientConfiguration()
        tlsConfiguration.minimumTLSVersion = .tlsv12
        if query["sslmode"] == "verify-ca" { tlsConfiguration.certificateVerification = .noHostnameVerification }
        if let root = query["sslrootcert"], !root.isEmpty {
          guard FileManager.default.isReadableFile(atPath: root) else {
            throw Invalid(description: "sslrootcert \(root) cannot be read")
          }
          tlsConfiguration.trustRoots = .file(root)
        }
        tls = .require(tlsConfiguration)
      case let other:
        throw Invalid(
          description: "sslmode '\(other)' is not one of disable, prefer, require, verify-ca, verify-full")
      }
      if query["sslrootcert"] != nil, !["verify-ca", "verify-full"].contains(query["sslmode"] ?? "") {
        throw Invalid(description: "sslrootcert needs sslmode=verify-ca or verify-full")
      }
      configuration = .init(
        host: host, port: port, username: username, password: password, database: database, tls: tls)
    }
    for (name, fallback) in [
      ("statement_timeout", Self.defaultStatementTimeout), ("lock_timeout", Self.defaultLockTimeout),
    ] {
      let value = query[name] ?? fallback
      guard Self.isDuration(value) else {
        throw Invalid(description: "\(name) must be a duration such as 500ms, 10s or 1min (0 for none)")
      }
      configuration.options.additionalStartupParameters.append((name, value))
    }
    if let maximum = query["pool_max"] {
      guard let value = Int(maximum), value > 0 else {
        throw Invalid(description: "pool_max must be a positive integer")
      }
      configuration.options.maximumConnections = value
    }
    return configuration
  }

  /// A whole number with one of PostgreSQL's time units (or none, for milliseconds).
  static func isDuration(_ text: String) -> Bool {
    let digits = text.prefix { $0.isASCII && $0.isNumber }
    guard !digits.isEmpty, digits.count <= 9 else { return false }
    return ["", "ms", "s", "min", "h"].contains(String(text.dropFirst(digits.count)))
  }
}
