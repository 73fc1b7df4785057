/// Who is calling: established by the auth interceptor from a verified access token and handed to
/// the services, which scope every read and write to `merchantID`.
public struct Caller: Sendable, Hashable {
  public let merchantID: MerchantID
  public let clientID: String
  public let scopes: Set<String>
  /// The access token's `jti`.
  public let tokenID: String

  public init(merchantID: MerchantID, clientID: String, scopes: Set<String>, tokenID: String) {
    self.merchantID = merchantID
    self.clientID = clientID
    self.scopes = scopes
    self.tokenID = tokenID
  }

  /// Whether the caller's token grants `scope`. Scopes are exact: `admin` grants client
  /// management, not payments.
  public func has(scope: String) -> Bool {
    self.scopes.contains(scope)
  }

  /// Whether the caller reaches the clients and tokens of `merchant`: those of its own merchant,
  /// or any merchant's with the `platform` scope.
  public func reaches(merchant: String) -> Bool {
    merchant == self.merchantID.rawValue || self.has(scope: Scopes.platform)
  }

  /// Whether the caller may give a new client `scope`: only a scope its own token carries, and
  /// never `platform`, which only the operator CLI grants.
  public func mayGrant(scope: String) -> Bool {
    scope != Scopes.platform && self.has(scope: scope)
  }
}

/// Scope names with meaning beyond the policy table.
public enum Scopes {
  /// Merchant administration: create clients of the caller's own merchant (with scopes the
  /// caller holds), rotate their secrets, revoke its merchant's tokens.
  public static let admin = "admin"
  /// Platform operator: what `admin` and the token scopes allow, for every merchant instead of
  /// the caller's own. Granted only by the operator CLI (`tender client create`), never over RPC,
  /// and a client holding it is administered only by another platform caller.
  public static let platform = "platform"

  /// A scope name: lowercase words separated by `:`, `_` or `.`.
  public static func isValid(_ scope: String) -> Bool {
    guard !scope.isEmpty, scope.utf8.count <= 64 else { return false }
    return scope.utf8.allSatisfy {
      ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x3A || $0 == 0x5F || $0 == 0x2E
    }
  }
}
