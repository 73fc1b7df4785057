import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Synchronization
import TenderBridge
import TenderCore
import Testing

/// The bridge's routes through Hummingbird's router test framework: no socket, no TLS (BridgeTests
/// and WebhookTests cover those against a running server).
@Suite("HTTP bridge routes")
struct BridgeRouterTests {
  final class Serving: ServingState {
    let state = Atomic<Bool>(true)
    var isServing: Bool { self.state.load(ordering: .relaxed) }
  }

  /// What the webhook endpoint stored.
  final class Inbox: Sendable {
    let events = Mutex<[WebhookEvent]>([])
    let counts = Mutex<[String]>([])
  }

  static let secret = "whsec_router_test"

  static func app(
    serving: Serving = Serving(),
    inbox: Inbox = Inbox(),
    jwks: @escaping @Sendable () async throws -> String = { #"{"keys":[]}"# },
    metricsToken: Secret<String>? = nil,
    maxBodyBytes: Int = 4096
  ) throws -> some ApplicationProtocol {
    let endpoint = WebhookEndpoint(
      providers: [
        "stripe": .init(scheme: .stripe, secrets: [.stripe(Self.secret)]),
        "acme": .init(
          scheme: .standard, secrets: [.standard("whsec_" + Data(repeating: 9, count: 24).base64EncodedString())!]),
      ],
      tolerance: .seconds(300),
      maxBodyBytes: maxBodyBytes,
      receive: { event in
        inbox.events.withLock { events in
          let duplicate = events.contains { $0.provider == event.provider && $0.eventID == event.eventID }
          if !duplicate { events.append(event) }
          return !duplicate
        }
      },
      count: { provider, what, reason in
        inbox.counts.withLock { $0.append([provider, what, reason].compactMap { $0 }.joined(separator: " ")) }
      }
    )
    return try Bridge.application(
      configuration: .init(host: "127.0.0.1", port: 0, tls: nil),
      readiness: serving,
      metrics: { "tender_up 1\n" },
      metricsToken: metricsToken,
      jwks: jwks,
      webhooks: endpoint,
      logger: Logger(label: "tender.test.bridge")
    )
  }

  static func stripeHeaders(_ body: [UInt8], secret: String = Self.secret, at time: Date = Date()) -> HTTPFields {
    var headers = HTTPFields()
    headers[HTTPField.Name("Stripe-Signature")!] = WebhookSignatures.stripeHeader(
      body: body, secret: .stripe(secret), timestamp: Int64(time.timeIntervalSince1970))
    headers[.contentType] = "application/json"
    return headers
  }

  static let event = Array(#"{"id":"evt_1","type":"payment_intent.succeeded","data":{"object":{"id":"pi_1"}}}"#.utf8)

  @Test("/healthz is always ok; /readyz follows readiness")
  func health() async throws {
    let serving = Serving()
    try await Self.app(serving: serving).test(.router) { client in
      try await client.execute(uri: "/healthz", method: .get) { #expect($0.status == .ok) }
      try await client.execute(uri: "/readyz", method: .get) { #expect($0.status == .ok) }
      serving.state.store(false, ordering: .relaxed)
      try await client.execute(uri: "/readyz", method: .get) { response in
        #expect(response.status == .serviceUnavailable)
        #expect(String(buffer: response.body) == "not ready\n")
      }
      try await client.execute(uri: "/healthz", method: .get) { #expect($0.status == .ok) }
    }
  }

  @Test("/metrics is Prometheus text; the JWKS is a cached key set, or 503 when keys cannot be loaded")
  func metricsAndKeys() async throws {
    try await Self.app().test(.router) { client in
      try await client.execute(uri: "/metrics", method: .get) { response in
        #expect(response.headers[.contentType] == "text/plain; version=0.0.4; charset=utf-8")
        #expect(String(buffer: response.body) == "tender_up 1\n")
      }
      try await client.execute(uri: "/.well-known/jwks.json", method: .get) { response in
        #expect(response.status == .ok)
        #expect(response.headers[.contentType] == "application/jwk-set+json")
        #expect(response.headers[.cacheControl] == "public, max-age=60")
      }
    }
    struct Unavailable: Error {}
    try await Self.app(jwks: { throw Unavailable() }).test(.router) { client in
      try await client.execute(uri: "/.well-known/jwks.json", method: .get) {
        #expect($0.status == .serviceUnavailable)
      }
    }
  }

  @Test("With a metrics token, /metrics answers only requests bearing it (401 otherwise); health stays open")
  func metricsToken() async throws {
    let token = "mtk_0123456789abcdef0123456789abcdef"
    try await Self.app(metricsToken: Secret(token)).test(.router) { client in
      for header in [nil, "Bearer wrong", "Bearer " + token + "x", "Basic " + token, token] {
        var headers = HTTPFields()
        if let header { headers[.authorization] = header }
        try await client.execute(uri: "/metrics", method: .get, headers: headers) { response in
          #expect(response.status == .unauthorized, "\(header ?? "no header")")
          #expect(response.headers[.wwwAuthenticate] == "Bearer realm=\"tender-metrics\"")
          #expect(!String(buffer: response.body).contains("tender_up"))
        }
      }
      try await client.execute(uri: "/metrics", method: .get, headers: [.authorization: "Bearer " + token]) {
        #expect($0.status == .ok && String(buffer: $0.body) == "tender_up 1\n")
      }
      try await client.execute(uri: "/readyz", method: .get) { #expect($0.status == .ok) }
    }
  }

  @Test("A signed webhook is stored once and acknowledged; its duplicate is acknowledged and stores nothing")
  func webhookStoredOnce() async throws {
    let inbox = Inbox()
    try await Self.app(inbox: inbox).test(.router) { client in
      for _ in 0..<2 {
        try await client.execute(
          uri: "/webhooks/stripe", method: .post, headers: Self.stripeHeaders(Self.event),
          body: ByteBuffer(bytes: Self.event)
        ) { response in
          #expect(response.status == .ok)
          #expect(String(buffer: response.body) == #"{"received":true}"#)
        }
      }
    }
    let events = inbox.events.withLock { $0 }
    #expect(events.map(\.eventID) == ["evt_1"])
    #expect(events.first?.type == "payment_intent.succeeded")
    #expect(events.first?.body == Self.event)
    #expect(
      inbox.counts.withLock { $0 } == ["stripe received", "stripe verified", "stripe received", "stripe verified"])
  }

  @Test(
    "Refusals: unknown provider 404, bad or missing signature 401, stale 401, too large 413, malformed 400; none is stored"
  )
  func webhookRefusals() async throws {
    let inbox = Inbox()
    let big = Array(repeating: UInt8(ascii: " "), count: 5000)
    let notJSON = Array("not json".utf8)
    try await Self.app(inbox: inbox).test(.router) { client in
      let cases: [(String, HTTPFields, [UInt8], HTTPResponse.Status, String)] = [
        ("/webhooks/nosuch", Self.stripeHeaders(Self.event), Self.event, .notFound, ""),
        (
          "/webhooks/stripe", Self.stripeHeaders(Self.event, secret: "whsec_other"), Self.event, .unauthorized,
          "signature_mismatch"
        ),
        ("/webhooks/stripe", [.contentType: "application/json"], Self.event, .unauthorized, "signature_missing"),
        (
          "/webhooks/stripe", Self.stripeHeaders(Self.event, at: Date().addingTimeInterval(-301)), Self.event,
          .unauthorized, "timestamp_out_of_tolerance"
        ),
        ("/webhooks/stripe", Self.stripeHeaders(big), big, .contentTooLarge, "too_large"),
        ("/webhooks/stripe", Self.stripeHeaders(notJSON), notJSON, .badRequest, "malformed"),
        ("/webhooks/acme", Self.stripeHeaders(Self.event), Self.event, .unauthorized, "signature_missing"),
      ]
      for (uri, headers, body, status, reason) in cases {
        try await client.execute(uri: uri, method: .post, headers: headers, body: ByteBuffer(bytes: body)) { response in
          #expect(response.status == status, "\(uri) \(reason)")
          if !reason.isEmpty { #expect(String(buffer: response.body) == "{\"error\":\"\(reason)\"}", "\(uri)") }
        }
      }
    }
    #expect(inbox.events.withLock { $0 }.isEmpty)
  }
}
