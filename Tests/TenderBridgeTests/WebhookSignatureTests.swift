import Foundation
import TenderBridge
import Testing

@Suite("Webhook signatures, verified on the raw bytes")
struct WebhookSignatureTests {
  // The Standard Webhooks specification's published example.
  static let vectorSecret = WebhookSecret.standard("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")!
  static let vectorID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
  static let vectorTimestamp = "1614265330"
  static let vectorBody = Array(#"{"test": 2432232314}"#.utf8)
  static let vectorSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
  static let vectorTime = Date(timeIntervalSince1970: 1_614_265_330)

  static func standard(
    id: String? = vectorID, timestamp: String? = vectorTimestamp, signature: String? = vectorSignature,
    body: [UInt8] = vectorBody,
    secrets: [WebhookSecret] = [vectorSecret], now: Date = vectorTime
  ) -> Result<Date, WebhookRefusal> {
    WebhookSignatures.verifyStandard(
      id: id, timestamp: timestamp, signatureHeader: signature, body: body, secrets: secrets, tolerance: .seconds(300),
      now: now)
  }

  @Test(
    "The Standard Webhooks test vector verifies at its timestamp; a changed byte, another secret or a missing header is refused"
  )
  func standardVector() {
    #expect(Self.standard() == .success(Self.vectorTime))
    var changed = Self.vectorBody
    changed[changed.count - 2] ^= 0x01
    #expect(Self.standard(body: changed) == .failure(.signatureMismatch))
    #expect(
      Self.standard(secrets: [WebhookSecret.standard("whsec_" + Data(repeating: 7, count: 24).base64EncodedString())!])
        == .failure(.signatureMismatch))
    #expect(Self.standard(signature: nil) == .failure(.signatureMissing))
    #expect(Self.standard(id: nil) == .failure(.signatureMissing))
    #expect(Self.standard(timestamp: nil) == .failure(.signatureMissing))
    // Tender's own signer gives the published signature.
    #expect(
      WebhookSignatures.standardSignature(
        id: Self.vectorID, timestamp: 1_614_265_330, body: Self.vectorBody, secret: Self.vectorSecret)
        == Self.vectorSignature)
  }

  @Test("Timestamps: 299 s either way accepted, 301 s too old or too far in the future refused")
  func tolerance() {
    let signed = Self.vectorTime
    #expect(Self.standard(now: signed.addingTimeInterval(299)) == .success(signed))
    #expect(Self.standard(now: signed.addingTimeInterval(-299)) == .success(signed))
    #expect(Self.standard(now: signed.addingTimeInterval(301)) == .failure(.timestampOutOfTolerance))
    #expect(Self.standard(now: signed.addingTimeInterval(-301)) == .failure(.timestampOutOfTolerance))
  }

  @Test("Rotation: several signatures and several secrets, any match is enough; only unknown schemes is refused")
  func rotation() {
    let old = WebhookSecret.standard("whsec_" + Data(repeating: 1, count: 32).base64EncodedString())!
    let new = Self.vectorSecret
    let oldSignature = WebhookSignatures.standardSignature(
      id: Self.vectorID, timestamp: 1_614_265_330, body: Self.vectorBody, secret: old)
    #expect(
      Self.standard(signature: "\(oldSignature) \(Self.vectorSignature)", secrets: [new]) == .success(Self.vectorTime))
    #expect(Self.standard(signature: oldSignature, secrets: [new, old]) == .success(Self.vectorTime))
    #expect(Self.standard(signature: "v2,abc v1a,xyz", secrets: [new]) == .failure(.noSupportedSignature))
    #expect(Self.standard(signature: "v1,not base64!", secrets: [new]) == .failure(.signatureMalformed))
  }

  static let stripeSecret = WebhookSecret.stripe("whsec_test_tender")

  static func stripe(
    _ header: String?, body: [UInt8], secrets: [WebhookSecret] = [stripeSecret], now: Date
  ) -> Result<Date, WebhookRefusal> {
    WebhookSignatures.verifyStripe(header: header, body: body, secrets: secrets, tolerance: .seconds(300), now: now)
  }

  @Test(
    "Stripe-Signature: several v1 entries, v0 and unknown schemes ignored, the timestamp bound both ways, re-serialized JSON refused"
  )
  func stripe() {
    let body = Array(#"{"id":"evt_1","type":"payment_intent.succeeded","data":{"object":{"id":"pi_1"}}}"#.utf8)
    let now = Date(timeIntervalSince1970: 1_700_000_000)
    let header = WebhookSignatures.stripeHeader(body: body, secret: Self.stripeSecret, timestamp: 1_700_000_000)
    #expect(Self.stripe(header, body: body, now: now) == .success(now))
    let v1 = header.split(separator: ",")[1]
    #expect(
      Self.stripe("t=1700000000,v1=\(String(repeating: "0", count: 64)),\(v1),v0=deadbeef,v9=x", body: body, now: now)
        == .success(now))
    #expect(Self.stripe("t=1700000000,v0=deadbeef", body: body, now: now) == .failure(.noSupportedSignature))
    #expect(Self.stripe(header, body: body, now: now.addingTimeInterval(301)) == .failure(.timestampOutOfTolerance))
    #expect(Self.stripe(header, body: body, now: now.addingTimeInterval(-301)) == .failure(.timestampOutOfTolerance))
    #expect(Self.stripe(header, body: body, now: now.addingTimeInterval(299)) == .success(now))
    // The same JSON written again with other spacing is other bytes.
    let reserialized = Array(
      #"{"id": "evt_1", "type": "payment_intent.succeeded", "data": {"object": {"id": "pi_1"}}}"#.utf8)
    #expect(Self.stripe(header, body: reserialized, now: now) == .failure(.signatureMismatch))
    #expect(
      Self.stripe(header, body: body, secrets: [WebhookSecret.stripe("whsec_other")], now: now)
        == .failure(.signatureMismatch))
    #expect(
      Self.stripe(header, body: body, secrets: [WebhookSecret.stripe("whsec_other"), Self.stripeSecret], now: now)
        == .success(now))
    #expect(Self.stripe(nil, body: body, now: now) == .failure(.signatureMissing))
    #expect(Self.stripe("v1=abc", body: body, now: now) == .failure(.signatureMalformed))
    #expect(Self.stripe("t=now,v1=00", body: body, now: now) == .failure(.signatureMalformed))
  }
}
