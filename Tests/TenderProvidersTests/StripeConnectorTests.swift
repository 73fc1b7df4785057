import Foundation
import Logging
import ServiceLifecycle
import TenderCore
import TenderProviderSim
import TenderDevSupport
import TenderProviders
import Testing

/// Runs `body` with a simulator on a free port and a connector pointed at it.
func withSimulator<Result: Sendable>(
  slowDelay: Duration = .seconds(30),
  connector configure: (inout StripeConfiguration) -> Void = { _ in },
  _ body: (StripeConnector, ProviderSimulator, Int) async throws -> Result
) async throws -> Result {
  try await ProviderSimulator.runInBackground(
    configuration: .init(slowDelay: slowDelay), logger: Logger(label: "tender.test.sim")
  ) { simulator, port in
    var configuration = StripeConfiguration(
      baseURL: "http://127.0.0.1:\(port)", apiKey: Secret("sk_test_tender"), initialBackoff: .milliseconds(20))
    configure(&configuration)
    let connector = StripeConnector(configuration: configuration, logger: Logger(label: "tender.test.stripe"))
    do {
      let result = try await body(connector, simulator, port)
      try await connector.shutdown()
      return result
    } catch {
      try? await connector.shutdown()
      throw error
    }
  }
}

@Suite("Stripe connector against the provider simulator")
struct StripeConnectorTests {
  static let eur = Currency(code: "EUR")!

  static func request(_ method: String, amount: Int64 = 100, capture: CaptureMethod = .manual) -> ProviderPaymentRequest
  {
    ProviderPaymentRequest(
      amount: Money(minorUnits: amount, currency: eur), captureMethod: capture, paymentMethod: method,
      paymentID: .random())
  }

  /// The ProviderError `body` failed with (nil when it succeeded).
  static func error(_ body: () async throws -> Void) async -> ProviderError? {
    do {
      try await body()
      return nil
    } catch let error as ProviderError {
      return error
    } catch {
      Issue.record("not a ProviderError: \(error)")
      return nil
    }
  }

