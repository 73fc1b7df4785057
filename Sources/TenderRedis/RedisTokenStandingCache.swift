public import TenderAuth

/// Token standings cached in Redis, shared by every replica: `tender:auth:client:<id>` holds the
/// client's status and `tender:auth:jti:<id>` whether the token is revoked. Every key expires;
/// PostgreSQL stays the source of truth.
public struct RedisTokenStandingCache: TokenStandingCache {
  private let client: RedisClient
  private let prefix: String

  public init(client: RedisClient, prefix: String = "tender:auth:") {
    self.client = client
    self.prefix = prefix
  }

  private func clientKey(_ id: String) -> String { self.prefix + "client:" + id }
  private func tokenKey(_ id: String) -> String { self.prefix + "jti:" + id }

  public func standing(clientID: String, tokenID: String) async throws -> TokenStanding? {
    let reply = try await self.client.send(["MGET", self.clientKey(clientID), self.tokenKey(tokenID)])
    guard case .array(let values) = reply, values.count == 2 else {
      if case .error(let message) = reply { throw RedisError.reply(message) }
      throw RedisError.protocolError
    }
    guard let status = values[0].string, let revoked = values[1].string else { return nil }
    return TokenStanding(clientStatus: ClientRecord.Status(rawValue: status), revoked: revoked == "1")
  }

  public func remember(_ standing: TokenStanding, clientID: String, tokenID: String, for ttl: Duration) async throws {
    let milliseconds = String(
      max(1, ttl.components.seconds * 1000 + ttl.components.attoseconds / 1_000_000_000_000_000))
    // A revocation marked meanwhile must not be overwritten by an older "not revoked": NX.
    _ = try await self.client.send([
      "SET", self.clientKey(clientID), standing.clientStatus?.rawValue ?? "missing", "PX", milliseconds,
    ])
    _ = try await self.client.send([
      "SET", self.tokenKey(tokenID), standing.revoked ? "1" : "0", "PX", milliseconds, "NX",
    ])
  }

  public func markRevoked(tokenID: String, expiresIn: Duration) async throws {
    let milliseconds = String(
      max(1, expiresIn.components.seconds * 1000 + expiresIn.components.attoseconds / 1_000_000_000_000_000))
    let reply = try await self.client.send(["SET", self.tokenKey(tokenID), "1", "PX", milliseconds])
    if case .error(let message) = reply { throw RedisError.reply(message) }
  }

  public func forgetClient(_ clientID: String) async throws {
    let reply = try await self.client.send(["DEL", self.clientKey(clientID)])
    if case .error(let message) = reply { throw RedisError.reply(message) }
  }
}
