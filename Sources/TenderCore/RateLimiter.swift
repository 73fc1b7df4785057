/// How many requests a caller may make: a bucket of `capacity` tokens refilled at `refillPerSecond`.
public struct RateLimitPolicy: Sendable, Hashable {
  /// Largest burst allowed.
  public let capacity: Int
  /// Tokens added back per second.
  public let refillPerSecond: Double

  public init(capacity: Int, refillPerSecond: Double) {
    precondition(capacity > 0 && refillPerSecond > 0, "a rate limit needs a positive capacity and refill rate")
    self.capacity = capacity
    self.refillPerSecond = refillPerSecond
  }
}

/// The answer to one request for a token.
public enum RateLimitDecision: Sendable, Hashable {
  /// Go ahead; `remaining` tokens are left in the bucket.
  case allowed(remaining: Int)
  /// Over the limit: retry after `retryAfter`.
  case limited(retryAfter: Duration)
}

/// Decides whether a caller may proceed; shared by every replica, so it lives outside the process.
public protocol RateLimiter: Sendable {
  /// Takes `cost` tokens from the bucket `key` under `policy` when it holds at least one; a cost
  /// of 0 only looks (allowed while a token is left, nothing taken).
  func acquire(key: String, policy: RateLimitPolicy, cost: Int) async throws -> RateLimitDecision
}

extension RateLimiter {
  /// Takes one token from the bucket `key` under `policy`.
  public func acquire(key: String, policy: RateLimitPolicy) async throws -> RateLimitDecision {
    try await self.acquire(key: key, policy: policy, cost: 1)
  }
}