  @Test("Manual capture: authorize, then capture part; automatic capture succeeds at once")
  func authorizeAndCapture() async throws {
    try await withSimulator { connector, simulator, _ in
      let authorized = try await connector.createPayment(Self.request("pm_card_visa"), idempotencyKey: "k1")
      #expect(authorized.status == .requiresCapture(capturableMinorUnits: 100))
      let captured = try await connector.capturePayment(
        providerPaymentID: authorized.providerPaymentID, amountMinorUnits: 60, idempotencyKey: "k2")
      #expect(captured.status == .succeeded(capturedMinorUnits: 60))
      let automatic = try await connector.createPayment(
        Self.request("pm_card_visa", amount: 250, capture: .automatic), idempotencyKey: "k3")
      #expect(automatic.status == .succeeded(capturedMinorUnits: 250))
      let canceled = try await connector.createPayment(Self.request("pm_card_visa"), idempotencyKey: "k4")
      #expect(
        try await connector.cancelPayment(providerPaymentID: canceled.providerPaymentID, idempotencyKey: "k5").status
          == .canceled)
      #expect(await simulator.requests().map(\.outcome) == ["created", "captured", "created", "created", "canceled"])
    }
  }

  @Test(
    "Declines carry their reason",
    arguments: [
      ("pm_card_chargeDeclined", FailureReason.cardDeclined),
      ("pm_card_chargeDeclinedInsufficientFunds", .insufficientFunds),
      ("pm_card_chargeDeclinedExpiredCard", .expiredCard),
    ])
  func declines(_ method: String, _ reason: FailureReason) async throws {
    try await withSimulator { connector, _, _ in
      let payment = try await connector.createPayment(Self.request(method), idempotencyKey: "decline")
      #expect(payment.status == .failed(reason))
      #expect(payment.providerPaymentID.hasPrefix("pi_"))
    }
  }

  @Test("The same idempotency key twice: one charge, the same answer")
  func idempotentRetry() async throws {
    try await withSimulator { connector, simulator, _ in
      let request = Self.request("pm_card_visa", capture: .automatic)
      let first = try await connector.createPayment(request, idempotencyKey: "order-1")
      let second = try await connector.createPayment(request, idempotencyKey: "order-1")
      #expect(first == second)
      #expect(await simulator.requests().map(\.outcome) == ["created", "replayed"])
      // Another request under the same key is refused, not executed.
      let reused = await Self.error {
        _ = try await connector.createPayment(Self.request("pm_card_visa", amount: 999), idempotencyKey: "order-1")
      }
      guard case .rejected(400, "idempotency_key_reused", _) = reused else {
        Issue.record("expected idempotency_key_reused, got \(String(describing: reused))")
        return
      }
    }
  }

  @Test("A 5xx is retried with the same key and charges once")
  func retriesServerErrors() async throws {
    try await withSimulator { connector, simulator, _ in
      let payment = try await connector.createPayment(
        Self.request("pm_card_flaky", capture: .automatic), idempotencyKey: "flaky-1")
      #expect(payment.status == .succeeded(capturedMinorUnits: 100))
      let outcomes = await simulator.requests().map(\.outcome)
      #expect(outcomes == ["server_error", "created"])
    }
  }

  @Test("A timeout leaves the outcome unknown; an unreachable provider is unreachable")
  func timeoutsAndOutages() async throws {
    try await withSimulator(
      slowDelay: .seconds(2),
      connector: {
        $0.requestTimeout = .milliseconds(300)
        $0.maximumAttempts = 1
      }
    ) { connector, _, _ in
      let error = await Self.error {
        _ = try await connector.createPayment(Self.request("pm_card_slow"), idempotencyKey: "slow-1")
      }
      guard case .outcomeUnknown = error else {
        Issue.record("expected outcomeUnknown, got \(String(describing: error))")
        return
      }
    }
    let closed = StripeConnector(
      configuration: StripeConfiguration(
        baseURL: "http://127.0.0.1:9", apiKey: Secret("sk_test_tender"), maximumAttempts: 2,
        initialBackoff: .milliseconds(10)),
      logger: Logger(label: "tender.test.stripe")
    )
    let error = await Self.error {
      _ = try await closed.createPayment(Self.request("pm_card_visa"), idempotencyKey: "down-1")
    }
    try await closed.shutdown()
    guard case .unreachable = error else {
      Issue.record("expected unreachable, got \(String(describing: error))")
      return
    }
  }

  @Test("Refunds: up to what was captured; a wrong API key is rejected")
  func refundsAndAuthentication() async throws {
    try await withSimulator { connector, _, _ in
      let payment = try await connector.createPayment(
        Self.request("pm_card_visa", capture: .automatic), idempotencyKey: "p")
      let refund = try await connector.createRefund(
        providerPaymentID: payment.providerPaymentID, amountMinorUnits: 40, idempotencyKey: "r1")
      #expect(refund.status == .succeeded && refund.providerRefundID.hasPrefix("re_"))
      let tooMuch = await Self.error {
        _ = try await connector.createRefund(
          providerPaymentID: payment.providerPaymentID, amountMinorUnits: 70, idempotencyKey: "r2")
      }
      guard case .rejected(400, "amount_too_large", _) = tooMuch else {
        Issue.record("expected amount_too_large, got \(String(describing: tooMuch))")
        return
      }
    }
    try await withSimulator(connector: { $0.apiKey = Secret("sk_test_wrong") }) { connector, _, _ in
      let error = await Self.error {
        _ = try await connector.createPayment(Self.request("pm_card_visa"), idempotencyKey: "auth")
      }
      guard case .rejected(401, _, _) = error else {
        Issue.record("expected 401, got \(String(describing: error))")
        return
      }
    }
  }
}
