import Foundation
import TenderAuth
import TenderCore
import TenderRedis
import TenderDevSupport
import TenderTesting
import Testing

@Suite("A token's standing and its client's bucket in one round trip to Redis")
struct CallAdmissionTests {
  /// One token per 1,000 s: nothing refills between calls however slow the machine.
  static let policy = RateLimitPolicy(capacity: 3, refillPerSecond: 0.001)

  static func allowed(_ admission: CallAdmission) throws -> Int? {
    if case .allowed(let remaining) = try admission.decision.get() { return remaining }
    return nil
  }

  @Test("The standing is nil until cached, then what was remembered or marked; the same call takes a token")
  func standingAndToken() async throws {
    let redis = try await TestRedis.sharedServer()
    try await withRedisClient(port: redis.port) { client in
      let prefix = "t:\(UUID().uuidString):"
      let standings = RedisTokenStandingCache(client: client, prefix: prefix + "auth:")
      let admission = RedisCallAdmission(
        standings: standings, limiter: TokenBucketLimiter(client: client, prefix: prefix + "rl:"))
      let ask = {
        await admission.admit(clientID: "cli_a", tokenID: "tok_a", bucket: "client:cli_a", policy: Self.policy, cost: 1)
      }

      let first = await ask()
      #expect(first.standing == nil)
      #expect(try Self.allowed(first) == 2)

      try await standings.remember(
        TokenStanding(clientStatus: .active, revoked: false), clientID: "cli_a", tokenID: "tok_a", for: .seconds(60))
      let second = await ask()
      #expect(second.standing == TokenStanding(clientStatus: .active, revoked: false))
      #expect(try Self.allowed(second) == 1)

      try await standings.markRevoked(tokenID: "tok_a", expiresIn: .seconds(60))
      let third = await ask()
      #expect(third.standing == TokenStanding(clientStatus: .active, revoked: true))
      #expect(try Self.allowed(third) == 0)

      let fourth = await ask()
      guard case .limited(let retryAfter) = try fourth.decision.get() else {
        Issue.record("the fourth call should find the bucket empty, got \(fourth.decision)")
        return
      }
      #expect(retryAfter > .zero)
      // The bucket is the limiter's own key, with its expiry.
      let ttl = try await client.send(["PTTL", prefix + "rl:client:cli_a"]).integer ?? -1
      #expect(ttl > 0)
    }
  }

  @Test("The limiter and the admission take from one bucket")
  func sharedBucket() async throws {
    let redis = try await TestRedis.sharedServer()
    try await withRedisClient(port: redis.port) { client in
      let prefix = "t:\(UUID().uuidString):"
      let limiter = TokenBucketLimiter(client: client, prefix: prefix + "rl:")
      let admission = RedisCallAdmission(
        standings: RedisTokenStandingCache(client: client, prefix: prefix + "auth:"), limiter: limiter)
      let first = try await limiter.acquire(key: "client:cli_b", policy: Self.policy)
      #expect(first == .allowed(remaining: 2))
      let admitted = await admission.admit(
        clientID: "cli_b", tokenID: "tok_b", bucket: "client:cli_b", policy: Self.policy, cost: 1)
      #expect(try Self.allowed(admitted) == 1)
      let last = try await limiter.acquire(key: "client:cli_b", policy: Self.policy)
      #expect(last == .allowed(remaining: 0))
    }
  }

  @Test("After Redis forgets the script it is sent again; with Redis gone both halves say so")
  func scriptReloadedAndFailure() async throws {
    let redis = try await TestRedis.privateServer()
    defer { redis.destroy() }
    try await withRedisClient(port: redis.port) { client in
      let admission = RedisCallAdmission(
        standings: RedisTokenStandingCache(client: client), limiter: TokenBucketLimiter(client: client))
      let ask = {
        await admission.admit(clientID: "cli_c", tokenID: "tok_c", bucket: "client:cli_c", policy: Self.policy, cost: 1)
      }
      let fresh = await ask()
      #expect(try Self.allowed(fresh) == 2)
      _ = try await client.send(["SCRIPT", "FLUSH"])
      let reloaded = await ask()
      #expect(try Self.allowed(reloaded) == 1)

      redis.stop()
      let failed = await ask()
      #expect(failed.standing == nil)
      #expect(throws: (any Error).self) { try failed.decision.get() }
    }
  }
}
