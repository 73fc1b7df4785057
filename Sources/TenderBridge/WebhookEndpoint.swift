import Foundation
public import Hummingbird
import HTTPTypes
public import Logging
import NIOCore
public import TenderCore

/// `POST /webhooks/{provider}`: a provider's callback, verified on the raw bytes (size first,
/// then the signature, only then JSON), stored once in the inbox and acknowledged with 2xx only
/// after that commit; a duplicate is acknowledged and changes nothing. Refusals change nothing:
/// 400 (malformed), 401 (signature), 404 (no such provider), 413 (too large).
public struct WebhookEndpoint: Sendable {
  public enum Scheme: Sendable {
    /// `Stripe-Signature: t=…,v1=…`.
    case stripe
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    case standard
  }

  public struct Provider: Sendable {
    public let scheme: Scheme
    /// Every secret that may have signed (several during a rotation).
    public let secrets: [WebhookSecret]

    public init(scheme: Scheme, secrets: [WebhookSecret]) {
      self.scheme = scheme
      self.secrets = secrets
    }
  }

  public var providers: [String: Provider]
  public var tolerance: Duration
  public var maxBodyBytes: Int
  /// Stores a verified event; false for a duplicate.
  public var receive: @Sendable (WebhookEvent) async throws -> Bool
  /// Counts what came in: `received` for every call, `verified`, or `refused` with its reason.
  public var count: @Sendable (_ provider: String, _ what: String, _ reason: String?) -> Void

  public init(
    providers: [String: Provider],
    tolerance: Duration,
    maxBodyBytes: Int,
    receive: @escaping @Sendable (WebhookEvent) async throws -> Bool,
    count: @escaping @Sendable (_ provider: String, _ what: String, _ reason: String?) -> Void = { _, _, _ in }
  ) {
    self.providers = providers
    self.tolerance = tolerance
    self.maxBodyBytes = maxBodyBytes
    self.receive = receive
    self.count = count
  }

  static let stripeSignature = HTTPField.Name("Stripe-Signature")!
  static let webhookID = HTTPField.Name("webhook-id")!
  static let webhookTimestamp = HTTPField.Name("webhook-timestamp")!
  static let webhookSignature = HTTPField.Name("webhook-signature")!

  /// Adds the route to `router`.
  func register(on router: Router<BasicRequestContext>, logger: Logger) {
    let endpoint = self
    router.post("/webhooks/:provider") { request, context -> Response in
      let name = try context.parameters.require("provider")
      guard let provider = endpoint.providers[name] else {
        return Self.answer(.notFound, "no webhook provider \(name.prefix(40)) is configured")
      }
      endpoint.count(name, "received", nil)
      func refuse(_ status: HTTPResponse.Status, _ reason: String) -> Response {
        endpoint.count(name, "refused", reason)
        logger.warning("webhook refused", metadata: ["provider": "\(name)", "reason": "\(reason)"])
        return Self.answer(status, reason)
      }
      // The size first: nothing is hashed or parsed beyond the limit.
      if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > endpoint.maxBodyBytes {
        return refuse(.contentTooLarge, "too_large")
      }
      let buffer: ByteBuffer
      do {
        buffer = try await request.body.collect(upTo: endpoint.maxBodyBytes)
      } catch {
        return refuse(.contentTooLarge, "too_large")
      }
      let body = Array(buffer.readableBytesView)
      let verified: Result<Date, WebhookRefusal>
      let headerID: String?
      switch provider.scheme {
      case .stripe:
        headerID = nil
        verified = WebhookSignatures.verifyStripe(
          header: request.headers[Self.stripeSignature], body: body, secrets: provider.secrets,
          tolerance: endpoint.tolerance
        )
      case .standard:
        headerID = request.headers[Self.webhookID]
        verified = WebhookSignatures.verifyStandard(
          id: headerID, timestamp: request.headers[Self.webhookTimestamp],
          signatureHeader: request.headers[Self.webhookSignature],
          body: body, secrets: provider.secrets, tolerance: endpoint.tolerance
        )
      }
      let signedTime: Date
      switch verified {
      case .failure(let refusal): return refuse(.unauthorized, refusal.rawValue)
      case .success(let time): signedTime = time
      }
      // Verified: now the JSON, for the event's id and type only.
      guard let object = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any],
        let type = object["type"] as? String, !type.isEmpty, type.utf8.count <= 255,
        let id = headerID ?? (object["id"] as? String), !id.isEmpty, id.utf8.count <= 255
      else {
        return refuse(.badRequest, "malformed")
      }
      endpoint.count(name, "verified", nil)
      let stored = try await endpoint.receive(
        WebhookEvent(provider: name, eventID: id, type: type, body: body, signedTime: signedTime))
      logger.info(
        "webhook received",
        metadata: ["provider": "\(name)", "event_id": "\(id)", "type": "\(type)", "duplicate": "\(!stored)"])
      return Response(
        status: .ok, headers: [.contentType: "application/json"],
        body: .init(byteBuffer: ByteBuffer(string: #"{"received":true}"#)))
    }
  }

  static func answer(_ status: HTTPResponse.Status, _ reason: String) -> Response {
    Response(
      status: status, headers: [.contentType: "application/json"],
      body: .init(byteBuffer: ByteBuffer(string: "{\"error\":\"\(reason)\"}"))
    )
  }
}
