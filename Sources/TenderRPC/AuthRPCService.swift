public import Crypto
import Foundation
public import GRPCCore
import GRPCProtobuf
import ServiceContextModule
import SwiftProtobuf
public import TenderAPI
public import TenderAuth
public import TenderCore
public import TenderOperations

/// `tender.auth.v1.AuthService`: client credentials for access tokens, revocation,
/// introspection, and client administration.
public struct AuthRPCService: Tender_Auth_V1_AuthService.ServiceProtocol {
  private let authority: TokenAuthority
  private let registry: ClientRegistry
  private let gate: RateLimitGate?
  private let issuePerClient: RateLimitPolicy
  private let runner: KeyedOperationRunner
  private let sealer: ResponseSealer

  /// `responseKey` seals stored answers that carry a client secret (CreateClient,
  /// RotateClientSecret), so a replay can return the same secret without the database ever
  /// holding it in the clear.
  public init(
    authority: TokenAuthority,
    registry: ClientRegistry,
    gate: RateLimitGate?,
    issuePerClient: RateLimitPolicy,
    runner: KeyedOperationRunner,
    responseKey: SymmetricKey
  ) {
    self.authority = authority
    self.registry = registry
    self.gate = gate
    self.issuePerClient = issuePerClient
    self.runner = runner
    self.sealer = ResponseSealer(key: responseKey)
  }

  public func issueToken(
    request: ServerRequest<Tender_Auth_V1_IssueTokenRequest>,
    context: ServerContext
  ) async throws -> ServerResponse<Tender_Auth_V1_IssueTokenResponse> {
    ServerResponse(message: try await self.issueToken(request.message, peer: context.remotePeer))
  }

  public func revokeToken(
    request: ServerRequest<Tender_Auth_V1_RevokeTokenRequest>,
    context: ServerContext
  ) async throws -> ServerResponse<Tender_Auth_V1_RevokeTokenResponse> {
    ServerResponse(message: try await self.revokeToken(request.message))
  }

  public func introspectToken(
    request: ServerRequest<Tender_Auth_V1_IntrospectTokenRequest>,
    context: ServerContext
  ) async throws -> ServerResponse<Tender_Auth_V1_IntrospectTokenResponse> {
    ServerResponse(message: try await self.introspectToken(request.message))
  }

  func issueToken(
    _ request: Tender_Auth_V1_IssueTokenRequest, peer: String
  ) async throws -> Tender_Auth_V1_IssueTokenResponse {
    guard !request.clientID.isEmpty else {
      throw APIError.invalidArgument(field: "client_id", reason: "FIELD_REQUIRED", message: "client_id is required")
    }
    guard request.clientID.utf8.count <= 100, !StoredText.containsControlCharacter(request.clientID) else {
      throw APIError.invalidArgument(
        field: "client_id", reason: "FIELD_INVALID", message: "client_id is too long or holds control characters")
    }
    guard !request.clientSecret.isEmpty else {
      throw APIError.invalidArgument(
        field: "client_secret", reason: "FIELD_REQUIRED", message: "client_secret is required")
    }
    guard request.clientSecret.utf8.count <= 256, !StoredText.containsControlCharacter(request.clientSecret) else {
      throw APIError.invalidArgument(
        field: "client_secret", reason: "FIELD_INVALID",
        message: "client_secret is too long or holds control characters")
    }
    if let index = request.scopes.firstIndex(where: { !Scopes.isValid($0) }) {
      throw APIError.invalidArgument(
        field: "scopes[\(index)]", reason: "FIELD_INVALID", message: "scopes[\(index)] is not a scope name")
    }
    // Wrong secrets for one client id are counted per address, and only wrong ones: a client id is
    // no secret (every token names it), so guesses from elsewhere must not use up what its real
    // owner's address may try; the address's own bucket (the interceptor's) bounds all of its
    // attempts. A bucket that is empty refuses before the secret is checked.
    let failures = request.clientID + "@" + RateLimitInterceptor.address(of: peer)
    try await self.gate?.admit(bucket: "issue_token_client", key: failures, policy: self.issuePerClient, cost: 0)
    let issued: IssuedToken
    do {
      issued = try await self.authority.issue(
        clientID: request.clientID, secret: Secret(request.clientSecret), requestedScopes: request.scopes)
    } catch IssueFailure.invalidClient {
      // Counted whether or not this empties the bucket; the answer stays the same.
      try? await self.gate?.admit(bucket: "issue_token_client", key: failures, policy: self.issuePerClient)
      throw APIError.status(.unauthenticated, reason: "INVALID_CLIENT", message: "unknown client or wrong secret")
    } catch IssueFailure.scopeNotGranted(let scope) {
      // The scope is named by its place in the request, never echoed: callers choose the text.
      let field = request.scopes.firstIndex(of: scope).map { "scopes[\($0)]" } ?? "scopes"
      throw APIError.status(
        .permissionDenied, reason: "SCOPE_NOT_GRANTED", message: "the client does not hold a requested scope",
        metadata: ["field": field])
    }
    var response = Tender_Auth_V1_IssueTokenResponse()
    response.accessToken = issued.token.value
    response.tokenType = "Bearer"
    response.expireTime = Google_Protobuf_Timestamp(date: issued.expireTime)
    response.scopes = issued.scopes
    return response
  }

