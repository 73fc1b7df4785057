import Crypto
import Foundation
import Logging
import TenderAuth
import TenderCore
import TenderTesting
import Testing

/// TenderAuth on its own: client secrets, the key-encryption key, signing keys and tokens, over
/// the in-memory auth store (PostgresAuthStore's SQL is tested against PostgreSQL elsewhere).
@Suite("TenderAuth: secrets, keys and tokens")
struct TenderAuthTests {
  /// A sixteenth of production's scrypt cost; the checks are the same.
  static let hasher = ClientSecretHasher(parameters: .init(logRounds: 10, blockSize: 8, parallelism: 1))
  static let encryptionKey = try! KeyEncryptionKey(base64: Secret(TestServer.keyEncryptionKey))

  struct World {
    let store: InMemoryAuthStore
    let keys: KeyRing
    let authority: TokenAuthority
    let registry: ClientRegistry

    init(lifetime: Duration = .seconds(900)) {
      self.store = InMemoryAuthStore(database: InMemoryDatabase())
      self.keys = KeyRing(
        store: self.store, encryptionKey: TenderAuthTests.encryptionKey, tokenLifetime: lifetime, leeway: .seconds(30),
        refreshInterval: .seconds(3600),
        logger: Logger(label: "tender.test.auth")
      )
      self.authority = TokenAuthority(
        settings: TokenSettings(issuer: "tender", audience: "tender-api", lifetime: lifetime), keys: self.keys,
        store: self.store, cache: nil,
        hasher: TenderAuthTests.hasher, logger: Logger(label: "tender.test.auth")
      )
      self.registry = ClientRegistry(store: self.store, hasher: TenderAuthTests.hasher, cache: nil)
    }

    func client(scopes: [String] = ["payments:read", "payments:write"]) async throws -> (ClientRecord, Secret<String>) {
      try await self.store.ensureMerchant(id: "mer_auth", displayName: "Auth tests")
      return try await self.registry.create(merchantID: "mer_auth", scopes: scopes, displayName: "unit")
    }
  }

  @Test(
    "While the key store is down, the loaded keys keep serving and the store is asked again after a backoff, not on every call"
  )
  func keyRefreshBacksOff() async throws {
    let database = InMemoryDatabase()
    let keys = KeyRing(
      store: InMemoryAuthStore(database: database), encryptionKey: Self.encryptionKey, tokenLifetime: .seconds(900),
      leeway: .seconds(30), refreshInterval: .seconds(1), logger: Logger(label: "tender.test.auth"))
    try await keys.prepare()
    await database.setSigningKeysUnavailable(true)
    // The loaded keys are older than the refresh interval now.
    try await Task.sleep(for: .milliseconds(1100))
    let before = await database.signingKeyReads
    for _ in 0..<20 {
      #expect(try await keys.jwks().count == 1)
    }
    // One failed refresh; the next may come a second later at the earliest (before: one per call).
    #expect(await database.signingKeyReads == before + 1)
  }

  @Test("A secret verifies against its own hash only; the stored form carries its parameters and never the secret")
  func secretHashes() async throws {
    let secret = ClientSecretHasher.generateSecret()
    #expect(secret.value.hasPrefix("tsk_") && secret.value.count == 47)
    let hash = try await Self.hasher.hash(secret)
    let encoded = hash.encoded
    #expect(encoded.hasPrefix("$scrypt$ln=10,r=8,p=1$"))
    #expect(!encoded.contains(secret.value))
    #expect(SecretHash(encoded: encoded) == hash)
    #expect(try await Self.hasher.verify(secret, against: hash))
    #expect(try await !Self.hasher.verify(Secret(secret.value + "x"), against: hash))
    // A hash made at other parameters still verifies: they travel with it.
    let standard = ClientSecretHasher()
    #expect(try await standard.verify(secret, against: hash))
    #expect(SecretHash(encoded: "$bcrypt$whatever") == nil)
    #expect(SecretHash(encoded: "$scrypt$ln=x,r=8,p=1$AAAA$AAAA") == nil)
  }

  @Test("An unknown client costs one derivation, like a wrong secret")
  func decoyCost() async throws {
    let hasher = ClientSecretHasher(parameters: .init(logRounds: 10, blockSize: 8, parallelism: 1))
    let hash = try await hasher.hash(Secret("tsk_right"))
    let before = hasher.derivations
    #expect(try await !hasher.verify(Secret("tsk_wrong"), against: hash))
    let afterWrong = hasher.derivations
    #expect(try await !hasher.verify(Secret("tsk_wrong"), against: nil))
    #expect(afterWrong - before == 1)
    #expect(hasher.derivations - afterWrong == 1)
  }

