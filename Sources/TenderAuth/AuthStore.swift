public import Foundation

/// An API client as stored: its credentials' hash, never the secret.
public struct ClientRecord: Sendable, Hashable {
  public enum Status: String, Sendable, Hashable {
    case active
    case disabled
  }

  public var clientID: String
  public var merchantID: String
  public var displayName: String
  public var scopes: [String]
  public var status: Status
  public var secretHash: String
  public var createTime: Date
  public var rotateTime: Date?

  public init(
    clientID: String, merchantID: String, displayName: String, scopes: [String], status: Status, secretHash: String,
    createTime: Date, rotateTime: Date?
  ) {
    self.clientID = clientID
    self.merchantID = merchantID
    self.displayName = displayName
    self.scopes = scopes
    self.status = status
    self.secretHash = secretHash
    self.createTime = createTime
    self.rotateTime = rotateTime
  }
}

/// A token-signing key as stored. The private key is sealed with the key-encryption key.
public struct SigningKeyRecord: Sendable, Hashable {
  public enum State: String, Sendable, Hashable {
    /// Signs new tokens; exactly one key is active.
    case active
    /// Signs nothing; verifies the tokens it signed until they have expired.
    case retired
  }

  public var keyID: String
  public var algorithm: String
  public var publicKey: [UInt8]
  public var sealedPrivateKey: [UInt8]
  public var state: State
  public var createTime: Date
  public var retireTime: Date?

  public init(
    keyID: String, algorithm: String, publicKey: [UInt8], sealedPrivateKey: [UInt8], state: State, createTime: Date,
    retireTime: Date?
  ) {
    self.keyID = keyID
    self.algorithm = algorithm
    self.publicKey = publicKey
    self.sealedPrivateKey = sealedPrivateKey
    self.state = state
    self.createTime = createTime
    self.retireTime = retireTime
  }
}

/// What the auth path needs to know about a token beyond its signature, from the source of truth.
public struct TokenStanding: Sendable, Hashable {
  /// The client's status; nil when the client no longer exists.
  public var clientStatus: ClientRecord.Status?
  /// Whether the token's id is on the revocation list.
  public var revoked: Bool

  public init(clientStatus: ClientRecord.Status?, revoked: Bool) {
    self.clientStatus = clientStatus
    self.revoked = revoked
  }
}

public enum AuthStoreError: Error, Equatable {
  /// The merchant does not exist (or is disabled).
  case unknownMerchant
  /// The client does not exist.
  case unknownClient
}

/// Durable auth state: merchants' API clients, signing keys and revoked tokens.
public protocol AuthStore: Sendable {
  /// Creates the merchant unless it exists.
  func ensureMerchant(id: String, displayName: String) async throws
  /// Inserts a new client; throws `unknownMerchant` when its merchant is missing or disabled.
  func insertClient(_ client: ClientRecord) async throws
  func client(id: String) async throws -> ClientRecord?
  /// Replaces the client's secret hash and stamps its rotate time; returns the updated client.
  func replaceSecret(clientID: String, secretHash: String) async throws -> ClientRecord
  /// Sets the client's status; returns the updated client.
  func setStatus(clientID: String, status: ClientRecord.Status) async throws -> ClientRecord

  /// Every stored signing key, active first.
  func signingKeys() async throws -> [SigningKeyRecord]
  /// Inserts `key` as the active key unless one is active already (another replica won); returns
  /// the active key.
  func insertFirstKey(_ key: SigningKeyRecord) async throws -> SigningKeyRecord
  /// Retires the active key and makes `key` active, atomically.
  func rotate(to key: SigningKeyRecord) async throws
  /// Deletes a key: every token it signed stops verifying. Returns whether it existed.
  func removeKey(id: String) async throws -> Bool

  /// Records a revocation (idempotent).
  func revoke(tokenID: String, clientID: String, expireTime: Date, revokedBy: String) async throws
  /// The client's status — `disabled` too when its merchant is disabled — and whether the token
  /// is revoked.
  func standing(clientID: String, tokenID: String) async throws -> TokenStanding
  /// Deletes revocations of tokens that have expired anyway; returns how many.
  func purgeExpiredRevocations() async throws -> Int
}

/// A fast shared cache in front of `AuthStore.standing` (Redis in production). Losing it costs
/// speed, never correctness: every miss or failure goes to the store.
public protocol TokenStandingCache: Sendable {
  func standing(clientID: String, tokenID: String) async throws -> TokenStanding?
  func remember(_ standing: TokenStanding, clientID: String, tokenID: String, for ttl: Duration) async throws
  /// Marks the token revoked until `expiresIn` from now.
  func markRevoked(tokenID: String, expiresIn: Duration) async throws
  /// Forgets what is known of the client (after it is disabled or changed).
  func forgetClient(_ clientID: String) async throws
}
