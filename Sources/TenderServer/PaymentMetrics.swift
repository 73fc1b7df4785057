import CoreMetrics
public import TenderCore

/// The series a finance or on-call person reads: payments and refunds entering each status, and
/// their amounts in minor units, by currency; the provider's answers and latency; the
/// reconciler's backlog. Counted once, by the replica that committed the change, so sums across
/// replicas are the totals. The backlog is read from the database: every replica reports the
/// same figure (aggregate with `max`).
enum PaymentMetrics {
  /// Counts what the stores report after each commit. The registry keeps one series per name and
  /// labels, so making a counter again finds the same one.
  static func connect(_ movements: MoneyMovements, factory: any MetricsFactory) {
    movements.connect { committed in
      for movement in committed {
        let dimensions = [("status", movement.status), ("currency", movement.currency)]
        let (count, amount) =
          movement.kind == .payment
          ? ("tender_payments_total", "tender_payment_amount_minor_total")
          : ("tender_refunds_total", "tender_refund_amount_minor_total")
        Counter(label: count, dimensions: dimensions, factory: factory).increment()
        Counter(label: amount, dimensions: dimensions, factory: factory).increment(by: movement.amountMinorUnits)
      }
    }
  }

  /// Requests per group-committed statement of new payments' and refunds' writes, by statement
  /// (`payment_claims`, `payment_finishes`, `refund_claims`, `refund_finishes`): near 1 while the
  /// database keeps up, growing with the load (one such statement of each kind in flight per
  /// replica, more when one runs past `database-write-stall`, up to `database-write-lanes`).
  static let writeBatchRequests = "tender_database_write_batch_requests"
  static let writeBatchBuckets: [Double] = [1, 2, 4, 8, 16, 32]

  static func connect(_ batches: WriteBatchReports, factory: any MetricsFactory) {
    let recorders = Dictionary(
      uniqueKeysWithValues: ["payment_claims", "payment_finishes", "refund_claims", "refund_finishes"].map {
        (
          $0,
          Recorder(label: Self.writeBatchRequests, dimensions: [("statement", $0)], aggregate: true, factory: factory)
        )
      })
    batches.connect { statement, requests in
      (recorders[statement]
        ?? Recorder(
          label: Self.writeBatchRequests, dimensions: [("statement", statement)], aggregate: true, factory: factory))
        .record(requests)
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
      oldest[0].record(backlog.oldestPaymentAge?.seconds ?? 0)
      oldest[1].record(backlog.oldestRefundAge?.seconds ?? 0)
    }
  }
}

extension Duration {
  /// For metrics: seconds as a fraction, and whole nanoseconds (`Timer.recordNanoseconds`).
  var seconds: Double { Double(self.components.seconds) + Double(self.components.attoseconds) / 1e18 }
  var nanoseconds: Int64 { self.components.seconds * 1_000_000_000 + self.components.attoseconds / 1_000_000_000 }
}

/// The provider, with each call counted by operation and outcome and timed
/// (`tender_provider_requests_total`, `tender_provider_request_seconds`). Outcomes: `ok`,
/// `declined` (the provider answered that the payment or refund failed), `rejected` (the provider
/// refused the request), `unreachable` (nothing was sent, or it surely did not arrive) and
/// `unknown` (it may have acted: the reconciler settles it).
struct MeteredProvider: PaymentProvider {
  enum Operation: String, CaseIterable {
    case createPayment = "create_payment"
    case capturePayment = "capture_payment"
    case cancelPayment = "cancel_payment"
    case createRefund = "create_refund"
    case retrievePayment = "retrieve_payment"
    case retrieveRefund = "retrieve_refund"
  }

  static let outcomes = ["ok", "declined", "rejected", "unreachable", "unknown"]

  let base: any PaymentProvider
  /// Every operation's timer and counters, made once: the set is small and known.
  private let timers: [Operation: Timer]
  private let counters: [Operation: [String: Counter]]

