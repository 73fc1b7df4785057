public import CoreMetrics
public import GRPCCore
import GRPCProtobuf
public import Logging
import ServiceContextModule
import TenderAPI
import Dispatch
import Synchronization
public import TenderAuth
public import TenderCore

/// Takes tokens from the shared buckets and turns "over the limit" into RESOURCE_EXHAUSTED with
/// `RetryInfo`. When the limiter's store cannot answer, `failureMode` decides: open (the default)
/// lets the call through, counts `tender_rate_limiter_errors_total` and logs; closed refuses with
/// UNAVAILABLE. Either way the call does not wait longer than the store's command timeout.
public struct RateLimitGate: Sendable {
  public enum FailureMode: Sendable {
    case open
    case closed
  }

  private let limiter: any RateLimiter
  private let failureMode: FailureMode
  private let logger: Logger
  private let rejections: [String: Counter]
  private let errors: Counter
  /// At most one "limiter unavailable" warning every 10 s, so an outage does not turn every RPC
  /// into a log line (the counter has every one).
  private let warnings = WarningThrottle(interval: 10_000_000_000)

  public static let buckets = ["client", "issue_token_client", "issue_token_peer"]

  public init(limiter: any RateLimiter, failureMode: FailureMode, metrics: any MetricsFactory, logger: Logger) {
    self.limiter = limiter
    self.failureMode = failureMode
    self.logger = logger
    var rejections: [String: Counter] = [:]
    for bucket in Self.buckets {
      rejections[bucket] = Counter(
        label: "tender_rate_limit_rejections_total", dimensions: [("bucket", bucket)], factory: metrics)
    }
    self.rejections = rejections
    self.errors = Counter(label: "tender_rate_limiter_errors_total", dimensions: [], factory: metrics)
  }

  private func warnSometimes(_ message: Logger.Message, bucket: String, error: any Error) {
    guard self.warnings.shouldWarn() else { return }
    self.logger.warning(
      message, metadata: ["bucket": "\(bucket)", "error": "\(error)", "see": "tender_rate_limiter_errors_total"])
  }

  /// Returns when the call may proceed; throws the status to answer otherwise.
  /// Takes `cost` tokens from the bucket (0: only looks); RESOURCE_EXHAUSTED when it is empty.
  public func admit(bucket: String, key: String, policy: RateLimitPolicy, cost: Int = 1) async throws {
    let decision: Result<RateLimitDecision, any Error>
    do {
      decision = .success(
        try await self.limiter.acquire(key: Self.key(bucket: bucket, key: key), policy: policy, cost: cost))
    } catch {
      decision = .failure(error)
    }
    try self.enforce(bucket: bucket, decision)
  }

  /// The limiter's key of `key`'s bucket in `bucket`.
  static func key(bucket: String, key: String) -> String { bucket + ":" + key }

  /// Returns when `decision` (asked of the limiter elsewhere, for `bucket`) lets the call proceed;
  /// throws the status to answer otherwise.
  func enforce(bucket: String, _ decision: Result<RateLimitDecision, any Error>) throws {
    let answer: RateLimitDecision
    switch decision {
    case .success(let given):
      answer = given
    case .failure(let error):
      self.errors.increment()
      switch self.failureMode {
      case .open:
        self.warnSometimes("rate limiter unavailable; allowing calls", bucket: bucket, error: error)
        return
      case .closed:
        self.warnSometimes("rate limiter unavailable; refusing calls", bucket: bucket, error: error)
        throw APIError.status(
          .unavailable, reason: "RATE_LIMITER_UNAVAILABLE", message: "rate limits cannot be checked right now; retry")
      }
    }
    if case .limited(let retryAfter) = answer {
      self.rejections[bucket]?.increment()
      throw APIError.status(
        .resourceExhausted,
        reason: "RATE_LIMITED",
        message: "rate limit exceeded; retry later",
        metadata: ["bucket": bucket],
        details: [.retryInfo(delay: retryAfter)]
      )
    }
  }
}

/// The per-client rate limit taken by the auth interceptor, in the same round trip to the shared
/// store as the token's standing (`CallAdmissionStore`); the rate-limit interceptor then leaves
/// that bucket alone.
public struct ClientAdmission: Sendable {
  let store: any CallAdmissionStore
  let gate: RateLimitGate
  let policy: RateLimitPolicy
  static let bucket = "client"

  public init(store: any CallAdmissionStore, gate: RateLimitGate, policy: RateLimitPolicy) {
    self.store = store
    self.gate = gate
    self.policy = policy
  }

  func admit(_ caller: Caller) async -> CallAdmission {
    await self.store.admit(
      clientID: caller.clientID, tokenID: caller.tokenID,
      bucket: RateLimitGate.key(bucket: Self.bucket, key: caller.clientID), policy: self.policy, cost: 1)
  }
}

/// Rate limits on the RPC path, innermost: a bucket per authenticated client over every RPC it
/// makes (unless the auth interceptor took it already: `ClientAdmission`), and for the public
/// IssueToken a bucket per peer address (the service adds one per client id). Health and
/// reflection are not limited: balancers probe them.
public struct RateLimitInterceptor: ServerInterceptor {
  private let gate: RateLimitGate
  private let perClient: RateLimitPolicy
  private let issueTokenPerPeer: RateLimitPolicy
  static let issueToken = Tender_Auth_V1_AuthService.Method.IssueToken.descriptor.fullyQualifiedMethod

  public init(gate: RateLimitGate, perClient: RateLimitPolicy, issueTokenPerPeer: RateLimitPolicy) {
    self.gate = gate
    self.perClient = perClient
    self.issueTokenPerPeer = issueTokenPerPeer
  }

  public func intercept<Input: Sendable, Output: Sendable>(
    request: StreamingServerRequest<Input>,
    context: ServerContext,
    next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
  ) async throws -> StreamingServerResponse<Output> {
    if let caller = ServiceContext.current?.caller {
      if ServiceContext.current?.clientAdmitted != true {
        try await self.gate.admit(bucket: ClientAdmission.bucket, key: caller.clientID, policy: self.perClient)
      }
    } else if context.descriptor.fullyQualifiedMethod == Self.issueToken {
      try await self.gate.admit(
        bucket: "issue_token_peer", key: Self.address(of: context.remotePeer), policy: self.issueTokenPerPeer)
    }
    return try await next(request, context)
  }

  /// The address part of a gRPC peer (`ipv4:10.0.0.1:5555` → `ipv4:10.0.0.1`), so a client's
  /// many connections share one bucket.
  static func address(of peer: String) -> String {
    if peer.hasPrefix("ipv6:["), let close = peer.firstIndex(of: "]") {
      return String(peer[...close])
    }
    if peer.hasPrefix("ipv4:"), let colon = peer.lastIndex(of: ":"), colon > peer.index(peer.startIndex, offsetBy: 4) {
      return String(peer[..<colon])
    }
    return peer
  }
}

/// Lets one caller through per interval.
final class WarningThrottle: Sendable {
  private let interval: UInt64
  /// Uptime in nanoseconds of the last warning; 0 before the first.
  private let last = Atomic<UInt64>(0)

  init(interval: UInt64) {
    self.interval = interval
  }

  func shouldWarn() -> Bool {
    let now = DispatchTime.now().uptimeNanoseconds
    let last = self.last.load(ordering: .relaxed)
    guard last == 0 || now &- last >= self.interval else { return false }
    return self.last.compareExchange(expected: last, desired: now, ordering: .relaxed).exchanged
  }
}
