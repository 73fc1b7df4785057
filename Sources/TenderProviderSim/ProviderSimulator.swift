public import Foundation
public import Hummingbird
public import Logging
import NIOCore
public import ServiceLifecycle
import Synchronization

/// An HTTP server speaking the subset of Stripe's API that Tender's connector uses — create,
/// capture, cancel and read PaymentIntents, create refunds; form-encoded bodies; bearer API key;
/// `Idempotency-Key` honoured like Stripe — with deterministic test payment methods:
///
/// - `pm_card_visa`: authorized (manual capture) or captured (automatic)
/// - `pm_card_chargeDeclined`: declined, `card_declined`
/// - `pm_card_chargeDeclinedInsufficientFunds`: declined, `insufficient_funds`
/// - `pm_card_chargeDeclinedExpiredCard`: declined, `expired_card`
/// - `pm_card_async`: `processing`, finished `asyncDelay` later (read it back to see)
/// - `pm_card_asyncStuck`: `processing` for good
/// - `pm_card_authenticationRequired`: `requires_action` (3-D Secure), which Tender cannot complete
/// - `pm_card_slow`: answers after `slowDelay` (timeouts)
/// - `pm_card_flaky`: the first attempt of each idempotency key gets a 500, retries succeed
/// - `pm_card_refundFail`: authorized like `pm_card_visa`; its refunds fail (`expired_or_canceled_card`)
/// - `pm_card_refundSlow`: authorized like `pm_card_visa`; its refunds answer after `slowDelay`
/// - `pm_card_refundPending`: authorized like `pm_card_visa`; its refunds are `pending`, then succeed `asyncDelay` later
///
/// `GET /_sim/requests` lists every request received, so tests can count provider calls.
///
/// Faults, switched per request kind and payment method (`POST /_sim/faults` with a
/// `SimulatedFault` as JSON, `DELETE /_sim/faults` to clear them, or `inject(_:)` in process):
/// accept-then-drop (the work is done and kept under the idempotency key, the connection dies
/// before the answer), an answer such as 429 with Retry-After or 5xx (N times, nothing done), a
/// stall before the work; and `POST /_sim/refuse?seconds=N` (or `refuseConnections(for:)`):
/// connections are refused for N seconds, then accepted again on the same port.
public struct ProviderSimulator: Service {
  public struct Configuration: Sendable {
    public var host: String
    public var port: Int
    public var apiKey: String
    public var slowDelay: Duration
    /// How long `pm_card_async` payments and `pm_card_refundPending` refunds take to finish.
    public var asyncDelay: Duration
    /// Where Stripe-signed events go (Tender's `POST /webhooks/stripe`); nil: none are sent.
    public var webhookURL: String?
    /// The endpoint's signing secret.
    public var webhookSecret: String
    /// PEM certificates to trust for an https webhook URL (a dev CA).
    public var webhookTrustRoots: [UInt8]?

    public init(
      host: String = "127.0.0.1", port: Int = 0, apiKey: String = "sk_test_tender", slowDelay: Duration = .seconds(30),
      asyncDelay: Duration = .seconds(2),
      webhookURL: String? = nil, webhookSecret: String = "whsec_tender_simulator", webhookTrustRoots: [UInt8]? = nil
    ) {
      self.host = host
      self.port = port
      self.apiKey = apiKey
      self.slowDelay = slowDelay
      self.asyncDelay = asyncDelay
      self.webhookURL = webhookURL
      self.webhookSecret = webhookSecret
      self.webhookTrustRoots = webhookTrustRoots
    }
  }

  private let configuration: Configuration
  private let logger: Logger
  private let onListening: @Sendable (Int) async -> Void
  let state = SimulatorState()
  private let gate = GateBox()
  private let webhooks: WebhookSender

  public init(
    configuration: Configuration, logger: Logger, onListening: @escaping @Sendable (Int) async -> Void = { _ in }
  ) {
    self.configuration = configuration
    self.logger = logger
    self.onListening = onListening
    self.webhooks = WebhookSender(
      target: configuration.webhookURL.map {
        WebhookSender.Target(
          url: $0, secret: Array(configuration.webhookSecret.utf8), trustRoots: configuration.webhookTrustRoots)
      },
      logger: logger
    )
  }