  init(_ base: any PaymentProvider, factory: any MetricsFactory) {
    self.base = base
    var timers: [Operation: Timer] = [:]
    var counters: [Operation: [String: Counter]] = [:]
    for operation in Operation.allCases {
      timers[operation] = Timer(
        label: "tender_provider_request_seconds", dimensions: [("operation", operation.rawValue)], factory: factory)
      for outcome in Self.outcomes {
        counters[operation, default: [:]][outcome] = Counter(
          label: "tender_provider_requests_total",
          dimensions: [("operation", operation.rawValue), ("outcome", outcome)],
          factory: factory)
      }
    }
    self.timers = timers
    self.counters = counters
  }

  private func measure<T>(
    _ operation: Operation, declined: (T) -> Bool, _ call: () async throws(ProviderError) -> T
  ) async throws(ProviderError) -> T {
    let start = ContinuousClock.now
    let outcome: Result<T, ProviderError>
    do {
      outcome = .success(try await call())
    } catch {
      outcome = .failure(error)
    }
    self.timers[operation]?.recordNanoseconds((ContinuousClock.now - start).nanoseconds)
    let label: String
    switch outcome {
    case .success(let answer): label = declined(answer) ? "declined" : "ok"
    case .failure(.unreachable): label = "unreachable"
    case .failure(.outcomeUnknown): label = "unknown"
    case .failure(.rejected): label = "rejected"
    }
    self.counters[operation]?[label]?.increment()
    return try outcome.get()
  }

  private static func declined(_ payment: ProviderPayment) -> Bool {
    if case .failed = payment.status { return true }
    return false
  }

  private static func declined(_ refund: ProviderRefund) -> Bool {
    if case .failed = refund.status { return true }
    return false
  }

  func createPayment(
    _ request: ProviderPaymentRequest, idempotencyKey: String
  ) async throws(ProviderError)
    -> ProviderPayment
  {
    try await self.measure(.createPayment, declined: Self.declined) { () async throws(ProviderError) in
      try await self.base.createPayment(request, idempotencyKey: idempotencyKey)
    }
  }

  func capturePayment(
    providerPaymentID: String, amountMinorUnits: Int64, idempotencyKey: String
  )
    async throws(ProviderError) -> ProviderPayment
  {
    try await self.measure(.capturePayment, declined: Self.declined) { () async throws(ProviderError) in
      try await self.base.capturePayment(
        providerPaymentID: providerPaymentID, amountMinorUnits: amountMinorUnits, idempotencyKey: idempotencyKey)
    }
  }

  func cancelPayment(providerPaymentID: String, idempotencyKey: String) async throws(ProviderError) -> ProviderPayment {
    try await self.measure(.cancelPayment, declined: Self.declined) { () async throws(ProviderError) in
      try await self.base.cancelPayment(providerPaymentID: providerPaymentID, idempotencyKey: idempotencyKey)
    }
  }

  func createRefund(
    providerPaymentID: String, amountMinorUnits: Int64, idempotencyKey: String
  )
    async throws(ProviderError) -> ProviderRefund
  {
    try await self.measure(.createRefund, declined: Self.declined) { () async throws(ProviderError) in
      try await self.base.createRefund(
        providerPaymentID: providerPaymentID, amountMinorUnits: amountMinorUnits, idempotencyKey: idempotencyKey)
    }
  }

  func retrievePayment(providerPaymentID: String) async throws(ProviderError) -> ProviderPayment {
    try await self.measure(.retrievePayment, declined: Self.declined) { () async throws(ProviderError) in
      try await self.base.retrievePayment(providerPaymentID: providerPaymentID)
    }
  }

  func retrieveRefund(providerRefundID: String) async throws(ProviderError) -> ProviderRefund {
    try await self.measure(.retrieveRefund, declined: Self.declined) { () async throws(ProviderError) in
      try await self.base.retrieveRefund(providerRefundID: providerRefundID)
    }
  }
}
