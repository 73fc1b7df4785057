import Foundation
public import Logging
public import PostgresNIO
public import TenderCore
public import Tracing

/// `RefundStore` on PostgreSQL. A refund and the reservation of its amount on the payment are
/// written in one transaction under the payment's row lock, so concurrent refunds of one payment
/// are serialized and `refunded_minor <= captured_minor` (a CHECK) can never be crossed.
public struct PostgresRefundStore: RefundStore {
  private let client: PostgresClient
  private let logger: Logger
  private let database: DatabaseCalls

  public init(
    client: PostgresClient, logger: Logger, tracer: any Tracer = NoOpTracer(),
    callTimeout: Duration? = PostgresStores.defaultCallTimeout, movements: MoneyMovements? = nil,
    announcer: PostgresEventAnnouncer? = nil
  ) {
    self.client = client
    self.logger = logger
    self.database = DatabaseCalls(tracer: tracer, timeout: callTimeout, movements: movements, announcer: announcer)
  }

  static let columns = """
    refund_id, merchant_id, payment_id, status, currency, amount_minor, reason, failure_reason, metadata::text AS metadata,
    provider_refund_id, create_time, update_time, (extract(epoch FROM create_time) * 1000000)::bigint AS create_micros
    """

  public func create(
    _ draft: RefundDraft, step: IdempotencyStep<RefundRecord>?
  ) async throws -> (RefundRecord, PaymentRecord)? {
    let logger = self.logger
    return try await self.database.run("refunds.create", recordsMovements: true) {
      try await unwrappingTransactionError {
        try await self.client.withTransaction(logger: logger) { connection -> (RefundRecord, PaymentRecord)? in
          if let step { try await PostgresIdempotencyStore.fence(step.owner, connection, logger: logger) }
          guard
            var payment = try await PostgresPaymentStore.lock(
              draft.paymentID, merchant: draft.merchantID, connection, logger: logger)
          else { return nil }
          let amount = try payment.ledger.reserveRefund(minorUnits: draft.amountMinorUnits)
          let rows = try await connection.query(
            """
            INSERT INTO refunds (refund_id, merchant_id, payment_id, status, currency, amount_minor, reason, metadata)
            VALUES (\(draft.id.rawValue), \(draft.merchantID.rawValue), \(draft.paymentID.rawValue), 'pending', \(amount.currency.code),
              \(amount.minorUnits), \(draft.reason?.rawValue), \(try PostgresPaymentStore.json(draft.metadata))::jsonb)
            RETURNING create_time
            """,
            logger: logger
          )
          var created = Date()
          for try await time in rows.decode(Date.self) { created = time }
          let refund = RefundRecord(
            id: draft.id, merchantID: draft.merchantID, paymentID: draft.paymentID, amount: amount, status: .pending,
            reason: draft.reason, failureMessage: nil, metadata: draft.metadata, providerRefundID: nil,
            createTime: created, updateTime: created
          )
          payment.updateTime = try await Self.storeRefunded(payment, connection, logger: logger)
          _ = try await PostgresPaymentStore.appendEvent(
            connection, logger: logger, merchant: draft.merchantID, payment: draft.paymentID, refund: draft.id,
            type: .refundCreated, from: nil, to: nil, amount: amount.minorUnits
          )
          MoneyMovements.record(.refund(refund))
          if let step {
            try await PostgresIdempotencyStore.apply(
              step, record: refund, payment: refund.paymentID, refund: refund.id, connection, logger: logger)
          }
          return (refund, payment)
        }
      }
    }
  }

  public func settle(
    _ id: RefundID, merchant: MerchantID, outcome: RefundOutcome?, step: IdempotencyStep<RefundRecord>?
  ) async throws -> RefundRecord? {
    let logger = self.logger
    return try await self.database.run("refunds.settle", recordsMovements: true) {
      try await unwrappingTransactionError {
        try await self.client.withTransaction(logger: logger) { connection -> RefundRecord? in
          if let step { try await PostgresIdempotencyStore.fence(step.owner, connection, logger: logger) }
          return try await Self.settle(id, merchant: merchant, outcome: outcome, step: step, connection, logger: logger)
        }
      }
    }
  }

  /// `settle` inside the caller's transaction.
  static func settle(
    _ id: RefundID, merchant: MerchantID, outcome: RefundOutcome?, step: IdempotencyStep<RefundRecord>?,
    _ connection: PostgresConnection, logger: Logger
  ) async throws -> RefundRecord? {
    guard let current = try await Self.fetch(id, merchant: merchant, connection, logger: logger) else { return nil }
    // Payment first, then refund: the order every writer of both takes, so none deadlock.
    guard
      var payment = try await PostgresPaymentStore.lock(
        current.paymentID, merchant: merchant, connection, logger: logger),
      var refund = try await Self.fetch(id, merchant: merchant, connection, lock: true, logger: logger)
    else { return nil }
    if refund.status == .pending, let outcome {
      let type: PaymentEventType?
      switch outcome {
      case .succeeded(let providerID):
        refund.providerRefundID = providerID
        try refund.succeeded()
        type = .refundSucceeded
      case .pending(let providerID):
        refund.providerRefundID = providerID
        type = nil
      case .failed(let providerID, let message):
        refund.providerRefundID = providerID ?? refund.providerRefundID
        try refund.failed(message)
        payment.ledger.releaseRefund(refund.amount)
        _ = try await Self.storeRefunded(payment, connection, logger: logger)
        type = .refundFailed
      }
      let rows = try await connection.query(
        """
        UPDATE refunds SET status = \(refund.status.rawValue), failure_reason = \(refund.failureMessage),
          provider_refund_id = \(refund.providerRefundID), update_time = now()
        WHERE refund_id = \(id.rawValue) AND merchant_id = \(merchant.rawValue)
        RETURNING update_time
        """,
        logger: logger
      )
      for try await time in rows.decode(Date.self) { refund.updateTime = time }
      if let type {
        _ = try await PostgresPaymentStore.appendEvent(
          connection, logger: logger, merchant: merchant, payment: refund.paymentID, refund: id,
          type: type, from: nil, to: nil, amount: refund.amount.minorUnits
        )
        MoneyMovements.record(.refund(refund))
      }
    }
    if let step {
      try await PostgresIdempotencyStore.apply(
        step, record: refund, payment: refund.paymentID, refund: refund.id, connection, logger: logger)
    }
    return refund
  }

