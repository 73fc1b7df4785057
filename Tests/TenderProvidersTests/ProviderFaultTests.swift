import Foundation
import Logging
import TenderCore
import TenderProviderSim
@testable import TenderProviders
import Testing

/// The connector against a simulator that misbehaves as real providers do.
@Suite("Stripe connector under provider faults")
struct ProviderFaultTests {
  static func request(_ method: String = "pm_card_visa") -> ProviderPaymentRequest {
    StripeConnectorTests.request(method, capture: .automatic)
  }

  @Test("429 with Retry-After is waited out and retried with the same key: one charge, the answer is the charge")
  func rateLimitedThenSucceeds() async throws {
    try await withSimulator { connector, simulator, _ in
      await simulator.inject(.answer(429, retryAfterSeconds: 1, .createPayment, times: 1))
      let started = ContinuousClock.now
      let payment = try await connector.createPayment(Self.request(), idempotencyKey: "rl-1")
      #expect(payment.status == .succeeded(capturedMinorUnits: 100))
      // Retry-After: 1 was honoured rather than a jittered backoff of at most 20 ms.
      #expect(ContinuousClock.now - started >= .seconds(1))
      let requests = await simulator.requests()
      #expect(requests.map(\.outcome) == ["fault", "created"])
      #expect(requests.map(\.idempotencyKey) == ["rl-1", "rl-1"])
    }
  }

  @Test("429 on every attempt: nothing was done, so the call is unreachable (not unknown, not a refusal)")
  func rateLimitedThroughout() async throws {
    try await withSimulator(connector: { $0.maximumAttempts = 2 }) { connector, simulator, _ in
      await simulator.inject(.answer(429, .createPayment, times: 5))
      let error = await StripeConnectorTests.error {
        _ = try await connector.createPayment(Self.request(), idempotencyKey: "rl-2")
      }
      guard case .unreachable = error else {
        Issue.record("expected unreachable, got \(String(describing: error))")
        return
      }
      #expect(await simulator.requests().count == 2)
    }
  }

  @Test("A Retry-After longer than the backoff allows ends the call instead of overrunning its budget")
  func retryAfterBeyondBudget() async throws {
    try await withSimulator(connector: { $0.maximumBackoff = .milliseconds(500) }) { connector, simulator, _ in
      await simulator.inject(.answer(429, retryAfterSeconds: 30, .createPayment, times: 1))
      let started = ContinuousClock.now
      let error = await StripeConnectorTests.error {
        _ = try await connector.createPayment(Self.request(), idempotencyKey: "rl-3")
      }
      #expect(ContinuousClock.now - started < .seconds(5))
      guard case .unreachable = error else {
        Issue.record("expected unreachable, got \(String(describing: error))")
        return
      }
    }
  }

  @Test("5xx twice, then the answer: retried with the same key within the attempts")
  func serverErrorsThenSucceeds() async throws {
    try await withSimulator { connector, simulator, _ in
      await simulator.inject(.answer(503, .createPayment, times: 2))
      let payment = try await connector.createPayment(Self.request(), idempotencyKey: "5xx-1")
      #expect(payment.status == .succeeded(capturedMinorUnits: 100))
      #expect(await simulator.requests().map(\.outcome) == ["fault", "fault", "created"])
    }
  }

  @Test("A 503 with Retry-After is retried after the wait it asks for")
  func serviceUnavailableWithRetryAfter() async throws {
    try await withSimulator { connector, simulator, _ in
      await simulator.inject(.answer(503, retryAfterSeconds: 1, .createPayment))
      let started = ContinuousClock.now
      let payment = try await connector.createPayment(Self.request(), idempotencyKey: "503-ra")
      #expect(payment.status == .succeeded(capturedMinorUnits: 100))
      #expect(ContinuousClock.now - started >= .seconds(1))
      #expect(await simulator.requests().map(\.outcome) == ["fault", "created"])
    }
  }

  @Test(
    "Accept-then-drop: the provider charged but the answer was lost; the call's outcome is unknown; the same key later gets the charge"
  )
  func acceptThenDrop() async throws {
    try await withSimulator(connector: { $0.maximumAttempts = 1 }) { connector, simulator, _ in
      await simulator.inject(.acceptThenDrop(.createPayment))
      let request = Self.request()
      let error = await StripeConnectorTests.error {
        _ = try await connector.createPayment(request, idempotencyKey: "drop-1")
      }
      guard case .outcomeUnknown = error else {
        Issue.record("expected outcomeUnknown, got \(String(describing: error))")
        return
      }
      let again = try await connector.createPayment(request, idempotencyKey: "drop-1")
      #expect(again.status == .succeeded(capturedMinorUnits: 100))
      let requests = await simulator.requests()
      #expect(requests.map(\.outcome) == ["created", "replayed"])
      #expect(requests.first?.fault == "accept_then_drop")
    }
  }

