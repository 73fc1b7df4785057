import Foundation
public import TenderCore

/// Where Redis is and how patient to be with it.
public struct RedisConfiguration: Sendable {
  public var host: String
  public var port: Int
  /// The ACL user (Redis 6+) that `password` belongs to; nil for the default user.
  public var username: String?
  public var password: Secret<String>?
  public var database: Int
  /// TLS (`rediss://`): the server's certificate is verified against `caFile` (PEM) or, without
  /// one, the system's trust roots, and its name against `host`.
  public var tls: TLS?
  /// Connections kept open; commands are spread over them and pipelined on each.
  public var poolSize: Int
  public var connectTimeout: Duration
  /// A command without a reply by then fails with `RedisError.timeout`.
  public var commandTimeout: Duration
  /// First wait after a failed connection attempt; doubles up to `maximumBackoff`.
  public var initialBackoff: Duration
  public var maximumBackoff: Duration

  public init(
    host: String,
    port: Int = 6379,
    username: String? = nil,
    password: Secret<String>? = nil,
    database: Int = 0,
    tls: TLS? = nil,
    poolSize: Int = 4,
    connectTimeout: Duration = .milliseconds(500),
    commandTimeout: Duration = .milliseconds(250),
    initialBackoff: Duration = .milliseconds(100),
    maximumBackoff: Duration = .seconds(5)
  ) {
    self.host = host
    self.port = port
    self.username = username
    self.password = password
    self.database = database
    self.tls = tls
    self.poolSize = poolSize
    self.connectTimeout = connectTimeout
    self.commandTimeout = commandTimeout
    self.initialBackoff = initialBackoff
    self.maximumBackoff = maximumBackoff
  }

  /// How to verify a TLS server.
  public struct TLS: Sendable, Equatable {
    /// PEM file of the certificate authorities to trust; nil for the system's.
    public var caFile: String?

    public init(caFile: String? = nil) {
      self.caFile = caFile
    }
  }

  /// Why a `redis://` URL was refused; the message never repeats the password.
  public struct Invalid: Error, CustomStringConvertible {
    public let description: String
  }

  /// Parses `redis://[[user]:password@]host[:port][/database][?…]`, or `rediss://…` for TLS, with
  /// the parameters `connect_timeout=500ms`, `command_timeout=250ms`, `pool_size=4` and, for
  /// `rediss://`, `ssl_ca_certs=/path/ca.pem`. A user name selects a Redis 6 ACL user.
  public init(url: String) throws {
    guard let components = URLComponents(string: url), let scheme = components.scheme,
      scheme == "redis" || scheme == "rediss"
    else {
      throw Invalid(description: "must be a redis:// or rediss:// URL")
    }
    guard let host = components.host, !host.isEmpty else {
      throw Invalid(description: "must name a host (redis://host:6379)")
    }
    let port = components.port ?? 6379
    guard (1...65535).contains(port) else {
      throw Invalid(description: "port must be between 1 and 65535")
    }
    var database = 0
    let path = components.path.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
    if !path.isEmpty {
      guard let number = Int(path), number >= 0 else {
        throw Invalid(description: "the path must be a database number (redis://host:6379/0)")
      }
      database = number
    }
    let username = components.user.flatMap { $0.isEmpty ? nil : $0 }
    if username != nil, components.password == nil {
      throw Invalid(description: "a user name needs a password (redis://user:password@host)")
    }
    self.init(
      host: host, port: port, username: username, password: components.password.map(Secret.init), database: database,
      tls: scheme == "rediss" ? TLS() : nil)
    for item in components.queryItems ?? [] {
      let value = item.value ?? ""
      switch item.name {
      case "connect_timeout":
        self.connectTimeout = try Self.milliseconds(value, name: item.name)
      case "command_timeout":
        self.commandTimeout = try Self.milliseconds(value, name: item.name)
      case "pool_size":
        guard let size = Int(value), (1...256).contains(size) else {
          throw Invalid(description: "pool_size must be a whole number from 1 to 256")
        }
        self.poolSize = size
      case "ssl_ca_certs":
        guard self.tls != nil else { throw Invalid(description: "ssl_ca_certs needs a rediss:// URL") }
        guard !value.isEmpty else { throw Invalid(description: "ssl_ca_certs must name a PEM file") }
        self.tls?.caFile = value
      default:
        throw Invalid(
          description:
            "unknown parameter '\(item.name)' (connect_timeout, command_timeout, pool_size, ssl_ca_certs)")
      }
    }
  }

  /// `250ms` or `2s`, from 1 ms to 60 s.
  private static func milliseconds(_ text: String, name: String) throws -> Duration {
    let number: Int64?
    if text.hasSuffix("ms") {
      number = Int64(text.dropLast(2))
    } else if text.hasSuffix("s") {
      number = Int64(text.dropLast()).map { $0 * 1000 }
    } else {
      number = nil
    }
    guard let number, (1...60_000).contains(number) else {
      throw Invalid(description: "\(name) must be a duration from 1ms to 60s, such as 250ms or 2s")
    }
    return .milliseconds(number)
  }
}