  /// The `Stripe-Signature` header the simulator sends for `body`.
  public static func stripeSignature(body: [UInt8], secret: String, timestamp: Int64) -> String {
    WebhookSender.signature(body: body, secret: Array(secret.utf8), timestamp: timestamp)
  }

  /// Sends Stripe-signed events to `url` from now on (e.g. once Tender's bridge listens).
  public func sendWebhooks(to url: String, secret: String, trustRoots: [UInt8]?) {
    self.webhooks.point(to: WebhookSender.Target(url: url, secret: Array(secret.utf8), trustRoots: trustRoots))
  }

  /// How webhooks are sent from now on (duplicates, out of order, delays, forged, or none).
  public func deliverWebhooks(_ delivery: WebhookDelivery) {
    self.webhooks.configuration = delivery
  }

  /// Webhooks accepted for delivery and not yet delivered or given up.
  public var webhooksPending: Int { self.webhooks.pending }

  /// Every request received so far.
  public func requests() async -> [LoggedRequest] {
    await self.state.log
  }

  /// Arms `fault` for the next matching requests.
  public func inject(_ fault: SimulatedFault) async {
    await self.state.inject(fault)
  }

  public func clearFaults() async {
    await self.state.clearFaults()
  }

  /// How many requests a `stall` fault holds right now (the request has reached the provider and
  /// claimed its idempotency key).
  public func stalledRequests() async -> Int {
    await self.state.stalled
  }

  /// Ends every stall now: the held requests are performed and answered.
  public func releaseStalls() async {
    await self.state.releaseStalls()
  }

  /// A payment intent as the provider has it.
  public struct IntentView: Sendable, Hashable {
    public let id: String
    public let tenderPaymentID: String?
    public let status: String
    public let amountCapturable: Int64
    public let amountReceived: Int64
  }

  /// A refund as the provider has it.
  public struct RefundView: Sendable, Hashable {
    public let id: String
    public let paymentIntent: String
    public let amount: Int64
    public let status: String
  }

  /// Everything the provider has done: its intents and refunds.
  public func books() async -> (intents: [IntentView], refunds: [RefundView]) {
    let (intents, refunds) = await self.state.books()
    return (
      intents.map {
        IntentView(
          id: $0.id, tenderPaymentID: $0.metadata["tender_payment_id"], status: $0.status,
          amountCapturable: $0.amountCapturable, amountReceived: $0.amountReceived)
      },
      refunds.map { RefundView(id: $0.id, paymentIntent: $0.paymentIntent, amount: $0.amount, status: $0.status) }
    )
  }

  /// Whether the simulator accepts connections (not in a refusal).
  public var acceptsConnections: Bool {
    self.gate.withLock { $0 }?.isOpen ?? false
  }

  /// Refuses connections for `duration` (open ones are cut), then accepts them again.
  public func refuseConnections(for duration: Duration) async {
    await self.gate.withLock { $0 }?.refuse(for: duration)
  }

  /// Ends a refusal of connections now.
  public func acceptConnections() async {
    await self.gate.withLock { $0 }?.reopen()
  }

  /// Where the provider's payment intent (by Tender's payment id in its metadata) stands, for tests
  /// comparing Tender's state with the provider's.
  public func intent(
    tenderPaymentID: String
  ) async -> (id: String, status: String, amountReceived: Int64, refunded: Int64)? {
    guard let intent = await self.state.intent(metadata: "tender_payment_id", value: tenderPaymentID) else {
      return nil
    }
    return (intent.id, intent.status, intent.amountReceived, await self.state.refunded(intent.id))
  }