  func revokeToken(_ request: Tender_Auth_V1_RevokeTokenRequest) async throws -> Tender_Auth_V1_RevokeTokenResponse {
    let caller = try Self.caller()
    let target = try await self.verifiedArgument(request.token)
    // A client revokes its own tokens; an administrator those of its merchant; a platform
    // caller any token.
    let administers = caller.has(scope: Scopes.admin) && caller.reaches(merchant: target.caller.merchantID.rawValue)
    guard target.caller.clientID == caller.clientID || administers || caller.has(scope: Scopes.platform) else {
      throw APIError.status(
        .permissionDenied, reason: "NOT_TOKEN_OWNER",
        message: "only the token's own client or an administrator of its merchant may revoke it")
    }
    try await self.authority.revoke(target, revokedBy: caller.clientID)
    var response = Tender_Auth_V1_RevokeTokenResponse()
    response.tokenID = target.caller.tokenID
    return response
  }

  func introspectToken(
    _ request: Tender_Auth_V1_IntrospectTokenRequest
  ) async throws -> Tender_Auth_V1_IntrospectTokenResponse {
    let caller = try Self.caller()
    guard !request.token.isEmpty else {
      throw APIError.invalidArgument(field: "token", reason: "FIELD_REQUIRED", message: "token is required")
    }
    var response = Tender_Auth_V1_IntrospectTokenResponse()
    // RFC 7662: anything not currently usable is just "not active", without saying why; tokens of
    // other merchants are not active except to a platform caller.
    guard let token = try? await self.authority.authenticate(request.token),
      caller.reaches(merchant: token.caller.merchantID.rawValue)
    else {
      response.active = false
      return response
    }
    response.active = true
    response.scopes = token.caller.scopes.sorted()
    response.clientID = token.caller.clientID
    response.merchantID = token.caller.merchantID.rawValue
    response.tokenID = token.caller.tokenID
    response.issuer = token.issuer
    response.audience = token.audience
    response.issueTime = Google_Protobuf_Timestamp(date: token.issueTime)
    response.notBeforeTime = Google_Protobuf_Timestamp(date: token.notBeforeTime)
    response.expireTime = Google_Protobuf_Timestamp(date: token.expireTime)
    return response
  }

  // MARK: Client administration (keyed: the policy table requires an idempotency-key)

  static let createClientMethod = Tender_Auth_V1_AuthService.Method.CreateClient.descriptor.fullyQualifiedMethod
  static let rotateSecretMethod = Tender_Auth_V1_AuthService.Method.RotateClientSecret.descriptor.fullyQualifiedMethod

