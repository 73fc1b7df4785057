public import Crypto
import Foundation
import JWTKit
public import Logging
public import TenderCore

/// The key that seals signing keys' private halves at rest (AES-256-GCM, the key id as
/// associated data so a sealed key cannot be swapped onto another row).
public struct KeyEncryptionKey: Sendable {
  let key: SymmetricKey

  public struct Invalid: Error, CustomStringConvertible {
    public var description: String { "must be 32 bytes, base64-encoded (openssl rand -base64 32)" }
  }

  public init(base64: Secret<String>) throws {
    guard let data = Data(base64Encoded: base64.value.trimmingCharacters(in: .whitespacesAndNewlines)), data.count == 32
    else {
      throw Invalid()
    }
    self.key = SymmetricKey(data: data)
  }

  public init(key: SymmetricKey) {
    self.key = key
  }

  /// A new random key, base64-encoded (for dev mode and `tender key` docs).
  public static func generateBase64() -> Secret<String> {
    Secret(SymmetricKey(size: .bits256).withUnsafeBytes { Data($0) }.base64EncodedString())
  }

  /// A key for another purpose (e.g. signing page tokens), derived with HKDF so it reveals
  /// nothing of this one.
  public func derivedKey(purpose: String) -> SymmetricKey {
    HKDF<SHA256>.deriveKey(inputKeyMaterial: self.key, info: Array("tender \(purpose)".utf8), outputByteCount: 32)
  }

  func seal(_ privateKey: [UInt8], keyID: String) throws -> [UInt8] {
    let box = try AES.GCM.seal(privateKey, using: self.key, authenticating: Array(keyID.utf8))
    guard let combined = box.combined else { throw KeyRingError.sealFailed }
    return Array(combined)
  }

  func open(_ sealed: [UInt8], keyID: String) throws -> [UInt8] {
    let box = try AES.GCM.SealedBox(combined: sealed)
    return Array(try AES.GCM.open(box, using: self.key, authenticating: Array(keyID.utf8)))
  }
}

public enum KeyRingError: Error, CustomStringConvertible {
  case sealFailed
  /// A stored key could not be opened: the key-encryption key is not the one it was sealed with.
  case cannotOpen(keyID: String)
  case noActiveKey

  public var description: String {
    switch self {
    case .sealFailed: return "could not seal a signing key"
    case .cannotOpen(let keyID): return "signing key \(keyID) cannot be opened with the configured key-encryption key"
    case .noActiveKey: return "no active signing key"
    }
  }
}