  public func refund(_ id: RefundID, merchant: MerchantID) async throws -> RefundRecord? {
    try await self.database.run("refunds.get") {
      let rows = try await self.client.query(
        PostgresQuery(
          unsafeSQL: "SELECT \(Self.columns) FROM refunds WHERE refund_id = $1 AND merchant_id = $2",
          binds: PostgresPaymentStore.binds(id.rawValue, merchant.rawValue)),
        logger: self.logger
      )
      for try await row in rows { return try Self.decode(row).0 }
      return nil
    }
  }

  public func list(
    merchant: MerchantID, payment: PaymentID?, pageSize: Int, after: PageCursor?
  ) async throws -> Page<RefundRecord> {
    precondition((1...1000).contains(pageSize), "page size out of range")
    return try await self.database.run("refunds.list") {
      var binds = PostgresBindings()
      binds.append(merchant.rawValue)
      var sql = "SELECT \(Self.columns) FROM refunds WHERE merchant_id = $1"
      if let payment {
        binds.append(payment.rawValue)
        sql += " AND payment_id = $\(binds.count)"
      }
      return try await PostgresPaymentStore.keysetPage(
        self.client, logger: self.logger, sql: sql, binds: binds, idColumn: "refund_id", pageSize: pageSize,
        after: after,
        decode: Self.decode, id: \.id.rawValue
      )
    }
  }

  // MARK: Helpers

  /// Writes the payment's refunded amount; returns its new update time.
  static func storeRefunded(
    _ payment: PaymentRecord, _ connection: PostgresConnection, logger: Logger
  ) async throws -> Date {
    let rows = try await connection.query(
      """
      UPDATE payments SET refunded_minor = \(payment.ledger.refundedMinorUnits), update_time = now()
      WHERE payment_id = \(payment.id.rawValue) AND merchant_id = \(payment.merchantID.rawValue)
      RETURNING update_time
      """,
      logger: logger
    )
    for try await time in rows.decode(Date.self) { return time }
    throw StoredDataError(what: "payment \(payment.id) vanished under its lock")
  }

  static func fetch(
    _ id: RefundID, merchant: MerchantID, _ connection: PostgresConnection, lock: Bool = false, logger: Logger
  ) async throws -> RefundRecord? {
    let rows = try await connection.query(
      PostgresQuery(
        unsafeSQL:
          "SELECT \(Self.columns) FROM refunds WHERE refund_id = $1 AND merchant_id = $2\(lock ? " FOR UPDATE" : "")",
        binds: PostgresPaymentStore.binds(id.rawValue, merchant.rawValue)
      ),
      logger: logger
    )
    for try await row in rows { return try Self.decode(row).0 }
    return nil
  }

  static func decode(_ row: PostgresRow) throws -> (RefundRecord, Int64) {
    let r = row.makeRandomAccess()
    guard let status = RefundStatus(rawValue: try r["status"].decode(String.self)),
      let currency = Currency(code: try r["currency"].decode(String.self))
    else { throw StoredDataError(what: "refund status or currency") }
    let reasonText = try r["reason"].decode(String?.self)
    let reason = try reasonText.map { text in
      guard let reason = RefundReason(rawValue: text) else { throw StoredDataError(what: "refund reason \(text)") }
      return reason
    }
    let metadataText = try r["metadata"].decode(String.self)
    let metadata = (try? JSONSerialization.jsonObject(with: Data(metadataText.utf8))) as? [String: String] ?? [:]
    let record = RefundRecord(
      id: RefundID(unchecked: try r["refund_id"].decode(String.self)),
      merchantID: MerchantID(unchecked: try r["merchant_id"].decode(String.self)),
      paymentID: PaymentID(unchecked: try r["payment_id"].decode(String.self)),
      amount: Money(minorUnits: try r["amount_minor"].decode(Int64.self), currency: currency),
      status: status,
      reason: reason,
      failureMessage: try r["failure_reason"].decode(String?.self),
      metadata: metadata,
      providerRefundID: try r["provider_refund_id"].decode(String?.self),
      createTime: try r["create_time"].decode(Date.self),
      updateTime: try r["update_time"].decode(Date.self)
    )
    return (record, try r["create_micros"].decode(Int64.self))
  }
}
