public import TenderCore

/// Reports Redis ready when it answers PING. A server counts it in its readiness only when calls
/// depend on it: under the `closed` rate-limit policy every authenticated RPC fails without it.
public struct RedisReadinessProbe: ReadinessProbe {
  public let name = "redis"
  private let client: RedisClient

  public init(client: RedisClient) {
    self.client = client
  }

  public struct NotAnswering: Error, CustomStringConvertible {
    public let reply: String
    public var description: String { "Redis answered PING with \(self.reply)" }
  }

  public func check() async throws {
    let reply = try await self.client.send(["PING"])
    guard case .simpleString("PONG") = reply else { throw NotAnswering(reply: "\(reply)") }
  }
}
