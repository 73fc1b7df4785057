import CoreMetrics
import Synchronization
public import TenderCore

/// The series a finance or on-call person reads: payments and refunds entering each status, and
/// their amounts in minor units, by currency; the provider's answers and latency; the
/// reconciler's backlog. Counted once, by the replica that committed the change, so sums across
/// replicas are the totals. The backlog is read from the database: every replica reports the
/// same figure (aggregate with `max`).
enum PaymentMetrics {
  /// Counts what the stores report after each commit.
  static func connect(_ movements: MoneyMovements, factory: any MetricsFactory) {
    let counters = CounterCache(factory: factory)
    movements.connect { committed in
      for movement in committed {
        let dimensions = [("status", movement.status), ("currency", movement.currency)]
        let (count, amount) =
          movement.kind == .payment
          ? ("tender_payments_total", "tender_payment_amount_minor_total")
          : ("tender_refunds_total", "tender_refund_amount_minor_total")
        counters.counter(count, dimensions).increment()
        counters.counter(amount, dimensions).increment(by: movement.amountMinorUnits)
      }
    }
  }

  /// Sets the reconciler's backlog gauges from one reading.
  static func settlementBacklog(factory: any MetricsFactory) -> @Sendable (SettlementBacklog) -> Void {
    let open = ["payment", "refund"].map {
      Gauge(label: "tender_settlement_open", dimensions: [("kind", $0)], factory: factory)
    }
    let oldest = ["payment", "refund"].map {
      Gauge(label: "tender_settlement_oldest_open_seconds", dimensions: [("kind", $0)], factory: factory)
    }
    return { backlog in
      open[0].record(backlog.payments)
      open[1].record(backlog.refunds)
      oldest[0].record(backlog.oldestPaymentAge.map(Self.seconds) ?? 0)
      oldest[1].record(backlog.oldestRefundAge.map(Self.seconds) ?? 0)
    }
  }

  static func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
  }

  /// Counters by name and dimensions, made once each.
  final class CounterCache: Sendable {
    private let factory: any MetricsFactory
    private let counters = Mutex<[String: Counter]>([:])

    init(factory: any MetricsFactory) { self.factory = factory }

    func counter(_ label: String, _ dimensions: [(String, String)]) -> Counter {
      let key = ([label] + dimensions.map { "\($0.0)=\($0.1)" }).joined(separator: "\u{0}")
      return self.counters.withLock { counters in
        if let counter = counters[key] { return counter }
        let counter = Counter(label: label, dimensions: dimensions, factory: self.factory)
        counters[key] = counter
        return counter
      }
    }
  }
}

/// The provider, with each call counted by operation and outcome and timed
/// (`tender_provider_requests_total`, `tender_provider_request_seconds`). Outcomes: `ok`,
/// `declined` (the provider answered that the payment failed), `rejected` (the provider refused
/// the request), `unreachable` (nothing was sent, or it surely did not arrive) and `unknown` (it
/// may have acted: the reconciler settles it).
struct MeteredProvider: PaymentProvider {
  let base: any PaymentProvider
  private let counters: PaymentMetrics.CounterCache
  private let timers: [String: Timer]

  init(_ base: any PaymentProvider, factory: any MetricsFactory) {
    self.base = base
    self.counters = PaymentMetrics.CounterCache(factory: factory)
    let operations = [
      "create_payment", "capture_payment", "cancel_payment", "create_refund", "retrieve_payment",
      "retrieve_refund",
    ]
    self.timers = Dictionary(
      uniqueKeysWithValues: operations.map {
        ($0, Timer(label: "tender_provider_request_seconds", dimensions: [("operation", $0)], factory: factory))
      })
  }

  private func measure<T>(
    _ operation: String, outcome: (T) -> String = { _ in "ok" }, _ call: () async throws(ProviderError) -> T
  ) async throws(ProviderError) -> T {
    let start = ContinuousClock.now
    let label: String
    defer {
      self.timers[operation]?.recordNanoseconds(Self.nanoseconds(ContinuousClock.now - start))
    }
    do {
      let result = try await call()
      label = outcome(result)
      self.counters.counter("tender_provider_requests_total", [("operation", operation), ("outcome", label)])
        .increment()
      return result
    } catch {
      switch error {
      case .unreachable: label = "unreachable"
      case .outcomeUnknown: label = "unknown"
      case .rejected: label = "rejected"
      }
      self.counters.counter("tender_provider_requests_total", [("operation", operation), ("outcome", label)])
        .increment()
      throw error
    }
  }

  private static func nanoseconds(_ duration: Duration) -> Int64 {
    duration.components.seconds * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000
  }

  private static func payment(_ payment: ProviderPayment) -> String {
    if case .failed = payment.status { return "declined" }
    return "ok"
  }

  private static func refund(_ refund: ProviderRefund) -> String {
    if case .failed = refund.status { return "declined" }
    return "ok"
  }

  func createPayment(
    _ request: ProviderPaymentRequest, idempotencyKey: String
  ) async throws(ProviderError)
    -> ProviderPayment
  {
    try await self.measure("create_payment", outcome: Self.payment) { () async throws(ProviderError) in
      try await self.base.createPayment(request, idempotencyKey: idempotencyKey)
    }
  }

  func capturePayment(
    providerPaymentID: String, amountMinorUnits: Int64, idempotencyKey: String
  )
    async throws(ProviderError) -> ProviderPayment
  {
    try await self.measure("capture_payment", outcome: Self.payment) { () async throws(ProviderError) in
      try await self.base.capturePayment(
        providerPaymentID: providerPaymentID, amountMinorUnits: amountMinorUnits, idempotencyKey: idempotencyKey)
    }
  }

  func cancelPayment(providerPaymentID: String, idempotencyKey: String) async throws(ProviderError) -> ProviderPayment {
    try await self.measure("cancel_payment", outcome: Self.payment) { () async throws(ProviderError) in
      try await self.base.cancelPayment(providerPaymentID: providerPaymentID, idempotencyKey: idempotencyKey)
    }
  }

  func createRefund(
    providerPaymentID: String, amountMinorUnits: Int64, idempotencyKey: String
  )
    async throws(ProviderError) -> ProviderRefund
  {
    try await self.measure("create_refund", outcome: Self.refund) { () async throws(ProviderError) in
      try await self.base.createRefund(
        providerPaymentID: providerPaymentID, amountMinorUnits: amountMinorUnits, idempotencyKey: idempotencyKey)
    }
  }

  func retrievePayment(providerPaymentID: String) async throws(ProviderError) -> ProviderPayment {
    try await self.measure("retrieve_payment", outcome: Self.payment) { () async throws(ProviderError) in
      try await self.base.retrievePayment(providerPaymentID: providerPaymentID)
    }
  }

  func retrieveRefund(providerRefundID: String) async throws(ProviderError) -> ProviderRefund {
    try await self.measure("retrieve_refund", outcome: Self.refund) { () async throws(ProviderError) in
      try await self.base.retrieveRefund(providerRefundID: providerRefundID)
    }
  }
}
