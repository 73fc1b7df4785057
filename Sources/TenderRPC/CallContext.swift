public import ServiceContextModule
public import Synchronization
public import TenderAuth
public import TenderCore

/// What the interceptors learn about one RPC, shared along the chain: the outermost interceptor
/// (tracing) creates it, auth fills in the caller or why it refused, logging and tracing read it
/// when the RPC ends.
public final class CallRecord: Sendable {
  public struct Snapshot: Sendable, Hashable {
    public var traceID: String?
    public var caller: Caller?
    /// Why authentication or authorization refused the call.
    public var authFailure: String?
  }

  private let state: Mutex<Snapshot>

  public init(traceID: String? = nil) {
    self.state = Mutex(Snapshot(traceID: traceID, caller: nil, authFailure: nil))
  }

  public var snapshot: Snapshot { self.state.withLock { $0 } }

  func record(caller: Caller) {
    self.state.withLock { $0.caller = caller }
  }

  func record(authFailure: String) {
    self.state.withLock { $0.authFailure = authFailure }
  }
}

private enum CallRecordKey: ServiceContextKey {
  typealias Value = CallRecord
}

private enum AccessTokenKey: ServiceContextKey {
  typealias Value = VerifiedToken
}

private enum CallerKey: ServiceContextKey {
  typealias Value = Caller
}

private enum ClientAdmittedKey: ServiceContextKey {
  typealias Value = Bool
}

extension ServiceContext {
  /// The record of the RPC being served.
  public var callRecord: CallRecord? {
    get { self[CallRecordKey.self] }
    set { self[CallRecordKey.self] = newValue }
  }

  /// The authenticated caller of the RPC being served; set by the auth interceptor.
  public var caller: Caller? {
    get { self[CallerKey.self] }
    set { self[CallerKey.self] = newValue }
  }

  /// Whether the auth interceptor took this call's token from its client's rate-limit bucket
  /// (`ClientAdmission`), so the rate-limit interceptor does not take another.
  public var clientAdmitted: Bool? {
    get { self[ClientAdmittedKey.self] }
    set { self[ClientAdmittedKey.self] = newValue }
  }

  /// The verified access token of the RPC being served (its caller, expiry); set by the auth
  /// interceptor, so long-lived streams can end when it stops being valid.
  public var accessToken: VerifiedToken? {
    get { self[AccessTokenKey.self] }
    set { self[AccessTokenKey.self] = newValue }
  }
}
