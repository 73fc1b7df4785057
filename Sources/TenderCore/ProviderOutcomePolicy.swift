/// What an operation's history says may already have happened at the provider.
public enum ProviderHistory: Sendable, Hashable, CaseIterable {
  /// No earlier call of this operation can have reached the provider.
  case nothingSent
  /// An earlier call may have reached the provider (it was started, and its answer was lost or
  /// never came): only a definitive answer from the provider can end the operation now.
  case maybeSent
}

/// How one call to the provider ended, as far as what the provider did is concerned.
public enum ProviderAttempt: Sendable, Hashable, CaseIterable {
  /// The provider answered about the object (final or not, a decline too).
  case answered
  /// The provider processed the request and refused it (a 4xx about the request itself): under
  /// the same idempotency key it would give that answer again.
  case refused
  /// Nothing of this call was acted on: no connection, rate-limited until the budget ran out, or
  /// refused before processing (authentication). Says nothing about earlier calls.
  case notProcessed
  /// The call may or may not have been acted on (a timeout after sending, a connection lost
  /// mid-request, 5xx answers, the key in use at the provider).
  case unknown

  /// The kind of a connector's failure.
  public init(_ error: ProviderError) {
    switch error {
    case .unreachable: self = .notProcessed
    case .outcomeUnknown: self = .unknown
    case .rejected(let status, _, _):
      // Authentication and permission refusals are decided before the provider looks at the
      // request (or at its idempotency key): nothing was done, and nothing is learned.
      self = status == 401 || status == 403 ? .notProcessed : .refused
    }
  }
}

/// The one rule for provider outcomes: from what may already have happened and how the latest
/// call ended, what the operation does next. Once any call may have been delivered, nothing but
/// a definitive provider answer ends the operation — never a later connect failure.
public enum ProviderOutcomePolicy {
  public enum Next: Sendable, Hashable {
    /// Apply the provider's answer (or its refusal) and store the operation's answer.
    case apply
    /// Keep the operation open (payment PROCESSING, refund PENDING, key locked); ask again later
    /// under the same provider key.
    case wait
    /// The provider certainly never acted on this operation: end it as failed and free the key.
    case failForSure
  }

  public static func next(history: ProviderHistory, attempt: ProviderAttempt) -> Next {
    switch (attempt, history) {
    case (.answered, _), (.refused, _): return .apply
    case (.unknown, _): return .wait
    case (.notProcessed, .nothingSent): return .failForSure
    case (.notProcessed, .maybeSent): return .wait
    }
  }

  /// The history after a call that ended as `attempt`, given the history before it.
  public static func history(after attempt: ProviderAttempt, before: ProviderHistory) -> ProviderHistory {
    attempt == .notProcessed ? before : .maybeSent
  }
}

/// Exponential backoff: `first`, doubling with each attempt, never more than `cap`.
public enum Backoff {
  /// The wait after attempt `attempt` (1 for the first).
  public static func doubling(_ first: Duration, attempt: Int, cap: Duration) -> Duration {
    min(cap, first * (1 << min(max(attempt - 1, 0), 20)))
  }
}
