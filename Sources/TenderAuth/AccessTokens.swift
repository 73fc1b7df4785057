public import Foundation
import JWTKit
import Synchronization
public import Logging
public import TenderCore

/// The claims of a Tender access token (the shape of RFC 9068: `typ` `at+jwt`, `client_id`,
/// space-separated `scope`), plus the merchant it acts for.
struct AccessTokenClaims: JWTPayload, Equatable {
  static let type = "at+jwt"

  var issuer: String
  var audience: String
  var subject: String
  var clientID: String
  var merchantID: String
  var scope: String
  var tokenID: String
  var issuedAt: Int64
  var notBefore: Int64
  var expires: Int64

  enum CodingKeys: String, CodingKey {
    case issuer = "iss"
    case audience = "aud"
    case subject = "sub"
    case clientID = "client_id"
    case merchantID = "merchant_id"
    case scope
    case tokenID = "jti"
    case issuedAt = "iat"
    case notBefore = "nbf"
    case expires = "exp"
  }

  /// Claims are checked by `TokenAuthority`, with its leeway, after the signature.
  func verify(using algorithm: some JWTAlgorithm) async throws {}
}

/// Why a bearer token was refused. The raw value is the reason in logs and metrics.
public enum AuthFailure: String, Error, Sendable, CaseIterable {
  case missingToken = "missing_token"
  case malformedToken = "malformed_token"
  case algorithmNotAllowed = "algorithm_not_allowed"
  case wrongType = "wrong_type"
  case unknownKey = "unknown_key"
  case badSignature = "bad_signature"
  case expired = "expired"
  case notYetValid = "not_yet_valid"
  case wrongIssuer = "wrong_issuer"
  case wrongAudience = "wrong_audience"
  case revoked = "revoked"
  case clientDisabled = "client_disabled"
  /// The token is genuine but its standing could not be checked (database unreachable).
  case standingUnavailable = "standing_unavailable"

  /// The `ErrorInfo` reason sent to the client.
  public var errorReason: String {
    switch self {
    case .missingToken: return "TOKEN_MISSING"
    case .expired: return "TOKEN_EXPIRED"
    case .revoked: return "TOKEN_REVOKED"
    case .clientDisabled: return "CLIENT_DISABLED"
    case .standingUnavailable: return "AUTH_UNAVAILABLE"
    default: return "TOKEN_INVALID"
    }
  }
}

/// Settings of token issuance and verification.
public struct TokenSettings: Sendable {
  public var issuer: String
  public var audience: String
  /// Lifetime of issued tokens (15 minutes by default).
  public var lifetime: Duration
  /// Clock skew tolerated on `exp`, `nbf` and `iat`.
  public var leeway: Duration
  /// How long a token's standing (revoked? client disabled?) may be cached.
  public var standingCacheTTL: Duration

  public init(
    issuer: String, audience: String, lifetime: Duration = .seconds(900), leeway: Duration = .seconds(30),
    standingCacheTTL: Duration = .seconds(30)
  ) {
    self.issuer = issuer
    self.audience = audience
    self.lifetime = lifetime
    self.leeway = leeway
    self.standingCacheTTL = standingCacheTTL
  }
}

/// A token that passed verification.
public struct VerifiedToken: Sendable, Hashable {
  public let caller: Caller
  public let issuer: String
  public let audience: String
  public let issueTime: Date
  public let notBeforeTime: Date
  public let expireTime: Date
}

public struct IssuedToken: Sendable {
  public let token: Secret<String>
  public let expireTime: Date
  public let scopes: [String]
}

/// Why IssueToken refused: the same answer for an unknown client and a wrong secret.
public enum IssueFailure: Error, Equatable, Sendable {
  case invalidClient
  /// The client asked for a scope it does not hold.
  case scopeNotGranted(String)
}

/// Issues, verifies, revokes and introspects access tokens.
public struct TokenAuthority: Sendable {
  public let settings: TokenSettings
  public let keys: KeyRing
  private let store: any AuthStore
  private let cache: (any TokenStandingCache)?
  private let hasher: ClientSecretHasher
  private let logger: Logger
  private let verified = VerifiedTokenCache(capacity: 10_000, maximumAge: 60)

  public init(
    settings: TokenSettings, keys: KeyRing, store: any AuthStore, cache: (any TokenStandingCache)?,
    hasher: ClientSecretHasher, logger: Logger
  ) {
    self.settings = settings
    self.keys = keys
    self.store = store
    self.cache = cache
    self.hasher = hasher
    self.logger = logger
  }

