import Foundation
public import TenderCore

/// Why a client could not be created.
public enum ClientRequestError: Error, Equatable, Sendable {
  case invalidMerchantID
  case invalidScope(String)
  case noScopes
  case displayNameTooLong
  case displayNameControlCharacters
  case displayNameCardData
}

/// Creates API clients and rotates their secrets. A secret is returned once and only its hash is
/// stored.
public struct ClientRegistry: Sendable {
  private let store: any AuthStore
  private let hasher: ClientSecretHasher
  private let cache: (any TokenStandingCache)?

  public init(store: any AuthStore, hasher: ClientSecretHasher, cache: (any TokenStandingCache)?) {
    self.store = store
    self.hasher = hasher
    self.cache = cache
  }

  /// Creates a client of `merchantID` with `scopes`; returns it with its secret.
  public func create(
    merchantID: String, scopes: [String], displayName: String
  ) async throws -> (ClientRecord, Secret<String>) {
    try Self.validate(merchantID: merchantID, scopes: scopes, displayName: displayName)
    let secret = ClientSecretHasher.generateSecret()
    let hash = try await self.hasher.hash(secret)
    let record = ClientRecord(
      clientID: Identifiers.make(prefix: "cli"),
      merchantID: merchantID,
      displayName: displayName,
      scopes: Array(Set(scopes)).sorted(),
      status: .active,
      secretHash: hash.encoded,
      createTime: Date(),
      rotateTime: nil
    )
    try await self.store.insertClient(record)
    return (record, secret)
  }

  /// Replaces the client's secret; the old one stops working at once. Tokens already issued stay
  /// valid until they expire (revoke them to end them sooner).
  /// `permitted` sees the client first (its merchant and scopes never change): a client it refuses
  /// is `unknownClient`, as if it did not exist.
  public func rotateSecret(
    clientID: String, permitted: (ClientRecord) -> Bool = { _ in true }
  ) async throws -> (ClientRecord, Secret<String>) {
    guard let current = try await self.store.client(id: clientID), permitted(current) else {
      throw AuthStoreError.unknownClient
    }
    let secret = ClientSecretHasher.generateSecret()
    let hash = try await self.hasher.hash(secret)
    let record = try await self.store.replaceSecret(clientID: clientID, secretHash: hash.encoded)
    try? await self.cache?.forgetClient(clientID)
    return (record, secret)
  }

  /// Checks a new client's fields without touching storage.
  public static func validate(merchantID: String, scopes: [String], displayName: String) throws(ClientRequestError) {
    guard Self.isMerchantID(merchantID) else { throw .invalidMerchantID }
    guard !scopes.isEmpty else { throw .noScopes }
    if let invalid = scopes.first(where: { !Scopes.isValid($0) }) { throw .invalidScope(invalid) }
    switch StoredText.problem(displayName, maximumBytes: 200) {
    case nil: break
    case .tooLong: throw .displayNameTooLong
    case .controlCharacter: throw .displayNameControlCharacters
    case .cardNumber: throw .displayNameCardData
    }
  }

  public static func isMerchantID(_ id: String) -> Bool {
    guard id.hasPrefix("mer_") else { return false }
    let rest = id.utf8.dropFirst(4)
    return (1...64).contains(rest.count)
      && rest.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A) }
  }
}
