import Foundation
import Logging
import TenderCore
import TenderRedis
import TenderServer
import TenderDevSupport
import TenderTesting
import Testing

/// Runs `body` with a client to `url`'s server; the client is shut down afterwards.
func withRedisClient<Result: Sendable>(
  port: Int,
  configure: (inout RedisConfiguration) -> Void = { _ in },
  _ body: (RedisClient) async throws -> Result
) async throws -> Result {
  // Generous timeouts: the test run loads both cores; tests of timeouts set their own.
  var configuration = RedisConfiguration(
    host: "127.0.0.1", port: port, connectTimeout: .seconds(2), commandTimeout: .seconds(2))
  configure(&configuration)
  let client = RedisClient(configuration: configuration, logger: Logger(label: "tender.test.redis"))
  return try await body(client)
}

@Suite("Redis client against a real Redis")
struct RedisClientTests {
  @Test("Replies of every RESP type come back decoded, binary-safe, error replies included")
  func replyTypes() async throws {
    let redis = try await TestRedis.sharedServer()
    try await withRedisClient(port: redis.port) { client in
      let key = "t:\(UUID().uuidString)"
      #expect(try await client.send(["SET", key, "héllo\r\n\u{0}world"]) == .simpleString("OK"))
      #expect(try await client.send(["GET", key]).string == "héllo\r\n\u{0}world")
      #expect(try await client.send(["GET", key + ":missing"]) == .null)
      #expect(try await client.send(["INCR", key + ":n"]) == .integer(1))
      _ = try await client.send(["RPUSH", key + ":l", "a", "b", ""])
      #expect(
        try await client.send(["LRANGE", key + ":l", "0", "-1"])
          == .array([.bulkString(Array("a".utf8)), .bulkString(Array("b".utf8)), .bulkString([])]))
      let wrongType = try await client.send(["INCR", key + ":l"])
      guard case .error(let message) = wrongType else {
        Issue.record("expected an error reply, got \(wrongType)")
        return
      }
      #expect(message.hasPrefix("WRONGTYPE"))
    }
  }

  @Test("Hundreds of concurrent commands over the pool each get their own reply")
  func concurrentCommands() async throws {
    let redis = try await TestRedis.sharedServer()
    try await withRedisClient(port: redis.port) { client in
      let key = "t:\(UUID().uuidString)"
      let replies = try await withThrowingTaskGroup(of: Int64?.self) { group in
        for _ in 0..<500 {
          group.addTask { try await client.send(["INCR", key]).integer }
        }
        var collected: [Int64] = []
        for try await reply in group { if let reply { collected.append(reply) } }
        return collected
      }
      #expect(replies.sorted() == Array(1...500))
    }
  }

  @Test("With Redis down, calls fail fast instead of hanging, and recover when it is back")
  func redisDownAndBack() async throws {
    let redis = try await TestRedis.privateServer()
    defer { redis.destroy() }
    try await withRedisClient(
      port: redis.port,
      configure: {
        $0.poolSize = 2
        $0.initialBackoff = .milliseconds(50)
        $0.connectTimeout = .seconds(1)
      }
    ) { client in
      #expect(try await client.send(["PING"]) == .simpleString("PONG"))
      redis.stop()
      let clock = ContinuousClock()
      for _ in 0..<20 {
        let elapsed = await clock.measure {
          await #expect(throws: RedisError.self) { try await client.send(["PING"]) }
        }
        // Each call ends in an error instead of waiting for Redis to come back: bounded by the
        // connect timeout (1 s here). The bound checked is a hang detector, far above it, not a
        // speed figure: a loaded machine stretches every call.
        #expect(elapsed < .seconds(15))
      }
      try await redis.start()
      var answered = false
      for _ in 0..<100 where !answered {
        answered = (try? await client.send(["PING"])) == .simpleString("PONG")
        if !answered { try await Task.sleep(for: .milliseconds(50)) }
      }
      #expect(answered)
    }
  }
}