/// Token-signing keys, loaded from the store and refreshed periodically, so keys rotated by
/// another replica or by `tender key rotate` are picked up without restarts.
///
/// Exactly one key signs (the active one). Retired keys verify the tokens they signed until
/// those have expired; a removed key verifies nothing. An unknown `kid` triggers one refresh (at
/// most once a second) and is otherwise rejected: there is no default key.
public actor KeyRing {
  /// The one signing algorithm Tender issues and accepts.
  public static let algorithm = "EdDSA"

  struct Loaded: Sendable {
    let record: SigningKeyRecord
    let verifier: JWTKeyCollection
  }

  private let store: any AuthStore
  private let encryptionKey: KeyEncryptionKey
  private let tokenLifetime: Duration
  private let leeway: Duration
  private let refreshInterval: Duration
  private let logger: Logger

  private var keys: [String: Loaded] = [:]
  private var signer: (keyID: String, collection: JWTKeyCollection)?
  private var loadedAt: ContinuousClock.Instant?
  private var lastMissRefresh: ContinuousClock.Instant?
  private var refreshing: Task<Void, any Error>?
  /// Failed refreshes in a row, and when the next one may be tried: while the store is down, the
  /// loaded keys keep serving and the store is asked again after 1 s, 2 s, 4 s, … (at most the
  /// refresh interval), not on every call.
  private var failedRefreshes = 0
  private var retryAt: ContinuousClock.Instant?

  public init(
    store: any AuthStore, encryptionKey: KeyEncryptionKey, tokenLifetime: Duration, leeway: Duration,
    refreshInterval: Duration, logger: Logger
  ) {
    self.store = store
    self.encryptionKey = encryptionKey
    self.tokenLifetime = tokenLifetime
    self.leeway = leeway
    self.refreshInterval = refreshInterval
    self.logger = logger
  }

  /// Makes sure a key is active (creating the first one on an empty database) and loads the keys.
  public func prepare() async throws {
    if try await self.store.signingKeys().first(where: { $0.state == .active }) == nil {
      let created = try await self.store.insertFirstKey(try self.newKey())
      self.logger.notice("signing key ready", metadata: ["kid": "\(created.keyID)"])
    }
    try await self.refresh()
  }

  /// Creates a new active key; the previous one is retired and keeps verifying its tokens.
  @discardableResult
  public func rotate() async throws -> String {
    let key = try self.newKey()
    try await self.store.rotate(to: key)
    try await self.refresh()
    return key.keyID
  }

  /// Deletes a key; tokens it signed are rejected from the next refresh on (at once here).
  public func remove(keyID: String) async throws -> Bool {
    let removed = try await self.store.removeKey(id: keyID)
    try await self.refresh()
    return removed
  }

  /// Signs `claims` with the active key; returns the compact JWT.
  func sign(_ claims: AccessTokenClaims) async throws -> String {
    try await self.refreshIfStale()
    if self.signer == nil {
      // An empty database (or keys not loadable at start-up): make sure a key is active.
      try await self.prepare()
    }
    guard let signer = self.signer else { throw KeyRingError.noActiveKey }
    var header = JWTHeader()
    header.alg = Self.algorithm
    header.typ = AccessTokenClaims.type
    header.kid = signer.keyID
    return try await signer.collection.sign(claims, kid: JWKIdentifier(string: signer.keyID), header: header)
  }

  /// The verifier for `keyID` if that key exists and may still verify tokens.
  func verifier(for keyID: String) async throws -> JWTKeyCollection? {
    try await self.refreshIfStale()
    if self.keys[keyID] == nil {
      let now = ContinuousClock.now
      if self.lastMissRefresh.map({ now - $0 >= .seconds(1) }) ?? true {
        self.lastMissRefresh = now
        try await self.refresh()
      }
    }
    guard let loaded = self.keys[keyID], self.isUsable(loaded.record, at: Date()) else { return nil }
    return loaded.verifier
  }

  /// Whether `keyID` may still verify tokens (for tokens whose signature was checked earlier).
  func canVerify(keyID: String) async -> Bool {
    try? await self.refreshIfStale()
    guard let loaded = self.keys[keyID] else { return false }
    return self.isUsable(loaded.record, at: Date())
  }

  /// The public keys that can still verify a token, as a JWK Set document.
  public func jwks() async throws -> [[String: String]] {
    try await self.refreshIfStale()
    let now = Date()
    return self.keys.values
      .filter { self.isUsable($0.record, at: now) }
      .sorted {
        ($0.record.state == .active ? 0 : 1, $0.record.createTime) < (
          $1.record.state == .active ? 0 : 1, $1.record.createTime
        )
      }
      .map { loaded in
        [
          "kty": "OKP",
          "crv": "Ed25519",
          "x": Base64URL.encode(loaded.record.publicKey),
          "kid": loaded.record.keyID,
          "alg": Self.algorithm,
          "use": "sig",
        ]
      }
  }

  /// Reloads every key from the store.
  public func refresh() async throws {
    if let refreshing = self.refreshing {
      try await refreshing.value
      return
    }
    let task = Task { try await self.load() }
    self.refreshing = task
    defer { self.refreshing = nil }
    try await task.value
  }

  private func load() async throws {
    let records = try await self.store.signingKeys()
    var keys: [String: Loaded] = [:]
    var signer: (keyID: String, collection: JWTKeyCollection)?
    for record in records where record.algorithm == Self.algorithm {
      let publicKey = try EdDSA.PublicKey(backing: Curve25519.Signing.PublicKey(rawRepresentation: record.publicKey))
      let verifier = JWTKeyCollection()
      await verifier.add(eddsa: publicKey, kid: JWKIdentifier(string: record.keyID))
      keys[record.keyID] = Loaded(record: record, verifier: verifier)
      if record.state == .active {
        let raw: [UInt8]
        do {
          raw = try self.encryptionKey.open(record.sealedPrivateKey, keyID: record.keyID)
        } catch {
          throw KeyRingError.cannotOpen(keyID: record.keyID)
        }
        let privateKey = EdDSA.PrivateKey(backing: try Curve25519.Signing.PrivateKey(rawRepresentation: raw))
        let collection = JWTKeyCollection()
        await collection.add(eddsa: privateKey, kid: JWKIdentifier(string: record.keyID))
        signer = (record.keyID, collection)
      }
    }
    self.keys = keys
    self.signer = signer
    self.loadedAt = ContinuousClock.now
  }

  private func refreshIfStale() async throws {
    let now = ContinuousClock.now
    if let loadedAt = self.loadedAt, now - loadedAt < self.refreshInterval { return }
    if self.loadedAt != nil, let retryAt = self.retryAt, now < retryAt { return }
    do {
      try await self.refresh()
      self.failedRefreshes = 0
      self.retryAt = nil
    } catch {
      // Keep serving with the keys already loaded; a database blip must not fail every call.
      guard self.loadedAt != nil else { throw error }
      self.failedRefreshes += 1
      let backoff = min(self.refreshInterval, .seconds(1 << min(self.failedRefreshes - 1, 16)))
      self.retryAt = ContinuousClock.now + backoff
      self.logger.warning(
        "could not refresh signing keys",
        metadata: ["error": "\(String(reflecting: error))", "retry_in": "\(backoff)"])
    }
  }

  /// Active keys verify; retired keys verify until every token they signed has expired.
  private func isUsable(_ record: SigningKeyRecord, at now: Date) -> Bool {
    switch record.state {
    case .active:
      return true
    case .retired:
      guard let retired = record.retireTime else { return false }
      return now < retired.addingTimeInterval(Self.seconds(self.tokenLifetime + self.leeway))
    }
  }

  private func newKey() throws -> SigningKeyRecord {
    let privateKey = Curve25519.Signing.PrivateKey()
    let keyID = Identifiers.make(prefix: "key", length: 16)
    return SigningKeyRecord(
      keyID: keyID,
      algorithm: Self.algorithm,
      publicKey: Array(privateKey.publicKey.rawRepresentation),
      sealedPrivateKey: try self.encryptionKey.seal(Array(privateKey.rawRepresentation), keyID: keyID),
      state: .active,
      createTime: Date(),
      retireTime: nil
    )
  }

  static func seconds(_ duration: Duration) -> TimeInterval {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
  }
}
