import Foundation
public import TenderCore

/// Where Redis is and how patient to be with it.
public struct RedisConfiguration: Sendable {
  public var host: String
  public var port: Int
  public var password: Secret<String>?
  public var database: Int
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
    password: Secret<String>? = nil,
    database: Int = 0,
    poolSize: Int = 4,
    connectTimeout: Duration = .milliseconds(500),
    commandTimeout: Duration = .milliseconds(250),
    initialBackoff: Duration = .milliseconds(100),
    maximumBackoff: Duration = .seconds(5)
  ) {
    self.host = host
    self.port = port
    self.password = password
    self.database = database
    self.poolSize = poolSize
    self.connectTimeout = connectTimeout
    self.commandTimeout = commandTimeout
    self.initialBackoff = initialBackoff
    self.maximumBackoff = maximumBackoff
  }

  /// Why a `redis://` URL was refused; the message never repeats the password.
  public struct Invalid: Error, CustomStringConvertible {
    public let description: String
  }

  /// Parses `redis://[:password@]host[:port][/database][?connect_timeout=500ms&command_timeout=250ms&pool_size=4]`.
  public init(url: String) throws {
    guard let components = URLComponents(string: url), components.scheme == "redis" else {
      throw Invalid(description: "must be a redis:// URL")
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
    self.init(host: host, port: port, password: components.password.map(Secret.init), database: database)
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
      default:
        throw Invalid(description: "unknown parameter '\(item.name)' (connect_timeout, command_timeout, pool_size)")
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
