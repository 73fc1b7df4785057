public import Foundation
import Hummingbird
public import Logging
public import ServiceLifecycle

/// An HTTP server speaking the subset of Stripe's API that Tender's connector uses — create,
/// capture, cancel and read PaymentIntents, create refunds; form-encoded bodies; bearer API key;
/// `Idempotency-Key` honoured like Stripe — with deterministic test payment methods:
///
/// - `pm_card_visa`: authorized (manual capture) or captured (automatic)
/// - `pm_card_chargeDeclined`: declined, `card_declined`
/// - `pm_card_chargeDeclinedInsufficientFunds`: declined, `insufficient_funds`
/// - `pm_card_chargeDeclinedExpiredCard`: declined, `expired_card`
/// - `pm_card_async`: `processing` (settles later)
/// - `pm_card_slow`: answers after `slowDelay` (timeouts)
/// - `pm_card_flaky`: the first attempt of each idempotency key gets a 500, retries succeed
/// - `pm_card_refundFail`: authorized like `pm_card_visa`; its refunds fail (`expired_or_canceled_card`)
/// - `pm_card_refundSlow`: authorized like `pm_card_visa`; its refunds answer after `slowDelay`
///
/// `GET /_sim/requests` lists every request received, so tests can count provider calls.
public struct ProviderSimulator: Service {
  public struct Configuration: Sendable {
    public var host: String
    public var port: Int
    public var apiKey: String
    public var slowDelay: Duration

    public init(host: String = "127.0.0.1", port: Int = 0, apiKey: String = "sk_test_tender", slowDelay: Duration = .seconds(30)) {
      self.host = host
      self.port = port
      self.apiKey = apiKey
      self.slowDelay = slowDelay
    }
  }

  private let configuration: Configuration
  private let logger: Logger
  private let onListening: @Sendable (Int) async -> Void
  let state = SimulatorState()

  public init(configuration: Configuration, logger: Logger, onListening: @escaping @Sendable (Int) async -> Void = { _ in }) {
    self.configuration = configuration
    self.logger = logger
    self.onListening = onListening
  }

  /// Starts a simulator in a task of its own and returns once it listens: the simulator, its
  /// port and the task (cancel it to stop the simulator).
  public static func startInBackground(
    configuration: Configuration,
    logger: Logger
  ) async throws -> (simulator: ProviderSimulator, port: Int, task: Task<Void, any Error>) {
    let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
    let simulator = ProviderSimulator(configuration: configuration, logger: logger) { port in
      continuation.yield(port)
      continuation.finish()
    }
    let task = Task {
      defer { continuation.finish() }
      try await simulator.run()
    }
    var iterator = ports.makeAsyncIterator()
    guard let port = await iterator.next() else {
      task.cancel()
      throw SimulatorDidNotStart()
    }
    return (simulator, port, task)
  }

  public struct SimulatorDidNotStart: Error {}

  /// Every request received so far.
  public func requests() async -> [LoggedRequest] {
    await self.state.log
  }

  public func run() async throws {
    let router = Router()
    let api = SimulatedAPI(state: self.state, apiKey: self.configuration.apiKey, slowDelay: self.configuration.slowDelay)
    router.post("/v1/payment_intents") { request, _ in try await api.handle(request, path: "/v1/payment_intents", operation: .createIntent) }
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
    router.post("/v1/refunds") { request, _ in try await api.handle(request, path: "/v1/refunds", operation: .createRefund) }
    let state = self.state
    router.get("/_sim/requests") { _, _ -> Response in
      let data = try JSONEncoder().encode(await state.log)
      return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
    let onListening = self.onListening
    let app = Application(
      router: router,
      configuration: .init(address: .hostname(self.configuration.host, port: self.configuration.port), serverName: "tender-provider-sim"),
      onServerRunning: { channel in await onListening(channel.localAddress?.port ?? 0) },
      logger: self.logger
    )
    try await app.runService()
  }
}