  @Test("The key-encryption key is 32 bytes of base64; derived keys differ by purpose and never equal it")
  func keyEncryptionKey() throws {
    #expect(throws: KeyEncryptionKey.Invalid.self) { try KeyEncryptionKey(base64: Secret("c2hvcnQ=")) }
    #expect(throws: KeyEncryptionKey.Invalid.self) { try KeyEncryptionKey(base64: Secret("not base64 at all!")) }
    let generated = KeyEncryptionKey.generateBase64()
    #expect(Data(base64Encoded: generated.value)?.count == 32)
    let key = try KeyEncryptionKey(base64: generated)
    let pages = key.derivedKey(purpose: "page tokens").withUnsafeBytes { Data($0) }
    let answers = key.derivedKey(purpose: "idempotent responses").withUnsafeBytes { Data($0) }
    #expect(pages != answers)
    #expect(pages != Data(base64Encoded: generated.value))
    #expect(key.derivedKey(purpose: "page tokens").withUnsafeBytes { Data($0) } == pages)
  }

  @Test(
    "Issue and verify: the token carries the client, merchant and scopes; a wrong secret, an unknown client and an ungranted scope are refused"
  )
  func issueAndVerify() async throws {
    let world = World()
    let (client, secret) = try await world.client()
    let issued = try await world.authority.issue(clientID: client.clientID, secret: secret, requestedScopes: [])
    #expect(Set(issued.scopes) == ["payments:read", "payments:write"])
    let verified = try await world.authority.authenticate(issued.token.value)
    #expect(verified.caller.clientID == client.clientID)
    #expect(verified.caller.merchantID.rawValue == "mer_auth")
    #expect(verified.issuer == "tender" && verified.audience == "tender-api")
    #expect(verified.expireTime.timeIntervalSince(verified.issueTime) == 900)

    let narrow = try await world.authority.issue(
      clientID: client.clientID, secret: secret, requestedScopes: ["payments:read"])
    #expect(narrow.scopes == ["payments:read"])
    await #expect(throws: IssueFailure.scopeNotGranted("refunds:write")) {
      try await world.authority.issue(clientID: client.clientID, secret: secret, requestedScopes: ["refunds:write"])
    }
    await #expect(throws: IssueFailure.invalidClient) {
      try await world.authority.issue(clientID: client.clientID, secret: Secret("tsk_wrong"), requestedScopes: [])
    }
    await #expect(throws: IssueFailure.invalidClient) {
      try await world.authority.issue(clientID: "cli_nosuchclient", secret: secret, requestedScopes: [])
    }
  }

  @Test("Tokens that are not Tender's own fail with their reason")
  func verificationFailures() async throws {
    let world = World()
    let (client, secret) = try await world.client()
    let token = try await world.authority.issue(clientID: client.clientID, secret: secret, requestedScopes: []).token
      .value
    let parts = token.split(separator: ".").map(String.init)
    #expect(parts.count == 3)
    func header(_ json: String) -> String {
      Data(json.utf8).base64EncodedString().replacingOccurrences(of: "=", with: "").replacingOccurrences(
        of: "+", with: "-"
      ).replacingOccurrences(of: "/", with: "_")
    }
    let cases: [(String, AuthFailure)] = [
      ("not-a-jwt", .malformedToken),
      ([header(#"{"alg":"none","typ":"at+jwt"}"#), parts[1], ""].joined(separator: "."), .algorithmNotAllowed),
      (
        [header(#"{"alg":"HS256","typ":"at+jwt","kid":"k"}"#), parts[1], parts[2]].joined(separator: "."),
        .algorithmNotAllowed
      ),
      ([header(#"{"alg":"EdDSA","typ":"JWT","kid":"k"}"#), parts[1], parts[2]].joined(separator: "."), .wrongType),
      (
        [header(#"{"alg":"EdDSA","typ":"at+jwt","kid":"nosuchkey"}"#), parts[1], parts[2]].joined(separator: "."),
        .unknownKey
      ),
      ([parts[0], parts[1], String(parts[2].reversed())].joined(separator: "."), .badSignature),
    ]
    for (candidate, failure) in cases {
      await #expect(throws: failure, "\(failure)") { try await world.authority.authenticate(candidate) }
    }
    // Another ring (another deployment's keys) signed it: its key is unknown here.
    let stranger = World()
    let (otherClient, otherSecret) = try await stranger.client()
    let foreign = try await stranger.authority.issue(
      clientID: otherClient.clientID, secret: otherSecret, requestedScopes: []
    ).token.value
    await #expect(throws: AuthFailure.unknownKey) { try await world.authority.authenticate(foreign) }
  }

  @Test(
    "A revoked token and a disabled client's tokens stop working; enabling the client again restores its unrevoked tokens"
  )
  func revocationAndStatus() async throws {
    let world = World()
    let (client, secret) = try await world.client()
    let first = try await world.authority.issue(clientID: client.clientID, secret: secret, requestedScopes: []).token
      .value
    let second = try await world.authority.issue(clientID: client.clientID, secret: secret, requestedScopes: []).token
      .value
    try await world.authority.revoke(try await world.authority.authenticate(first), revokedBy: client.clientID)
    await #expect(throws: AuthFailure.revoked) { try await world.authority.authenticate(first) }
    _ = try await world.authority.authenticate(second)

    _ = try await world.authority.setStatus(clientID: client.clientID, .disabled)
    await #expect(throws: AuthFailure.clientDisabled) { try await world.authority.authenticate(second) }
    await #expect(throws: IssueFailure.invalidClient) {
      try await world.authority.issue(clientID: client.clientID, secret: secret, requestedScopes: [])
    }
    _ = try await world.authority.setStatus(clientID: client.clientID, .active)
    _ = try await world.authority.authenticate(second)
  }

  @Test(
    "Rotation: the retired key still verifies its tokens, the JWKS lists both; removing it ends its tokens and its JWK")
  func rotation() async throws {
    let world = World()
    let (client, secret) = try await world.client()
    let before = try await world.authority.issue(clientID: client.clientID, secret: secret, requestedScopes: []).token
      .value
    let firstKeys = try await world.keys.jwks().compactMap { $0["kid"] }
    #expect(firstKeys.count == 1)
    let newKey = try await world.keys.rotate()
    let after = try await world.authority.issue(clientID: client.clientID, secret: secret, requestedScopes: []).token
      .value
    let rotatedKeys = try await world.keys.jwks()
    #expect(Set(rotatedKeys.compactMap { $0["kid"] }) == Set(firstKeys + [newKey]))
    #expect(rotatedKeys.allSatisfy { $0["d"] == nil && $0["kty"] == "OKP" })
    _ = try await world.authority.verify(before)
    _ = try await world.authority.verify(after)

    #expect(try await world.keys.remove(keyID: firstKeys[0]))
    await #expect(throws: AuthFailure.unknownKey) { try await world.authority.verify(before) }
    _ = try await world.authority.verify(after)
    #expect(try await world.keys.jwks().compactMap { $0["kid"] } == [newKey])
  }

  @Test("Private keys are stored sealed: another key-encryption key cannot open them")
  func sealedKeys() async throws {
    let world = World()
    _ = try await world.client()
    try await world.keys.prepare()
    let stored = try await world.store.signingKeys()
    #expect(stored.count == 1)
    let other = KeyRing(
      store: world.store, encryptionKey: try KeyEncryptionKey(base64: KeyEncryptionKey.generateBase64()),
      tokenLifetime: .seconds(900),
      leeway: .seconds(30), refreshInterval: .seconds(3600), logger: Logger(label: "tender.test.auth")
    )
    await #expect(throws: KeyRingError.self) { try await other.prepare() }
  }

  @Test("Client requests are validated: merchant id, scopes, display name")
  func clientValidation() {
    #expect(throws: ClientRequestError.invalidMerchantID) {
      try ClientRegistry.validate(merchantID: "merchant", scopes: ["payments:read"], displayName: "")
    }
    #expect(throws: ClientRequestError.noScopes) {
      try ClientRegistry.validate(merchantID: "mer_a", scopes: [], displayName: "")
    }
    #expect(throws: ClientRequestError.invalidScope("Bad Scope")) {
      try ClientRegistry.validate(merchantID: "mer_a", scopes: ["payments:read", "Bad Scope"], displayName: "")
    }
    #expect(throws: ClientRequestError.displayNameTooLong) {
      try ClientRegistry.validate(
        merchantID: "mer_a", scopes: ["payments:read"], displayName: String(repeating: "n", count: 201))
    }
    // Bytes, not characters: one character with 150 combining marks is 301 bytes.
    #expect(throws: ClientRequestError.displayNameTooLong) {
      try ClientRegistry.validate(
        merchantID: "mer_a", scopes: ["payments:read"], displayName: "n" + String(repeating: "\u{0301}", count: 150))
    }
    #expect(throws: ClientRequestError.displayNameControlCharacters) {
      try ClientRegistry.validate(merchantID: "mer_a", scopes: ["payments:read"], displayName: "shop\u{0}")
    }
    #expect(throws: ClientRequestError.displayNameCardData) {
      try ClientRegistry.validate(
        merchantID: "mer_a", scopes: ["payments:read"], displayName: "test card 4242.4242.4242.4242")
    }
    #expect(ClientRegistry.isMerchantID("mer_abc123"))
    #expect(!ClientRegistry.isMerchantID("mer_"))
  }
}