@Suite("Token bucket rate limiter in Redis")
struct TokenBucketLimiterTests {
  @Test("A burst of 50 concurrent calls over a limit of 10 lets exactly 10 through")
  func burstAllowsExactlyTheLimit() async throws {
    let redis = try await TestRedis.sharedServer()
    try await withRedisClient(port: redis.port) { client in
      let limiter = TokenBucketLimiter(client: client)
      let policy = RateLimitPolicy(capacity: 10, refillPerSecond: 0.01)
      let key = "client:\(UUID().uuidString)"
      let decisions = try await withThrowingTaskGroup(of: RateLimitDecision.self) { group in
        for _ in 0..<50 {
          group.addTask { try await limiter.acquire(key: key, policy: policy) }
        }
        var collected: [RateLimitDecision] = []
        for try await decision in group { collected.append(decision) }
        return collected
      }
      let allowed = decisions.filter { if case .allowed = $0 { return true } else { return false } }
      #expect(allowed.count == 10)
      for decision in decisions {
        if case .limited(let retryAfter) = decision {
          #expect(retryAfter > .zero)
        }
      }
    }
  }

  @Test("Bucket keys carry an expiry, and tokens refill over time")
  func expiryAndRefill() async throws {
    let redis = try await TestRedis.sharedServer()
    try await withRedisClient(port: redis.port) { client in
      let limiter = TokenBucketLimiter(client: client, prefix: "t:rl:")
      // One token a second: taking them always outpaces the refill, however loaded the machine.
      let policy = RateLimitPolicy(capacity: 2, refillPerSecond: 1)
      let key = UUID().uuidString
      #expect(try await limiter.acquire(key: key, policy: policy) != .limited(retryAfter: .zero))
      // Take tokens faster than they refill until the bucket says no.
      var retryAfter: Duration?
      for _ in 0..<50 where retryAfter == nil {
        if case .limited(let wait) = try await limiter.acquire(key: key, policy: policy) { retryAfter = wait }
      }
      guard let retryAfter else {
        Issue.record("the bucket never ran dry")
        return
      }
      // One token comes back every second.
      #expect(retryAfter > .zero && retryAfter <= .seconds(1))
      let ttl = try await client.send(["PTTL", "t:rl:" + key]).integer ?? -1
      // Time to fill the bucket (2 s) plus a second.
      #expect(ttl > 0 && ttl <= 3_000)
      try await Task.sleep(for: retryAfter + .milliseconds(30))
      let refilled = try await limiter.acquire(key: key, policy: policy)
      guard case .allowed = refilled else {
        Issue.record("tokens should have refilled, got \(refilled)")
        return
      }
    }
  }

  @Test("The script is loaded again after Redis forgets it")
  func scriptReloaded() async throws {
    let redis = try await TestRedis.sharedServer()
    try await withRedisClient(port: redis.port) { client in
      let limiter = TokenBucketLimiter(client: client)
      // One token per 1,000 s: nothing refills between the two calls however slow the machine.
      let policy = RateLimitPolicy(capacity: 5, refillPerSecond: 0.001)
      let key = UUID().uuidString
      #expect(try await limiter.acquire(key: key, policy: policy) == .allowed(remaining: 4))
      _ = try await client.send(["SCRIPT", "FLUSH"])
      #expect(try await limiter.acquire(key: key, policy: policy) == .allowed(remaining: 3))
    }
  }
}

