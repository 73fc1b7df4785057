public import Crypto
import Foundation
package import TenderCore

/// Opaque page tokens: the cursor, the merchant and the list's filter, signed with HMAC-SHA256.
/// A token cannot be forged or edited, nor replayed by another merchant or with another filter.
public struct PageTokens: Sendable {
  private let key: SymmetricKey

  public init(key: SymmetricKey) {
    self.key = key
  }

  package func seal(_ cursor: PageCursor, merchant: MerchantID, filter: [UInt8]) -> String {
    let payload = Array(
      "v1|\(merchant.rawValue)|\(Hex.encode(filter))|\(cursor.createTimeMicroseconds)|\(cursor.id)".utf8)
    let mac = HMAC<SHA256>.authenticationCode(for: payload, using: self.key)
    return Base64URL.encode(payload) + "." + Base64URL.encode(Array(mac))
  }

  /// The cursor of a token this server issued for `merchant` and `filter`; nil for anything else.
  package func open(_ token: String, merchant: MerchantID, filter: [UInt8]) -> PageCursor? {
    let parts = token.split(separator: ".", omittingEmptySubsequences: false)
    guard token.utf8.count <= 1024, parts.count == 2,
      let payload = Base64URL.decode(parts[0]), let mac = Base64URL.decode(parts[1]),
      HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: payload, using: self.key)
    else { return nil }
    let fields = String(decoding: payload, as: UTF8.self).split(separator: "|", omittingEmptySubsequences: false)
    guard fields.count == 5, fields[0] == "v1", fields[1] == merchant.rawValue, fields[2] == Hex.encode(filter),
      let micros = Int64(fields[3])
    else { return nil }
    return PageCursor(createTimeMicroseconds: micros, id: String(fields[4]))
  }

  /// A watch cursor: the position of the last event seen, signed like page tokens so it cannot be
  /// edited or used by another merchant.
  package func sealCursor(_ position: EventPosition, merchant: MerchantID) -> String {
    let payload = Array("w2|\(merchant.rawValue)|\(position.transaction)|\(position.id)".utf8)
    let mac = HMAC<SHA256>.authenticationCode(for: payload, using: self.key)
    return Base64URL.encode(payload) + "." + Base64URL.encode(Array(mac))
  }

  package func openCursor(_ cursor: String, merchant: MerchantID) -> EventPosition? {
    let parts = cursor.split(separator: ".", omittingEmptySubsequences: false)
    guard cursor.utf8.count <= 512, parts.count == 2,
      let payload = Base64URL.decode(parts[0]), let mac = Base64URL.decode(parts[1]),
      HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: payload, using: self.key)
    else { return nil }
    let fields = String(decoding: payload, as: UTF8.self).split(separator: "|", omittingEmptySubsequences: false)
    guard fields.count == 4, fields[0] == "w2", fields[1] == merchant.rawValue,
      let transaction = Int64(fields[2]), let id = Int64(fields[3]), transaction >= 0, id >= 0
    else { return nil }
    return EventPosition(transaction: transaction, id: id)
  }
}