  /// The simulator's routes: the Stripe API subset and the `/_sim` controls.
  public func router() -> Router<BasicRequestContext> {
    let router = Router()
    let gateBox = self.gate
    let api = self.api
    router.post("/v1/payment_intents") { request, _ in
      try await api.handle(request, path: "/v1/payment_intents", operation: .createIntent)
    }
    router.post("/v1/payment_intents/:id/capture") { request, context in
      let id = try context.parameters.require("id")
      return try await api.handle(request, path: "/v1/payment_intents/\(id)/capture", operation: .capture(id))
    }
    router.post("/v1/payment_intents/:id/cancel") { request, context in
      let id = try context.parameters.require("id")
      return try await api.handle(request, path: "/v1/payment_intents/\(id)/cancel", operation: .cancel(id))
    }
    router.get("/v1/payment_intents/:id") { request, context in
      let id = try context.parameters.require("id")
      return try await api.handle(request, path: "/v1/payment_intents/\(id)", operation: .retrieve(id))
    }
    router.post("/v1/refunds") { request, _ in
      try await api.handle(request, path: "/v1/refunds", operation: .createRefund)
    }
    router.get("/v1/refunds/:id") { request, context in
      let id = try context.parameters.require("id")
      return try await api.handle(request, path: "/v1/refunds/\(id)", operation: .retrieveRefund(id))
    }
    let state = self.state
    router.get("/_sim/requests") { _, _ -> Response in
      let data = try JSONEncoder().encode(await state.log)
      return Response(
        status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
    router.post("/_sim/faults") { request, _ -> Response in
      let body = try await request.body.collect(upTo: 1 << 16)
      guard let fault = try? JSONDecoder().decode(SimulatedFault.self, from: Data(body.readableBytesView)),
        fault.times > 0
      else {
        return Response(status: .badRequest)
      }
      await state.inject(fault)
      return Response(status: .noContent)
    }
    router.delete("/_sim/faults") { _, _ -> Response in
      await state.clearFaults()
      return Response(status: .noContent)
    }
    let sender = self.webhooks
    router.post("/_sim/webhooks") { request, _ -> Response in
      let body = try await request.body.collect(upTo: 1 << 16)
      guard let delivery = try? JSONDecoder().decode(WebhookDelivery.self, from: Data(body.readableBytesView)) else {
        return Response(status: .badRequest)
      }
      sender.configuration = delivery
      return Response(status: .noContent)
    }
    router.post("/_sim/refuse") { request, _ -> Response in
      guard let seconds = request.uri.queryParameters["seconds"].flatMap({ Double(String($0)) }), seconds > 0,
        seconds <= 3600
      else {
        return Response(status: .badRequest)
      }
      let gate = gateBox.withLock { $0 }
      // Answered first; the gate closes a moment later.
      Task {
        try? await Task.sleep(for: .milliseconds(100))
        await gate?.refuse(for: .milliseconds(Int64(seconds * 1000)))
      }
      return Response(status: .accepted)
    }
    return router
  }

  /// Request handling over the simulator's state, gate and webhook sender.
  private var api: SimulatedAPI {
    let gateBox = self.gate
    return SimulatedAPI(
      state: self.state, apiKey: self.configuration.apiKey, slowDelay: self.configuration.slowDelay,
      asyncDelay: self.configuration.asyncDelay,
      refuse: { duration in await gateBox.withLock { $0 }?.refuse(for: duration) },
      webhooks: self.webhooks
    )
  }

  public func run() async throws {
    let router = self.router()
    let gateBox = self.gate
    let api = self.api
    let onListening = self.onListening
    let host = self.configuration.host
    let publicPort = self.configuration.port
    let logger = self.logger
    // The HTTP server listens on a private loopback port; callers reach it through the gate.
    let app = Application(
      router: router,
      configuration: .init(address: .hostname("127.0.0.1", port: 0), serverName: "tender-provider-sim"),
      onServerRunning: { channel in
        let gate = ConnectionGate(host: host, backendPort: channel.localAddress?.port ?? 0)
        do {
          let port = try await gate.open(port: publicPort)
          gateBox.withLock { $0 = gate }
          await onListening(port)
        } catch {
          logger.error("the simulator could not listen", metadata: ["port": "\(publicPort)", "problem": "\(error)"])
          await onListening(0)
        }
      },
      logger: self.logger
    )
    defer {
      if let gate = gateBox.withLock({ $0 }) { Task { await gate.close() } }
    }
    // Asynchronous payments and refunds finish on their own, and their events go out.
    do {
      try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask {
          while !Task.isCancelled {
            try await Task.sleep(for: .milliseconds(100))
            await api.settle()
          }
        }
        group.addTask { try await app.runService() }
        defer { group.cancelAll() }
        try await group.next()
      }
    } catch {
      // The webhook client must be shut down however the simulator stops.
      await self.webhooks.shutdown()
      throw error
    }
    await self.webhooks.shutdown()
  }
}

/// Where the running simulator's gate is kept (set once it listens).
final class GateBox: Sendable {
  private let gate = Mutex<ConnectionGate?>(nil)

  func withLock<T>(_ body: (inout ConnectionGate?) -> T) -> T {
    self.gate.withLock { body(&$0) }
  }
}
