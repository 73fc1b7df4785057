public import CoreMetrics
public import GRPCCore
import GRPCProtobuf
import ServiceContextModule
import TenderAPI
public import TenderAuth
import TenderCore

/// Authenticates every RPC the schemas do not mark public, then enforces the method's required
/// scope from the generated policy table. The caller (merchant, client, scopes) is put in the
/// `ServiceContext` for the services.
///
/// Refusals: UNAUTHENTICATED with an `ErrorInfo` reason (TOKEN_MISSING, TOKEN_INVALID,
/// TOKEN_EXPIRED, TOKEN_REVOKED, CLIENT_DISABLED); PERMISSION_DENIED with SCOPE_MISSING. Each is
/// counted in `tender_auth_failures_total{reason}` and the detailed reason is on the log line.
///
/// With `admission`, a verified token's cached standing is read in the same round trip that takes
/// the call's token from its client's rate-limit bucket; a call that passes auth then gets the
/// bucket's answer (RESOURCE_EXHAUSTED when empty), as the rate-limit interceptor would give it.
/// A call refused for its token's standing has used a token of its client's bucket too.
public struct AuthInterceptor: ServerInterceptor {
  private let authority: TokenAuthority
  private let admission: ClientAdmission?
  private let failures: [String: Counter]

  public init(authority: TokenAuthority, admission: ClientAdmission? = nil, metrics: any MetricsFactory) {
    self.authority = authority
    self.admission = admission
    var failures: [String: Counter] = [:]
    for reason in AuthFailure.allCases.map(\.rawValue) + ["insufficient_scope", "undeclared_method"] {
      failures[reason] = Counter(
        label: "tender_auth_failures_total", dimensions: [("reason", reason)], factory: metrics)
    }
    self.failures = failures
  }

  public func intercept<Input: Sendable, Output: Sendable>(
    request: StreamingServerRequest<Input>,
    context: ServerContext,
    next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
  ) async throws -> StreamingServerResponse<Output> {
    let record = ServiceContext.current?.callRecord
    guard let policy = MethodPolicies.byFullName[context.descriptor.fullyQualifiedMethod] else {
      // Every served method is declared; anything else is refused rather than left open.
      self.refused("undeclared_method", record: record)
      throw APIError.status(
        .permissionDenied, reason: "METHOD_NOT_DECLARED", message: "this method has no access policy")
    }
    if policy.isPublic {
      return try await next(request, context)
    }

    let verified: VerifiedToken
    var admitted: CallAdmission?
    do throws(AuthFailure) {
      guard let token = Self.bearerToken(request.metadata) else { throw .missingToken }
      if let admission = self.admission {
        verified = try await self.authority.verify(token)
        let answer = await admission.admit(verified.caller)
        admitted = answer
        try await self.authority.checkStanding(of: verified, cached: answer.standing)
      } else {
        verified = try await self.authority.authenticate(token)
      }
    } catch {
      self.refused(error.rawValue, record: record)
      let code: RPCError.Code = error == .standingUnavailable ? .unavailable : .unauthenticated
      throw APIError.status(code, reason: error.errorReason, message: Self.message(for: error))
    }

    let caller = verified.caller
    record?.record(caller: caller)
    if let scope = policy.requiredScope, !caller.has(scope: scope) {
      self.refused("insufficient_scope", record: record)
      throw APIError.status(
        .permissionDenied,
        reason: "SCOPE_MISSING",
        message: "the access token lacks the scope \(scope)",
        metadata: ["required_scope": scope]
      )
    }

    var serviceContext = ServiceContext.current ?? .topLevel
    if let admission = self.admission, let admitted {
      try admission.gate.enforce(bucket: ClientAdmission.bucket, admitted.decision)
      serviceContext.clientAdmitted = true
    }
    serviceContext.caller = caller
    serviceContext.accessToken = verified
    let response = try await ServiceContext.withValue(serviceContext) {
      try await next(request, context)
    }
    return RPCOutcome.propagating(serviceContext, into: response)
  }

  private func refused(_ reason: String, record: CallRecord?) {
    record?.record(authFailure: reason)
    self.failures[reason]?.increment()
  }

  /// The token of an `authorization: Bearer <token>` header (the scheme in any case, spaces
  /// around and between them), nil for anything else. It reads the header's UTF-8 bytes: a token
  /// is several hundred characters, and splitting it as Characters cost more than the header's
  /// lookup.
  static func bearerToken(_ metadata: Metadata) -> String? {
    guard let value = metadata[stringValues: "authorization"].first(where: { _ in true }) else { return nil }
    let bytes = value.utf8
    let space = UInt8(ascii: " ")
    guard let schemeStart = bytes.firstIndex(where: { $0 != space }) else { return nil }
    let scheme = "bearer".utf8
    var index = schemeStart
    for expected in scheme {
      guard index != bytes.endIndex, bytes[index] | 0x20 == expected else { return nil }
      index = bytes.index(after: index)
    }
    guard index != bytes.endIndex, bytes[index] == space,
      let tokenStart = bytes[index...].firstIndex(where: { $0 != space })
    else { return nil }
    let rest = bytes[tokenStart...]
    let tokenEnd = rest.firstIndex(of: space) ?? bytes.endIndex
    guard bytes[tokenEnd...].allSatisfy({ $0 == space }) else { return nil }
    return String(value[tokenStart..<tokenEnd])
  }

  static func message(for failure: AuthFailure) -> String {
    switch failure {
    case .missingToken: return "an access token is required: send 'authorization: Bearer <token>'"
    case .expired: return "the access token has expired"
    case .revoked: return "the access token has been revoked"
    case .clientDisabled: return "the client of this access token is disabled"
    case .standingUnavailable: return "the access token cannot be checked right now; retry"
    default: return "the access token is not valid"
    }
  }
}
