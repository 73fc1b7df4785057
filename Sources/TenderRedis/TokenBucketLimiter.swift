import Logging
public import TenderCore
import Synchronization

/// Token buckets in Redis, one per key, updated by one atomic Lua script so that every replica
/// shares the same buckets. Every key carries an expiry: idle buckets disappear once full again.
public final class TokenBucketLimiter: RateLimiter {
  /// The bucket `key` refilled and taken from, in Lua: leaves `allowed` (0/1), `tokens` (left)
  /// and `retry_ms`. ARGV[1 ... 3] are the capacity, the refill per ms and the cost. The clock is
  /// Redis's own, so replicas with skewed clocks agree.
  static func take(key: String) -> String {
    """
    local capacity = tonumber(ARGV[1])
    local per_ms = tonumber(ARGV[2])
    local cost = tonumber(ARGV[3])
    local now_parts = redis.call('TIME')
    local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
    local state = redis.call('HMGET', \(key), 'tokens', 'ts')
    local tokens = tonumber(state[1])
    local ts = tonumber(state[2])
    if tokens == nil or ts == nil then
      tokens = capacity
      ts = now
    end
    tokens = math.min(capacity, tokens + math.max(0, now - ts) * per_ms)
    local allowed = 0
    local retry_ms = 0
    if tokens >= 1 then
      tokens = tokens - cost
      allowed = 1
    else
      retry_ms = math.ceil((1 - tokens) / per_ms)
    end
    redis.call('HSET', \(key), 'tokens', tostring(tokens), 'ts', tostring(now))
    redis.call('PEXPIRE', \(key), math.ceil(capacity / per_ms) + 1000)

    """
  }

  /// Returns {allowed (0/1), tokens left (floored), retry after in ms}.
  static let script = RedisScript(
    TokenBucketLimiter.take(key: "KEYS[1]") + "return {allowed, math.floor(tokens), retry_ms}\n")

  let client: RedisClient
  let prefix: String

  /// - Parameter prefix: namespace of the bucket keys, e.g. `"tender:rl:"`.
  public init(client: RedisClient, prefix: String = "tender:rl:") {
    self.client = client
    self.prefix = prefix
  }

  public func acquire(key: String, policy: RateLimitPolicy, cost: Int) async throws -> RateLimitDecision {
    let reply = try await Self.script.run(
      on: self.client, keys: [self.prefix + key], arguments: Self.arguments(policy: policy, cost: cost))
    guard case .array(let values) = reply, values.count == 3 else {
      if case .error(let message) = reply { throw RedisError.reply(message) }
      throw RedisError.protocolError
    }
    return try Self.decision(values[0], values[1], values[2])
  }

  /// ARGV of `take`.
  static func arguments(policy: RateLimitPolicy, cost: Int) -> [String] {
    [String(policy.capacity), String(policy.refillPerSecond / 1000), String(cost)]
  }

  /// The decision in `take`'s `allowed`, `math.floor(tokens)` and `retry_ms`.
  static func decision(_ allowed: RESPValue, _ remaining: RESPValue, _ retry: RESPValue) throws -> RateLimitDecision {
    guard let allowed = allowed.integer, let remaining = remaining.integer, let retry = retry.integer else {
      throw RedisError.protocolError
    }
    return allowed == 1 ? .allowed(remaining: Int(remaining)) : .limited(retryAfter: .milliseconds(retry))
  }
}

/// A Lua script run by its hash (EVALSHA), learned once with SCRIPT LOAD. When Redis no longer has
/// the script (a restart or SCRIPT FLUSH, possibly between loading and running it), EVAL sends the
/// text itself, which also caches it again, so a flush never fails a call.
final class RedisScript: Sendable {
  let text: String
  private let hash = Mutex<String?>(nil)

  init(_ text: String) {
    self.text = text
  }

  func run(on client: RedisClient, keys: [String], arguments: [String]) async throws -> RESPValue {
    let hash: String
    if let known = self.hash.withLock({ $0 }) {
      hash = known
    } else {
      let loaded = try await client.send(["SCRIPT", "LOAD", self.text])
      guard let loadedHash = loaded.string else {
        if case .error(let message) = loaded { throw RedisError.reply(message) }
        throw RedisError.protocolError
      }
      self.hash.withLock { $0 = loadedHash }
      hash = loadedHash
    }
    let reply = try await client.send(["EVALSHA", hash, String(keys.count)] + keys + arguments)
    if case .error(let message) = reply, message.hasPrefix("NOSCRIPT") {
      return try await client.send(["EVAL", self.text, String(keys.count)] + keys + arguments)
    }
    return reply
  }
}
