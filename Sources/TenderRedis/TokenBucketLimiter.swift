import Logging
public import TenderCore
import Synchronization

/// Token buckets in Redis, one per key, updated by one atomic Lua script so that every replica
/// shares the same buckets. Every key carries an expiry: idle buckets disappear once full again.
public final class TokenBucketLimiter: RateLimiter {
  /// Returns {allowed (0/1), tokens left (floored), retry after in ms}. The clock is Redis's own,
  /// so replicas with skewed clocks agree.
  static let script = """
    local capacity = tonumber(ARGV[1])
    local per_ms = tonumber(ARGV[2])
    local cost = tonumber(ARGV[3])
    local now_parts = redis.call('TIME')
    local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
    local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
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
    redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
    redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / per_ms) + 1000)
    return {allowed, math.floor(tokens), retry_ms}
    """

  private let client: RedisClient
  private let prefix: String
  private let scriptHash = Mutex<String?>(nil)

  /// - Parameter prefix: namespace of the bucket keys, e.g. `"tender:rl:"`.
  public init(client: RedisClient, prefix: String = "tender:rl:") {
    self.client = client
    self.prefix = prefix
  }

  public func acquire(key: String, policy: RateLimitPolicy, cost: Int) async throws -> RateLimitDecision {
    let arguments = [
      self.prefix + key, String(policy.capacity), String(policy.refillPerSecond / 1000), String(cost),
    ]
    let reply = try await self.evaluate(arguments)
    guard case .array(let values) = reply, values.count == 3,
      let allowed = values[0].integer, let remaining = values[1].integer, let retry = values[2].integer
    else {
      if case .error(let message) = reply { throw RedisError.reply(message) }
      throw RedisError.protocolError
    }
    return allowed == 1 ? .allowed(remaining: Int(remaining)) : .limited(retryAfter: .milliseconds(retry))
  }

  /// EVALSHA with the script's hash (learned once with SCRIPT LOAD). When Redis no longer has the
  /// script (a restart or SCRIPT FLUSH, possibly between loading and running it), EVAL sends the
  /// text itself, which also caches it again, so a flush never fails a call.
  private func evaluate(_ arguments: [String]) async throws -> RESPValue {
    let hash: String
    if let known = self.scriptHash.withLock({ $0 }) {
      hash = known
    } else {
      let loaded = try await self.client.send(["SCRIPT", "LOAD", Self.script])
      guard let loadedHash = loaded.string else {
        if case .error(let message) = loaded { throw RedisError.reply(message) }
        throw RedisError.protocolError
      }
      self.scriptHash.withLock { $0 = loadedHash }
      hash = loadedHash
    }
    let reply = try await self.client.send(["EVALSHA", hash, "1"] + arguments)
    if case .error(let message) = reply, message.hasPrefix("NOSCRIPT") {
      return try await self.client.send(["EVAL", Self.script, "1"] + arguments)
    }
    return reply
  }
}