@Suite("Redis over TLS with an ACL user")
struct RedisTLSTests {
  @Test(
    "rediss:// verifies the server against the URL's CA and authenticates as the URL's ACL user; another CA, a wrong password, the disabled default user or plain TCP get no answer"
  )
  func tlsAndACL() async throws {
    let directory = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent(
      "tender-test-redistls-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    let authority = try DevCertificateAuthority()
    let stranger = try DevCertificateAuthority(name: "Another CA")
    let issued = try authority.issueServerCertificate()
    let path = { (name: String) in directory.appendingPathComponent(name).path }
    try authority.certificatePEM.write(toFile: path("ca.pem"), atomically: true, encoding: .utf8)
    try stranger.certificatePEM.write(toFile: path("other-ca.pem"), atomically: true, encoding: .utf8)
    try issued.certificatePEM.write(toFile: path("server.pem"), atomically: true, encoding: .utf8)
    try issued.privateKeyPEM.write(toFile: path("server-key.pem"), atomically: true, encoding: .utf8)
    // A port free when chosen may be taken by another test's server before Redis binds it.
    var started: LocalRedis?
    for attempt in 1...5 where started == nil {
      let port = try LocalPostgres.freePort()
      do {
        started = try await LocalRedis.start(
          in: directory.appendingPathComponent("redis-\(attempt)"), port: port,
          arguments: [
            "--port", "0", "--tls-port", "\(port)", "--tls-cert-file", path("server.pem"), "--tls-key-file",
            path("server-key.pem"), "--tls-ca-cert-file", path("ca.pem"), "--tls-auth-clients", "no",
            "--user", "default", "off", "--user", "tender", "on", ">s3cret-pass", "~*", "&*", "+@all",
          ])
      } catch let error as LocalRedis.Failure where error.description.contains("is taken") {
        continue
      }
    }
    let redis = try #require(started)
    let port = redis.port
    defer { redis.destroy() }

    func ping(_ url: String) async throws -> RESPValue? {
      var configuration = try RedisConfiguration(url: url)
      configuration.connectTimeout = .seconds(2)
      configuration.commandTimeout = .seconds(2)
      let client = RedisClient(configuration: configuration, logger: Logger(label: "tender.test.redis-tls"))
      // Every answer, or refusal, comes within the timeouts; a call that hangs fails the test.
      return await withTaskGroup(of: RESPValue??.self) { group in
        group.addTask { .some(try? await client.send(["PING"])) }
        group.addTask {
          try? await Task.sleep(for: .seconds(20))
          return .none
        }
        let first = await group.next()!
        group.cancelAll()
        return first ?? .error("no answer within 20 s")
      }
    }
    let ca = "ssl_ca_certs=\(path("ca.pem"))"
    #expect(try await ping("rediss://tender:s3cret-pass@127.0.0.1:\(port)?\(ca)") == .simpleString("PONG"))
    #expect(try await ping("rediss://tender:s3cret-pass@localhost:\(port)?\(ca)") == .simpleString("PONG"))
    #expect(try await ping("rediss://tender:wrong@127.0.0.1:\(port)?\(ca)") == nil)
    #expect(try await ping("rediss://:s3cret-pass@127.0.0.1:\(port)?\(ca)") == nil)
    #expect(try await ping("rediss://tender:s3cret-pass@127.0.0.1:\(port)?ssl_ca_certs=\(path("other-ca.pem"))") == nil)
    #expect(try await ping("rediss://tender:s3cret-pass@127.0.0.1:\(port)") == nil)
    #expect(try await ping("redis://tender:s3cret-pass@127.0.0.1:\(port)") == nil)
  }

  @Test("URL settings: ssl_ca_certs needs rediss://, a user needs a password")
  func refusedSettings() {
    #expect(throws: RedisConfiguration.Invalid.self) {
      try RedisConfiguration(url: "redis://h:6379?ssl_ca_certs=/ca.pem")
    }
    #expect(throws: RedisConfiguration.Invalid.self) { try RedisConfiguration(url: "rediss://user@h:6379") }
    #expect(throws: RedisConfiguration.Invalid.self) { try RedisConfiguration(url: "https://h:6379") }
    let configuration = try? RedisConfiguration(
      url: "rediss://tender:pw@cache.internal:6380/2?ssl_ca_certs=/etc/ca.pem")
    #expect(configuration?.username == "tender")
    #expect(configuration?.tls == RedisConfiguration.TLS(caFile: "/etc/ca.pem"))
    #expect(configuration?.database == 2)
  }
}
