public import TenderAuth
public import TenderCore

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

  func clientKey(_ id: String) -> String { self.prefix + "client:" + id }
  func tokenKey(_ id: String) -> String { self.prefix + "jti:" + id }

  public func standing(clientID: String, tokenID: String) async throws -> TokenStanding? {
    let reply = try await self.client.send(["MGET", self.clientKey(clientID), self.tokenKey(tokenID)])
    guard case .array(let values) = reply, values.count == 2 else {
      if case .error(let message) = reply { throw RedisError.reply(message) }
      throw RedisError.protocolError
    }
    return Self.standing(values[0], values[1])
  }

  /// The standing in the client's and the token's keys as read; nil unless both are there.
  static func standing(_ client: RESPValue, _ token: RESPValue) -> TokenStanding? {
    guard let status = client.string, let revoked = token.string else { return nil }
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

/// A token's cached standing and its client's rate-limit bucket in one script: one round trip per
/// authenticated call. The keys are the standing cache's and the limiter's own, so this shares
/// their entries (`remember`, `markRevoked`, `acquire` see and change the same).
public struct RedisCallAdmission: CallAdmissionStore {
  /// Returns {client status or nil, revoked ("1"/"0") or nil, allowed, tokens left, retry ms}.
  static let script = RedisScript(
    "local standing = redis.call('MGET', KEYS[1], KEYS[2])\n" + TokenBucketLimiter.take(key: "KEYS[3]")
      + "return {standing[1], standing[2], allowed, math.floor(tokens), retry_ms}\n")

  private let standings: RedisTokenStandingCache
  private let limiter: TokenBucketLimiter

  public init(standings: RedisTokenStandingCache, limiter: TokenBucketLimiter) {
    self.standings = standings
    self.limiter = limiter
  }

  public func admit(
    clientID: String, tokenID: String, bucket: String, policy: RateLimitPolicy, cost: Int
  ) async
    -> CallAdmission
  {
    do {
      let reply = try await Self.script.run(
        on: self.limiter.client,
        keys: [self.standings.clientKey(clientID), self.standings.tokenKey(tokenID), self.limiter.prefix + bucket],
        arguments: TokenBucketLimiter.arguments(policy: policy, cost: cost))
      guard case .array(let values) = reply, values.count == 5 else {
        if case .error(let message) = reply { throw RedisError.reply(message) }
        throw RedisError.protocolError
      }
      return CallAdmission(
        standing: RedisTokenStandingCache.standing(values[0], values[1]),
        decision: .success(try TokenBucketLimiter.decision(values[2], values[3], values[4])))
    } catch {
      return CallAdmission(standing: nil, decision: .failure(error))
    }
  }
}