  /// Client credentials → a signed access token carrying the requested scopes (all of the
  /// client's scopes when none are requested).
  public func issue(clientID: String, secret: Secret<String>, requestedScopes: [String]) async throws -> IssuedToken {
    let client = try await self.store.client(id: clientID)
    let stored = client.flatMap { SecretHash(encoded: $0.secretHash) }
    // The hash is computed even when the client does not exist, so both failures take as long.
    let matches = try await self.hasher.verify(secret, against: stored)
    guard matches, let client, client.status == .active else { throw IssueFailure.invalidClient }
    var scopes = client.scopes
    if !requestedScopes.isEmpty {
      for scope in requestedScopes where !client.scopes.contains(scope) {
        throw IssueFailure.scopeNotGranted(scope)
      }
      scopes = Array(Set(requestedScopes)).sorted()
    }
    let now = Int64(Date().timeIntervalSince1970)
    let expires = now + self.settings.lifetime.components.seconds
    let claims = AccessTokenClaims(
      issuer: self.settings.issuer,
      audience: self.settings.audience,
      subject: client.clientID,
      clientID: client.clientID,
      merchantID: client.merchantID,
      scope: scopes.joined(separator: " "),
      tokenID: Identifiers.make(prefix: "tok"),
      issuedAt: now,
      notBefore: now,
      expires: expires
    )
    let token = try await self.keys.sign(claims)
    return IssuedToken(
      token: Secret(token), expireTime: Date(timeIntervalSince1970: TimeInterval(expires)), scopes: scopes)
  }

  /// Checks the token's form, algorithm, key, signature and claims (not its revocation).
  public func verify(_ token: String) async throws(AuthFailure) -> VerifiedToken {
    let now = Date().timeIntervalSince1970
    // A token already verified here skips the signature and the claims, not the checks that
    // change with time: its expiry and whether its key may still verify (a removed key's tokens
    // are refused at once). Its standing (revocation, client status) is checked by the caller.
    if let cached = self.verified.lookup(token, now: now) {
      guard Double(cached.claims.expires) > now - KeyRing.seconds(self.settings.leeway) else { throw .expired }
      if await self.keys.canVerify(keyID: cached.keyID) { return cached.token }
      throw .unknownKey
    }
    let verified = try await self.verifyUncached(token)
    self.verified.store(token, verified, now: now)
    return verified.token
  }

  private func verifyUncached(_ token: String) async throws(AuthFailure) -> VerifiedTokenCache.Entry {
    let parts = token.split(separator: ".", omittingEmptySubsequences: false)
    guard parts.count == 3, token.utf8.count <= 8192,
      let headerData = Base64URL.decode(parts[0]).map({ Data($0) }),
      let header = try? JSONSerialization.jsonObject(with: headerData) as? [String: Any]
    else { throw .malformedToken }
    // The allow-list comes first: `none`, HS256 (HMAC keyed with a public key) and every other
    // algorithm are refused before any key is looked at.
    guard let alg = header["alg"] as? String, alg == KeyRing.algorithm else { throw .algorithmNotAllowed }
    guard let typ = header["typ"] as? String,
      typ.lowercased() == AccessTokenClaims.type || typ.lowercased() == "application/" + AccessTokenClaims.type
    else {
      throw .wrongType
    }
    guard header["crit"] == nil else { throw .malformedToken }
    guard let kid = header["kid"] as? String, !kid.isEmpty else { throw .unknownKey }
    let verifier: JWTKeyCollection?
    do {
      verifier = try await self.keys.verifier(for: kid)
    } catch {
      self.logger.error("signing keys unavailable", metadata: ["error": "\(String(reflecting: error))"])
      throw .unknownKey
    }
    guard let verifier else { throw .unknownKey }
    let claims: AccessTokenClaims
    do {
      claims = try await verifier.verify(token, as: AccessTokenClaims.self)
    } catch let error as JWTError where error.errorType == .signatureVerificationFailed {
      throw .badSignature
    } catch {
      throw .malformedToken
    }
    let now = Date().timeIntervalSince1970
    let leeway = KeyRing.seconds(self.settings.leeway)
    guard claims.issuer == self.settings.issuer else { throw .wrongIssuer }
    guard claims.audience == self.settings.audience else { throw .wrongAudience }
    guard Double(claims.expires) > now - leeway else { throw .expired }
    guard Double(claims.notBefore) <= now + leeway, Double(claims.issuedAt) <= now + leeway else { throw .notYetValid }
    guard claims.subject == claims.clientID, let merchant = MerchantID(claims.merchantID), !claims.tokenID.isEmpty
    else {
      throw .malformedToken
    }
    let verified = VerifiedToken(
      caller: Caller(
        merchantID: merchant,
        clientID: claims.clientID,
        scopes: Set(claims.scope.split(separator: " ").map(String.init)),
        tokenID: claims.tokenID
      ),
      issuer: claims.issuer,
      audience: claims.audience,
      issueTime: Date(timeIntervalSince1970: TimeInterval(claims.issuedAt)),
      notBeforeTime: Date(timeIntervalSince1970: TimeInterval(claims.notBefore)),
      expireTime: Date(timeIntervalSince1970: TimeInterval(claims.expires))
    )
    return VerifiedTokenCache.Entry(token: verified, claims: claims, keyID: kid)
  }

  /// `verify`, then the token's standing: not revoked, client still active. Standing comes from
  /// the shared cache when it knows, else from the store (and is cached briefly).
  public func authenticate(_ token: String) async throws(AuthFailure) -> VerifiedToken {
    let verified = try await self.verify(token)
    try await self.checkStanding(of: verified, cached: nil, askCache: true)
    return verified
  }