  @Test(
    "Refused connections are recognised by their type: the call is unreachable; after the outage the same port answers")
  func refusedConnections() async throws {
    try await withSimulator(connector: { $0.maximumAttempts = 2 }) { connector, simulator, _ in
      // (A request on a pooled connection that the outage cuts may have been received: that is
      // an unknown outcome, not this case. This connector has no connection yet.)
      await simulator.refuseConnections(for: .seconds(2))
      let error = await StripeConnectorTests.error {
        _ = try await connector.createPayment(Self.request(), idempotencyKey: "down")
      }
      guard case .unreachable = error else {
        Issue.record("expected unreachable, got \(String(describing: error))")
        return
      }
      // Back on the same port.
      let deadline = ContinuousClock.now + .seconds(10)
      var answered: ProviderPayment?
      while answered == nil, ContinuousClock.now < deadline {
        answered = try? await connector.createPayment(Self.request(), idempotencyKey: "down")
        if answered == nil { try await Task.sleep(for: .milliseconds(200)) }
      }
      #expect(answered?.status == .succeeded(capturedMinorUnits: 100))
      #expect(await simulator.requests().filter { $0.idempotencyKey == "down" }.map(\.outcome) == ["created"])
    }
  }

  @Test(
    "A refusing simulator keeps its port: simulators started meanwhile get others, outside the ephemeral range, and it comes back on it"
  )
  func refusingKeepsItsPort() async throws {
    try await withSimulator { connector, first, port in
      await first.refuseConnections(for: .seconds(3600))
      let ephemeralStart =
        (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8))?
        .split(whereSeparator: \.isWhitespace).first.flatMap { Int($0) } ?? 32768
      #expect(port < ephemeralStart, "\(port) is in the ephemeral range from \(ephemeralStart)")
      // Ten simulators started while the first one refuses: none gets its port.
      for _ in 0..<10 {
        try await withSimulator { _, _, other in
          #expect(other != port && other < ephemeralStart, "\(other)")
        }
      }
      await first.acceptConnections()
      #expect(first.acceptsConnections)
      // The connector still dials the port it was given: answered there.
      let answered = try await connector.createPayment(Self.request(), idempotencyKey: "after-refusal")
      #expect(answered.status == .succeeded(capturedMinorUnits: 100))
    }
  }

  @Test("Retrieving: a payment intent and a refund as the provider has them; an unknown id is refused")
  func retrieve() async throws {
    try await withSimulator { connector, _, _ in
      let payment = try await connector.createPayment(Self.request(), idempotencyKey: "get-1")
      let read = try await connector.retrievePayment(providerPaymentID: payment.providerPaymentID)
      #expect(read == payment)
      let refund = try await connector.createRefund(
        providerPaymentID: payment.providerPaymentID, amountMinorUnits: 40, idempotencyKey: "get-r1")
      #expect(try await connector.retrieveRefund(providerRefundID: refund.providerRefundID) == refund)
      let missing = await StripeConnectorTests.error {
        _ = try await connector.retrieveRefund(providerRefundID: "re_nope")
      }
      guard case .rejected(404, "resource_missing", _) = missing else {
        Issue.record("expected resource_missing, got \(String(describing: missing))")
        return
      }
    }
  }

  @Test(
    "Full-jitter backoff stays within its ceiling, doubles per retry up to the maximum, and the budget covers every attempt and wait"
  )
  func backoffAndBudget() {
    let configuration = StripeConfiguration(
      baseURL: "http://127.0.0.1:1", apiKey: Secret("k"), requestTimeout: .seconds(10), maximumAttempts: 3,
      initialBackoff: .milliseconds(200), maximumBackoff: .seconds(2)
    )
    #expect(
      StripeConnector.backoff(attempt: 1, retryAfter: nil, configuration: configuration, random: 1)
        == .milliseconds(200))
    #expect(
      StripeConnector.backoff(attempt: 2, retryAfter: nil, configuration: configuration, random: 1)
        == .milliseconds(400))
    #expect(
      StripeConnector.backoff(attempt: 9, retryAfter: nil, configuration: configuration, random: 1) == .seconds(2))
    #expect(StripeConnector.backoff(attempt: 2, retryAfter: nil, configuration: configuration, random: 0) == .zero)
    #expect(
      StripeConnector.backoff(attempt: 1, retryAfter: .seconds(1), configuration: configuration, random: 0.5)
        == .seconds(1))
    #expect(StripeConnector.backoff(attempt: 1, retryAfter: .seconds(3), configuration: configuration) == nil)
    #expect(configuration.budget == .seconds(34))
    #expect(StripeConnector.retryAfter("2") == .seconds(2))
    #expect(StripeConnector.retryAfter("soon") == nil)
  }

  @Test("A payment that needs the customer (requires_action) is a decline, not a state to retry forever")
  func requiresActionIsFinal() async throws {
    try await withSimulator { connector, _, _ in
      let payment = try await connector.createPayment(
        Self.request("pm_card_authenticationRequired"), idempotencyKey: "3ds-1")
      #expect(payment.status == .failed(.cardDeclined))
    }
  }
}