  public func createClient(
    request: ServerRequest<Tender_Auth_V1_CreateClientRequest>,
    context: ServerContext
  ) async throws -> ServerResponse<Tender_Auth_V1_CreateClientResponse> {
    let caller = try Self.caller()
    let message = request.message
    do {
      try ClientRegistry.validate(
        merchantID: message.merchantID, scopes: message.scopes, displayName: message.displayName)
    } catch {
      throw Self.invalid(error, message)
    }
    // Checked before anything is looked up, so another merchant's existence is not revealed.
    guard caller.reaches(merchant: message.merchantID) else {
      throw APIError.status(
        .permissionDenied, reason: "OTHER_MERCHANT",
        message: "an administrator manages clients of its own merchant only", metadata: ["field": "merchant_id"])
    }
    if let index = message.scopes.firstIndex(where: { !caller.mayGrant(scope: $0) }) {
      let scope = message.scopes[index]
      throw APIError.status(
        .permissionDenied, reason: "SCOPE_NOT_GRANTABLE",
        message: scope == Scopes.platform
          ? "the platform scope is granted only by the operator CLI"
          : "a client may be given only scopes the caller's token carries",
        metadata: ["field": "scopes[\(index)]", "scope": scope])
    }
    return try await self.keyed(
      method: Self.createClientMethod, request: request, merchant: caller.merchantID
    ) {
      let created: (ClientRecord, Secret<String>)
      do {
        created = try await self.registry.create(
          merchantID: message.merchantID, scopes: message.scopes, displayName: message.displayName)
      } catch let error as ClientRequestError {
        throw Self.invalid(error, message)
      } catch AuthStoreError.unknownMerchant {
        throw APIError.status(
          .failedPrecondition, reason: "MERCHANT_NOT_FOUND", message: "no such active merchant",
          metadata: ["field": "merchant_id"])
      }
      var response = Tender_Auth_V1_CreateClientResponse()
      response.client = Self.message(created.0)
      response.clientSecret = created.1.value
      return response
    }
  }

  static func invalid(_ error: ClientRequestError, _ request: Tender_Auth_V1_CreateClientRequest) -> GoogleRPCStatus {
    switch error {
    case .invalidMerchantID:
      return APIError.invalidArgument(
        field: "merchant_id", reason: request.merchantID.isEmpty ? "FIELD_REQUIRED" : "FIELD_INVALID",
        message: "merchant_id must be mer_ followed by 1 to 64 letters or digits")
    case .noScopes:
      return APIError.invalidArgument(
        field: "scopes", reason: "FIELD_REQUIRED", message: "at least one scope is required")
    case .invalidScope:
      let index = request.scopes.firstIndex(where: { !Scopes.isValid($0) }) ?? 0
      return APIError.invalidArgument(
        field: "scopes[\(index)]", reason: "FIELD_INVALID", message: "scopes[\(index)] is not a scope name")
    case .displayNameTooLong:
      return APIError.invalidArgument(
        field: "display_name", reason: "FIELD_TOO_LONG", message: "display_name is longer than 200 bytes (UTF-8)")
    case .displayNameControlCharacters:
      return APIError.invalidArgument(
        field: "display_name", reason: "FIELD_CONTROL_CHARACTERS",
        message: "display_name must not contain control characters")
    case .displayNameCardData:
      return APIError.domain(.cardDataRejected(field: "display_name"))
    }
  }

