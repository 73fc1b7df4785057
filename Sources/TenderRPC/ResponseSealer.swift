public import Crypto
import Foundation
import TenderCore

/// Seals stored answers that hold a secret (a new client secret) with AES-256-GCM, bound to the
/// merchant and the idempotency key as associated data: the database keeps only ciphertext, and a
/// sealed answer cannot be replayed under another key. Refusals carry no secret and stay as they
/// are.
struct ResponseSealer: Sendable {
  let key: SymmetricKey

  func seal(_ response: StoredResponse, merchant: MerchantID, key idempotencyKey: String) throws -> StoredResponse {
    guard response.code == 0 else { return response }
    let box = try AES.GCM.seal(
      response.message, using: self.key, authenticating: Self.associatedData(merchant, idempotencyKey))
    guard let combined = box.combined else { throw SealingError() }
    return StoredResponse(code: 0, message: Array(combined), details: response.details)
  }

  func open(_ stored: StoredResponse, merchant: MerchantID, key idempotencyKey: String) throws -> StoredResponse {
    guard stored.code == 0 else { return stored }
    let box = try AES.GCM.SealedBox(combined: stored.message)
    let message = try AES.GCM.open(box, using: self.key, authenticating: Self.associatedData(merchant, idempotencyKey))
    return StoredResponse(code: 0, message: Array(message), details: stored.details)
  }

  static func associatedData(_ merchant: MerchantID, _ key: String) -> [UInt8] {
    Array("tender idempotent response\u{0}\(merchant.rawValue)\u{0}\(key)".utf8)
  }

  struct SealingError: Error {}
}
