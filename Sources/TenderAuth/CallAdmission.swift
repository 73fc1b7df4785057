public import TenderCore

/// What an authenticated call needs of the shared store before it may proceed: its token's cached
/// standing, and a token from its client's rate-limit bucket.
public struct CallAdmission: Sendable {
  /// The cached standing; nil when the cache does not know it (or could not answer): the
  /// `AuthStore` is asked then.
  public var standing: TokenStanding?
  /// The bucket's answer, or why the limiter could not give one.
  public var decision: Result<RateLimitDecision, any Error>

  public init(standing: TokenStanding?, decision: Result<RateLimitDecision, any Error>) {
    self.standing = standing
    self.decision = decision
  }
}

/// Reads a token's cached standing and takes from a rate-limit bucket, together: with Redis, one
/// round trip per authenticated call instead of two.
public protocol CallAdmissionStore: Sendable {
  /// The standing of `tokenID` of `clientID`, and `cost` tokens taken from the bucket `bucket`
  /// under `policy` (as `RateLimiter.acquire`). Never throws: each half carries its own failure.
  func admit(
    clientID: String, tokenID: String, bucket: String, policy: RateLimitPolicy, cost: Int
  ) async
    -> CallAdmission
}

/// A `CallAdmissionStore` of a standing cache and a limiter asked one after the other: for ports
/// that have no single store for both (in-memory ones, or none cached).
public struct SeparateCallAdmission: CallAdmissionStore {
  private let cache: (any TokenStandingCache)?
  private let limiter: any RateLimiter

  public init(cache: (any TokenStandingCache)?, limiter: any RateLimiter) {
    self.cache = cache
    self.limiter = limiter
  }

  public func admit(
    clientID: String, tokenID: String, bucket: String, policy: RateLimitPolicy, cost: Int
  ) async
    -> CallAdmission
  {
    let standing = try? await self.cache?.standing(clientID: clientID, tokenID: tokenID)
    do {
      return CallAdmission(
        standing: standing ?? nil,
        decision: .success(try await self.limiter.acquire(key: bucket, policy: policy, cost: cost)))
    } catch {
      return CallAdmission(standing: standing ?? nil, decision: .failure(error))
    }
  }
}