  public func rotateClientSecret(
    request: ServerRequest<Tender_Auth_V1_RotateClientSecretRequest>,
    context: ServerContext
  ) async throws -> ServerResponse<Tender_Auth_V1_RotateClientSecretResponse> {
    let caller = try Self.caller()
    let clientID = request.message.clientID
    guard !clientID.isEmpty else {
      throw APIError.invalidArgument(field: "client_id", reason: "FIELD_REQUIRED", message: "client_id is required")
    }
    guard ClientID(clientID) != nil else {
      throw APIError.invalidArgument(
        field: "client_id", reason: "FIELD_INVALID", message: "client_id must be a client id (cli_…)")
    }
    return try await self.keyed(
      method: Self.rotateSecretMethod, request: request, merchant: caller.merchantID
    ) {
      let rotated: (ClientRecord, Secret<String>)
      do {
        // Another merchant's client, or a platform client to a caller without the scope, is not
        // found: neither is revealed.
        rotated = try await self.registry.rotateSecret(clientID: clientID) { client in
          caller.reaches(merchant: client.merchantID)
            && (!client.scopes.contains(Scopes.platform) || caller.has(scope: Scopes.platform))
        }
      } catch AuthStoreError.unknownClient {
        throw APIError.status(
          .notFound, reason: "CLIENT_NOT_FOUND", message: "no such client", metadata: ["field": "client_id"])
      }
      var response = Tender_Auth_V1_RotateClientSecretResponse()
      response.client = Self.message(rotated.0)
      response.clientSecret = rotated.1.value
      return response
    }
  }

  /// A keyed operation without a provider call: claim the caller's key, run `operation` once,
  /// store its answer (a refusal too; a success sealed, since it holds a secret) and answer from
  /// what was stored. A retry replays the answer with the same secret; an unexpected failure frees
  /// the key.
  private func keyed<Input: SwiftProtobuf.Message, Output: SwiftProtobuf.Message>(
    method: String,
    request: ServerRequest<Input>,
    merchant: MerchantID,
    _ operation: @escaping () async throws -> Output
  ) async throws -> ServerResponse<Output> {
    let key = try IdempotencyKeys.key(request.metadata)
    let keyed = IdempotencyRequest(
      merchant: merchant, key: key, method: method,
      fingerprint: try IdempotencyKeys.fingerprint(method: method, message: request.message))
    let sealer = self.sealer
    return try await IdempotencyKeys.respond({
      try await self.runner.run(keyed, open: { try sealer.open($0, merchant: merchant, key: key) }) {
        record -> KeyedOutcome<Never> in
        let answer: StoredResponse
        do {
          answer = StoredResponse(code: 0, message: try IdempotencyKeys.serialize(try await operation()), details: [])
        } catch let refusal as GoogleRPCStatus {
          answer = try IdempotencyKeys.stored(refusal)
        } catch {
          try? await self.runner.idempotency.release(record.owner)
          throw error
        }
        try await self.runner.idempotency.finish(
          record.owner, response: try sealer.seal(answer, merchant: merchant, key: key))
        return .answered(answer, replayed: false)
      }
    }) { (never: Never) -> Output in
      switch never {}
    }
  }

  /// The token in a request field, verified (signature, key, claims; not its standing).
  private func verifiedArgument(_ token: String) async throws -> VerifiedToken {
    guard !token.isEmpty else {
      throw APIError.invalidArgument(field: "token", reason: "FIELD_REQUIRED", message: "token is required")
    }
    do {
      return try await self.authority.verify(token)
    } catch {
      throw APIError.invalidArgument(
        field: "token", reason: error.errorReason, message: "token is not a valid access token of this server")
    }
  }

  static func caller() throws -> Caller {
    guard let caller = ServiceContext.current?.caller else {
      // Only reachable if the auth interceptor is missing from the chain.
      throw APIError.status(.unauthenticated, reason: "TOKEN_MISSING", message: "an access token is required")
    }
    return caller
  }

  static func message(_ record: ClientRecord) -> Tender_Auth_V1_Client {
    var client = Tender_Auth_V1_Client()
    client.clientID = record.clientID
    client.merchantID = record.merchantID
    client.scopes = record.scopes
    client.status = record.status == .active ? .active : .disabled
    client.displayName = record.displayName
    client.createTime = Google_Protobuf_Timestamp(date: record.createTime)
    if let rotated = record.rotateTime { client.rotateTime = Google_Protobuf_Timestamp(date: rotated) }
    return client
  }
}
