public import Crypto
public import Foundation
import TenderCore

/// Why a webhook's signature was refused. Stable names: they label the refusal metric.
public enum WebhookRefusal: String, Error, Sendable, Hashable, CaseIterable {
  /// No signature header (or, for Standard Webhooks, no id or timestamp header).
  case signatureMissing = "signature_missing"
  /// The header cannot be read.
  case signatureMalformed = "signature_malformed"
  /// The signed timestamp is too old or too far in the future.
  case timestampOutOfTolerance = "timestamp_out_of_tolerance"
  /// No signature of a supported scheme in the header.
  case noSupportedSignature = "no_supported_signature"
  /// No signature matches any configured secret.
  case signatureMismatch = "signature_mismatch"
}

/// A webhook signing secret. Its description never shows the key.
public struct WebhookSecret: Sendable, CustomStringConvertible {
  let key: SymmetricKey

  public init(key: [UInt8]) {
    self.key = SymmetricKey(data: key)
  }

  /// A Stripe endpoint secret (`whsec_…`): the whole string is the HMAC key.
  public static func stripe(_ text: String) -> WebhookSecret {
    WebhookSecret(key: Array(text.utf8))
  }

  /// A Standard Webhooks secret: `whsec_` and the base64 of the key.
  public static func standard(_ text: String) -> WebhookSecret? {
    let encoded = text.hasPrefix("whsec_") ? String(text.dropFirst(6)) : text
    guard let key = Data(base64Encoded: encoded), !key.isEmpty else { return nil }
    return WebhookSecret(key: Array(key))
  }

  public var description: String { "WebhookSecret(…)" }
}

/// Verification of providers' webhook signatures, on the raw body bytes, before anything parses
/// them. Several secrets may be configured at once (rotation); any one matching is enough.
public enum WebhookSignatures {
  /// Stripe's `Stripe-Signature: t=TIMESTAMP,v1=HEX[,v1=HEX…]` — HMAC-SHA256 over
  /// `"{t}.{body}"`, hex. Other schemes (v0) are ignored; at least one v1 must match.
  public static func verifyStripe(
    header: String?,
    body: some Collection<UInt8>,
    secrets: [WebhookSecret],
    tolerance: Duration,
    now: Date = Date()
  ) -> Result<Date, WebhookRefusal> {
    guard let header, !header.isEmpty else { return .failure(.signatureMissing) }
    var timestamp: Int64?
    var signatures: [[UInt8]] = []
    for part in header.split(separator: ",") {
      let pair = part.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
      guard pair.count == 2 else { return .failure(.signatureMalformed) }
      let name = pair[0].trimmingCharacters(in: .whitespaces)
      let value = pair[1].trimmingCharacters(in: .whitespaces)
      switch name {
      case "t":
        guard let seconds = Int64(value) else { return .failure(.signatureMalformed) }
        timestamp = seconds
      case "v1":
        guard let bytes = Self.hex(value) else { return .failure(.signatureMalformed) }
        signatures.append(bytes)
      default:
        continue  // v0 and schemes to come
      }
    }
    guard let timestamp else { return .failure(.signatureMalformed) }
    guard !signatures.isEmpty else { return .failure(.noSupportedSignature) }
    guard let signed = Self.within(tolerance, timestamp: timestamp, now: now) else {
      return .failure(.timestampOutOfTolerance)
    }
    var content = Array(String(timestamp).utf8)
    content.append(UInt8(ascii: "."))
    content.append(contentsOf: body)
    return Self.anyMatches(signatures, content: content, secrets: secrets)
      ? .success(signed) : .failure(.signatureMismatch)
  }

  /// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,BASE64 …`
  /// (space-separated) — HMAC-SHA256 over `"{id}.{timestamp}.{body}"`, base64.
  public static func verifyStandard(
    id: String?,
    timestamp: String?,
    signatureHeader: String?,
    body: some Collection<UInt8>,
    secrets: [WebhookSecret],
    tolerance: Duration,
    now: Date = Date()
  ) -> Result<Date, WebhookRefusal> {
    guard let id, !id.isEmpty, let timestamp, let signatureHeader, !signatureHeader.isEmpty else {
      return .failure(.signatureMissing)
    }
    guard let seconds = Int64(timestamp) else { return .failure(.signatureMalformed) }
    var signatures: [[UInt8]] = []
    for entry in signatureHeader.split(separator: " ") {
      let pair = entry.split(separator: ",", maxSplits: 1, omittingEmptySubsequences: false)
      guard pair.count == 2 else { return .failure(.signatureMalformed) }
      guard pair[0] == "v1" else { continue }
      guard let bytes = Data(base64Encoded: String(pair[1])) else { return .failure(.signatureMalformed) }
      signatures.append(Array(bytes))
    }
    guard !signatures.isEmpty else { return .failure(.noSupportedSignature) }
    guard let signed = Self.within(tolerance, timestamp: seconds, now: now) else {
      return .failure(.timestampOutOfTolerance)
    }
    var content = Array("\(id).\(timestamp).".utf8)
    content.append(contentsOf: body)
    return Self.anyMatches(signatures, content: content, secrets: secrets)
      ? .success(signed) : .failure(.signatureMismatch)
  }

  /// Stripe's header for `body`, as the provider simulator sends it.
  public static func stripeHeader(body: some Collection<UInt8>, secret: WebhookSecret, timestamp: Int64) -> String {
    var content = Array(String(timestamp).utf8)
    content.append(UInt8(ascii: "."))
    content.append(contentsOf: body)
    let mac = HMAC<SHA256>.authenticationCode(for: content, using: secret.key)
    return "t=\(timestamp),v1=" + Hex.encode(mac)
  }

  /// A Standard Webhooks `webhook-signature` value for `body`.
  public static func standardSignature(
    id: String, timestamp: Int64, body: some Collection<UInt8>, secret: WebhookSecret
  ) -> String {
    var content = Array("\(id).\(timestamp).".utf8)
    content.append(contentsOf: body)
    return "v1," + Data(HMAC<SHA256>.authenticationCode(for: content, using: secret.key)).base64EncodedString()
  }

  // MARK: Helpers

  /// The signed time, when it is within `tolerance` of `now` either way.
  static func within(_ tolerance: Duration, timestamp: Int64, now: Date) -> Date? {
    let limit = Double(tolerance.components.seconds) + Double(tolerance.components.attoseconds) / 1e18
    let signed = Date(timeIntervalSince1970: TimeInterval(timestamp))
    return abs(now.timeIntervalSince(signed)) <= limit ? signed : nil
  }

  /// Whether any signature is a valid HMAC of `content` under any secret; each comparison is
  /// constant-time.
  static func anyMatches(_ signatures: [[UInt8]], content: [UInt8], secrets: [WebhookSecret]) -> Bool {
    var matched = false
    for secret in secrets {
      for signature in signatures
      where HMAC<SHA256>.isValidAuthenticationCode(signature, authenticating: content, using: secret.key) {
        matched = true
      }
    }
    return matched
  }

  static func hex(_ text: String) -> [UInt8]? {
    let digits = Array(text.utf8)
    guard digits.count % 2 == 0, !digits.isEmpty else { return nil }
    func nibble(_ byte: UInt8) -> UInt8? {
      switch byte {
      case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
      case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
      case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
      default: return nil
      }
    }
    var bytes: [UInt8] = []
    bytes.reserveCapacity(digits.count / 2)
    var index = 0
    while index < digits.count {
      guard let high = nibble(digits[index]), let low = nibble(digits[index + 1]) else { return nil }
      bytes.append(high << 4 | low)
      index += 2
    }
    return bytes
  }
}
