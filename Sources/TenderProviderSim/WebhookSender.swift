import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOSSL
import Synchronization
import TenderBridge

/// How the simulator sends its webhooks, changeable while it runs (`POST /_sim/webhooks`).
public struct WebhookDelivery: Codable, Sendable, Hashable {
  /// Off: nothing is sent (the reconciler must settle on its own).
  public var enabled: Bool = true
  /// Each event is sent twice.
  public var duplicate: Bool = false
  /// Events are held and sent in pairs, the later one first.
  public var outOfOrder: Bool = false
  /// Each event waits this long before it is sent.
  public var delaySeconds: Double = 0
  /// Signed with a wrong secret.
  public var forged: Bool = false

  public init(
    enabled: Bool = true, duplicate: Bool = false, outOfOrder: Bool = false, delaySeconds: Double = 0,
    forged: Bool = false
  ) {
    self.enabled = enabled
    self.duplicate = duplicate
    self.outOfOrder = outOfOrder
    self.delaySeconds = delaySeconds
    self.forged = forged
  }
}

/// Sends Stripe-signed events (`Stripe-Signature: t=…,v1=…`) to the configured endpoint, retrying
/// with exponential backoff on anything but 2xx, as Stripe does.
final class WebhookSender: Sendable {
  struct Target: Sendable {
    let url: String
    let secret: [UInt8]
    let trustRoots: [UInt8]?
  }

  private let endpoint = Mutex<(target: Target, client: HTTPClient)?>(nil)
  private let logger: Logger
  private let delivery = Mutex(WebhookDelivery())
  private let held = Mutex<(id: String, body: [UInt8])?>(nil)
  private let counter = Atomic<Int>(0)
  private let inFlight = Atomic<Int>(0)

  init(target: Target?, logger: Logger) {
    self.logger = logger
    if let target { self.point(to: target) }
  }

  /// Sends events to `target` from now on.
  func point(to target: Target) {
    var configuration = HTTPClient.Configuration()
    if let roots = target.trustRoots, let certificates = try? NIOSSLCertificate.fromPEMBytes(roots) {
      var tls = TLSConfiguration.makeClientConfiguration()
      tls.trustRoots = .certificates(certificates)
      configuration.tlsConfiguration = tls
    }
    configuration.timeout = .init(connect: .seconds(2), read: .seconds(10))
    let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    let previous = self.endpoint.withLock { endpoint in
      defer { endpoint = (target, client) }
      return endpoint?.client
    }
    if let previous { Task { try? await previous.shutdown() } }
  }

  var configuration: WebhookDelivery {
    get { self.delivery.withLock { $0 } }
    set { self.delivery.withLock { $0 = newValue } }
  }

  /// Events accepted for delivery and not yet delivered or given up.
  var pending: Int { self.inFlight.load(ordering: .relaxed) }

  /// Sends an event of `type` about `object` (in the background, with retries).
  func send(type: String, object: [String: Any]) {
    guard let (target, client) = self.endpoint.withLock({ $0 }) else { return }
    let settings = self.configuration
    guard settings.enabled else { return }
    let id = "evt_sim" + String(format: "%08d", self.counter.add(1, ordering: .relaxed).newValue)
    let body = SimulatedAPI.encode([
      "id": id, "object": "event", "type": type, "created": Int64(Date().timeIntervalSince1970),
      "api_version": "2024-06-20",
      "data": ["object": object],
    ])
    var batch = [(id, Array(body))]
    if settings.outOfOrder {
      // The first of a pair waits for the second, which then goes first.
      let earlier = self.held.withLock { held -> (String, [UInt8])? in
        defer { held = held == nil ? (id, Array(body)) : nil }
        return held.map { ($0.id, $0.body) }
      }
      guard let earlier else { return }
      batch = [(id, Array(body)), earlier]
    }
    if settings.duplicate { batch = batch.flatMap { [$0, $0] } }
    self.inFlight.add(batch.count, ordering: .relaxed)
    let logger = self.logger
    let secret = settings.forged ? Array("whsec_forged".utf8) : target.secret
    Task {
      if settings.delaySeconds > 0 { try? await Task.sleep(for: .milliseconds(Int64(settings.delaySeconds * 1000))) }
      for (eventID, bytes) in batch {
        await Self.deliver(eventID, bytes, to: target.url, secret: secret, client: client, logger: logger)
        self.inFlight.subtract(1, ordering: .relaxed)
      }
    }
  }

  /// Up to 8 attempts, waiting 200 ms, 400 ms, … between them.
  static func deliver(
    _ id: String, _ body: [UInt8], to url: String, secret: [UInt8], client: HTTPClient, logger: Logger
  ) async {
    var wait = Duration.milliseconds(200)
    for attempt in 1...8 {
      var request = HTTPClientRequest(url: url)
      request.method = .POST
      request.headers.add(name: "Content-Type", value: "application/json")
      request.headers.add(
        name: "Stripe-Signature",
        value: Self.signature(body: body, secret: secret, timestamp: Int64(Date().timeIntervalSince1970)))
      request.body = .bytes(ByteBuffer(bytes: body))
      do {
        let response = try await client.execute(request, timeout: .seconds(10))
        _ = try await response.body.collect(upTo: 1 << 16)
        if (200..<300).contains(Int(response.status.code)) { return }
        logger.notice(
          "webhook not accepted; retrying",
          metadata: ["event_id": "\(id)", "status": "\(response.status.code)", "attempt": "\(attempt)"])
      } catch {
        logger.notice("webhook not delivered; retrying", metadata: ["event_id": "\(id)", "attempt": "\(attempt)"])
      }
      try? await Task.sleep(for: wait)
      wait *= 2
    }
    logger.warning("webhook given up", metadata: ["event_id": "\(id)"])
  }

  /// Stripe's scheme: HMAC-SHA256 of `"{t}.{body}"`, hex.
  static func signature(body: [UInt8], secret: [UInt8], timestamp: Int64) -> String {
    WebhookSignatures.stripeHeader(body: body, secret: WebhookSecret(key: secret), timestamp: timestamp)
  }

  func shutdown() async {
    let client = self.endpoint.withLock { endpoint in
      defer { endpoint = nil }
      return endpoint?.client
    }
    try? await client?.shutdown()
  }
}