  /// The standing half of `authenticate`, for a verified token whose cached standing was read
  /// already (with its call's rate limit: `CallAdmissionStore`): `cached`, else the store's (and
  /// then cached briefly).
  public func checkStanding(of verified: VerifiedToken, cached: TokenStanding?) async throws(AuthFailure) {
    try await self.checkStanding(of: verified, cached: cached, askCache: false)
  }

  private func checkStanding(
    of verified: VerifiedToken, cached: TokenStanding?, askCache: Bool
  ) async throws(AuthFailure) {
    let standing: TokenStanding
    if let cached {
      standing = cached
    } else {
      do {
        standing = try await self.standing(of: verified, askCache: askCache)
      } catch {
        // Without the source of truth the token's standing is unknown: refuse rather than guess.
        self.logger.error("token standing unavailable", metadata: ["error": "\(String(reflecting: error))"])
        throw .standingUnavailable
      }
    }
    if standing.revoked { throw .revoked }
    guard standing.clientStatus == .active else { throw .clientDisabled }
  }

  /// Whether a token accepted earlier is still in good standing, read from the store itself (the
  /// cache may hold what is being re-checked): the reason it is refused now, or nil. A store that
  /// cannot answer refuses nothing; the question is asked again at the next change.
  public func recheck(_ token: VerifiedToken) async -> AuthFailure? {
    guard token.expireTime > Date() else { return .expired }
    guard let standing = try? await self.store.standing(clientID: token.caller.clientID, tokenID: token.caller.tokenID)
    else { return nil }
    if standing.revoked { return .revoked }
    return standing.clientStatus == .active ? nil : .clientDisabled
  }

  private func standing(of token: VerifiedToken, askCache: Bool) async throws -> TokenStanding {
    let clientID = token.caller.clientID
    let tokenID = token.caller.tokenID
    if askCache, let cache = self.cache {
      do {
        if let cached = try await cache.standing(clientID: clientID, tokenID: tokenID) { return cached }
      } catch {
        self.logger.debug("standing cache unavailable", metadata: ["error": "\(String(reflecting: error))"])
      }
    }
    let standing = try await self.store.standing(clientID: clientID, tokenID: tokenID)
    if let cache = self.cache {
      do {
        try await cache.remember(standing, clientID: clientID, tokenID: tokenID, for: self.settings.standingCacheTTL)
      } catch {
        self.logger.debug("standing cache unavailable", metadata: ["error": "\(String(reflecting: error))"])
      }
    }
    return standing
  }

  /// Revokes a verified token: recorded in the store (the source of truth), then marked in the
  /// cache so every replica sees it at once.
  public func revoke(_ token: VerifiedToken, revokedBy: String) async throws {
    try await self.store.revoke(
      tokenID: token.caller.tokenID, clientID: token.caller.clientID, expireTime: token.expireTime, revokedBy: revokedBy
    )
    if let cache = self.cache {
      let remaining = max(1, token.expireTime.timeIntervalSinceNow + KeyRing.seconds(self.settings.leeway))
      do {
        try await cache.markRevoked(tokenID: token.caller.tokenID, expiresIn: .seconds(remaining))
      } catch {
        // The cache holds standings for at most standingCacheTTL; after that the store answers.
        self.logger.warning(
          "could not mark a revocation in the cache", metadata: ["error": "\(String(reflecting: error))"])
      }
    }
  }

  /// Disables or re-enables a client; its tokens stop (or resume) working.
  public func setStatus(clientID: String, _ status: ClientRecord.Status) async throws -> ClientRecord {
    let record = try await self.store.setStatus(clientID: clientID, status: status)
    try? await self.cache?.forgetClient(clientID)
    return record
  }
}

/// Tokens whose signature and claims were verified by this process, so a client's next calls
/// with the same token skip the Ed25519 verification and JSON decoding. Bounded in size and age;
/// nothing here is needed for correctness (a miss verifies again).
final class VerifiedTokenCache: Sendable {
  struct Entry: Sendable {
    let token: VerifiedToken
    let claims: AccessTokenClaims
    let keyID: String
  }

  private struct Stored: Sendable {
    let entry: Entry
    let until: TimeInterval
  }

  private let capacity: Int
  private let maximumAge: TimeInterval
  private let entries = Mutex<[String: Stored]>([:])

  init(capacity: Int, maximumAge: TimeInterval) {
    self.capacity = capacity
    self.maximumAge = maximumAge
  }

  func lookup(_ token: String, now: TimeInterval) -> Entry? {
    self.entries.withLock { entries in
      guard let stored = entries[token] else { return nil }
      guard stored.until > now else {
        entries[token] = nil
        return nil
      }
      return stored.entry
    }
  }

  func store(_ token: String, _ entry: Entry, now: TimeInterval) {
    let until = min(Double(entry.claims.expires), now + self.maximumAge)
    self.entries.withLock { entries in
      if entries.count >= self.capacity {
        entries = entries.filter { $0.value.until > now }
        if entries.count >= self.capacity { entries.removeAll(keepingCapacity: true) }
      }
      entries[token] = Stored(entry: entry, until: until)
    }
  }
}
