import Foundation
public import Logging
public import PostgresNIO
public import TenderCore
public import Tracing

/// `RefundStore` on PostgreSQL. A refund and the reservation of its amount on the payment are
/// written in one transaction under the payment's row lock, so concurrent refunds of one payment
/// are serialized and `refunded_minor <= captured_minor` (a CHECK) can never be crossed.
public struct PostgresRefundStore: RefundStore, KeyedRefundCreation {
  private let client: PostgresClient
  private let logger: Logger
  private let database: DatabaseCalls
  /// Group commit of the two statements of new keyed refunds (see `StatementBatcher`). A claim's
  /// statement carries at most one refund of each payment: it reserves the amount on the payment's
  /// row, which one statement can change only once.
  private let claims: StatementBatcher<InsertClaiming, InsertClaiming.Answer>
  private let finishes: StatementBatcher<FinishPending, FinishPending.Answer>

  public init(
    client: PostgresClient, logger: Logger, tracer: any Tracer = NoOpTracer(),
    callTimeout: Duration? = PostgresStores.defaultCallTimeout, movements: MoneyMovements? = nil,
    announcer: PostgresEventAnnouncer? = nil, writeLanes: Int = 2, writeStall: Duration = .milliseconds(20),
    writeBatches: WriteBatchReports? = nil
  ) {
    self.client = client
    self.logger = logger
    self.database = DatabaseCalls(tracer: tracer, timeout: callTimeout, movements: movements, announcer: announcer)
    self.claims = StatementBatcher(
      "refund_claims", lanes: writeLanes, stall: writeStall, largest: PostgresPaymentStore.largestBatch,
      timeout: callTimeout,
      reports: writeBatches, distinct: { $0.refund.paymentID.rawValue }
    ) {
      try await Self.insertClaiming($0, client: client, logger: logger)
    }
    self.finishes = StatementBatcher(
      "refund_finishes", lanes: writeLanes, stall: writeStall, largest: PostgresPaymentStore.largestBatch,
      timeout: callTimeout,
      reports: writeBatches
    ) {
      try await Self.finishPending($0, client: client, logger: logger)
    }
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

  // MARK: The fast path of a new keyed refund

  /// The key claimed, the amount reserved, the pending refund, its event and the provider call's
  /// record, in one statement. The payment is found by its primary key alone (its other
  /// conditions are written `(…) IS TRUE`, as in FinishProcessing). A key claimed while the
  /// payment no longer allows the refund would be a claim without its refund: dividing by zero
  /// aborts the whole statement instead.
  struct InsertClaiming: PostgresPreparedStatement {
    static let sql = """
      WITH claimed AS (
        INSERT INTO idempotency_keys (merchant_id, idempotency_key, method, request_fingerprint, recovery_point, locked_until, payment_id,
          refund_id, provider_attempted)
        VALUES ($1::text, $2::text, $3::text, $4::bytea, 'refund_created', now() + $5::bigint * interval '1 millisecond', $6::text,
          $7::text, true)
        ON CONFLICT (merchant_id, idempotency_key) DO NOTHING
        RETURNING merchant_id
      ), reserved AS (
        UPDATE payments SET refunded_minor = refunded_minor + $8::bigint, update_time = now()
        WHERE payment_id = $6::text
          AND (merchant_id = $1::text AND status = 'succeeded' AND currency = $9::text
            AND refunded_minor + $8::bigint <= captured_minor
            AND ($10::bigint IS NULL OR refunded_minor = $10::bigint)) IS TRUE
          AND EXISTS (SELECT 1 FROM claimed)
        RETURNING payment_id, merchant_id
      ), refund AS (
        INSERT INTO refunds (refund_id, merchant_id, payment_id, status, currency, amount_minor, reason, metadata, create_time,
          update_time)
        SELECT $7::text, merchant_id, payment_id, 'pending', $9::text, $8::bigint, $11::text, $12::text::jsonb,
          timestamptz '2000-01-01 00:00:00+00' + interval '1 microsecond' * $13::bigint,
          timestamptz '2000-01-01 00:00:00+00' + interval '1 microsecond' * $13::bigint
        FROM reserved
        RETURNING refund_id
      ), call AS (
        INSERT INTO provider_requests (merchant_id, payment_id, refund_id, operation, provider_idempotency_key, outcome, amount_minor)
        SELECT merchant_id, payment_id, $7::text, 'create_refund', $14::text, 'unknown', $8::bigint FROM reserved
        RETURNING request_id
      ), event AS (
        INSERT INTO payment_events (merchant_id, payment_id, refund_id, type, amount_minor)
        SELECT merchant_id, payment_id, $7::text, 'refund_created', $8::bigint FROM reserved
        RETURNING tx::text::bigint AS tx
      )
      SELECT (SELECT count(*) FROM claimed)::bigint
          / (CASE WHEN (SELECT count(*) FROM claimed) = (SELECT count(*) FROM reserved) THEN 1 ELSE 0 END),
        (SELECT tx FROM event), (SELECT request_id FROM call)
      """
    typealias Row = (Int64, Int64?, Int64?)

    /// The claim's event transaction and provider call's row id; nil when nothing was written.
    typealias Answer = (eventTransaction: Int64, requestID: Int64)?

    let refund: RefundRecord
    let expectRefunded: Int64?
    let request: IdempotencyRequest
    let lockMilliseconds: Int64
    let providerKey: String

    func makeBindings() throws -> PostgresBindings {
      var binds = PostgresBindings()
      binds.append(self.request.merchant.rawValue)
      binds.append(self.request.key)
      binds.append(self.request.method)
      binds.append(ByteBuffer(bytes: self.request.fingerprint))
      binds.append(self.lockMilliseconds)
      binds.append(self.refund.paymentID.rawValue)
      binds.append(self.refund.id.rawValue)
      binds.append(self.refund.amount.minorUnits)
      binds.append(self.refund.amount.currency.code)
      binds.append(self.expectRefunded)
      binds.append(self.refund.reason?.rawValue)
      binds.append(try PostgresPaymentStore.json(self.refund.metadata))
      binds.append(PostgresTime.microseconds(self.refund.createTime))
      binds.append(self.providerKey)
      return binds
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
  }

  /// `InsertClaiming` for several new keys, each of another payment, in one statement and one
  /// transaction: each key that is free is claimed with its refund's reservation, the refund, the
  /// call's record and the event; a key that exists writes nothing. A key claimed whose payment no
  /// longer allows its refund as read aborts the whole statement (a division by zero): its
  /// requests are then written one by one. Sent unnamed, as `FinishProcessingBatch` is.
  struct InsertClaimingBatch {
    static let sql = """
      WITH input AS (
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::bigint[], $6::text[], $7::text[], $8::bigint[],
          $9::text[], $10::bigint[], $11::boolean[], $12::text[], $13::text[], $14::bigint[], $15::text[])
          AS i (merchant_id, idempotency_key, method, fingerprint, lock_milliseconds, payment_id, refund_id, amount_minor,
            currency, expect_refunded, has_expect_refunded, reason, metadata, create_micros, provider_key)
      ), claimed AS (
        INSERT INTO idempotency_keys (merchant_id, idempotency_key, method, request_fingerprint, recovery_point, locked_until, payment_id,
          refund_id, provider_attempted)
        SELECT merchant_id, idempotency_key, method, fingerprint, 'refund_created',
          now() + lock_milliseconds * interval '1 millisecond', payment_id, refund_id, true
        FROM input
        ON CONFLICT (merchant_id, idempotency_key) DO NOTHING
        RETURNING refund_id
      ), reserved AS (
        UPDATE payments p SET refunded_minor = p.refunded_minor + i.amount_minor, update_time = now()
        FROM input i
        WHERE p.payment_id = i.payment_id
          AND (p.merchant_id = i.merchant_id AND p.status = 'succeeded' AND p.currency = i.currency
            AND p.refunded_minor + i.amount_minor <= p.captured_minor
            AND (NOT i.has_expect_refunded OR p.refunded_minor = i.expect_refunded)) IS TRUE
          AND i.refund_id IN (SELECT refund_id FROM claimed)
        RETURNING i.refund_id, p.payment_id, p.merchant_id
      ), refund AS (
        INSERT INTO refunds (refund_id, merchant_id, payment_id, status, currency, amount_minor, reason, metadata, create_time,
          update_time)
        SELECT i.refund_id, r.merchant_id, r.payment_id, 'pending', i.currency, i.amount_minor, NULLIF(i.reason, ''),
          i.metadata::jsonb,
          timestamptz '2000-01-01 00:00:00+00' + interval '1 microsecond' * i.create_micros,
          timestamptz '2000-01-01 00:00:00+00' + interval '1 microsecond' * i.create_micros
        FROM reserved r JOIN input i USING (refund_id)
        RETURNING refund_id
      ), call AS (
        INSERT INTO provider_requests (merchant_id, payment_id, refund_id, operation, provider_idempotency_key, outcome, amount_minor)
        SELECT r.merchant_id, r.payment_id, i.refund_id, 'create_refund', i.provider_key, 'unknown', i.amount_minor
        FROM reserved r JOIN input i USING (refund_id)
        RETURNING refund_id, request_id
      ), event AS (
        INSERT INTO payment_events (merchant_id, payment_id, refund_id, type, amount_minor)
        SELECT r.merchant_id, r.payment_id, i.refund_id, 'refund_created', i.amount_minor
        FROM reserved r JOIN input i USING (refund_id)
        RETURNING refund_id, tx::text::bigint AS tx
      ), checked AS (
        SELECT 1 / (CASE WHEN (SELECT count(*) FROM claimed) = (SELECT count(*) FROM reserved) THEN 1 ELSE 0 END) AS ok
      )
      SELECT written.refund_id, written.tx, written.request_id, checked.ok
      FROM checked LEFT JOIN (SELECT c.refund_id, e.tx, c.request_id FROM call c JOIN event e USING (refund_id)) written ON true
      """
    typealias Row = (String?, Int64?, Int64?, Int32)

    let requests: [InsertClaiming]

    var query: PostgresQuery {
      get throws {
        let requests = self.requests
        var binds = PostgresBindings()
        binds.append(requests.map(\.request.merchant.rawValue))
        binds.append(requests.map(\.request.key))
        binds.append(requests.map(\.request.method))
        binds.append(requests.map { ByteBuffer(bytes: $0.request.fingerprint) })
        binds.append(requests.map(\.lockMilliseconds))
        binds.append(requests.map(\.refund.paymentID.rawValue))
        binds.append(requests.map(\.refund.id.rawValue))
        binds.append(requests.map(\.refund.amount.minorUnits))
        binds.append(requests.map(\.refund.amount.currency.code))
        binds.append(requests.map { $0.expectRefunded ?? 0 })
        binds.append(requests.map { $0.expectRefunded != nil })
        // No reason is the empty text: every reason is a non-empty name.
        binds.append(requests.map { $0.refund.reason?.rawValue ?? "" })
        binds.append(try requests.map { try PostgresPaymentStore.json($0.refund.metadata) })
        binds.append(requests.map { PostgresTime.microseconds($0.refund.createTime) })
        binds.append(requests.map(\.providerKey))
        return PostgresQuery(unsafeSQL: Self.sql, binds: binds)
      }
    }
  }

  /// Writes `requests` (each of another payment) as one statement (`InsertClaiming` alone,
  /// `InsertClaimingBatch` for more). A batch the server refused wrote nothing: its requests are
  /// then written one by one, so that each gets its own answer or error. One alone that aborted
  /// itself (its payment changed since it was read and no longer allows the refund as read) wrote
  /// nothing either: the general path decides under the payment's lock.
  static func insertClaiming(
    _ requests: [InsertClaiming], client: PostgresClient, logger: Logger
  ) async throws -> [Result<InsertClaiming.Answer, any Error>] {
    @Sendable func alone(_ request: InsertClaiming) async throws -> InsertClaiming.Answer {
      do {
        for try await (claimed, eventTransaction, requestID) in try await client.execute(request, logger: logger) {
          guard claimed == 1, let eventTransaction, let requestID else { return nil }
          return (eventTransaction, requestID)
        }
        return nil
      } catch let error as PSQLError where PostgresFailures.isFastPathRefusal(error) {
        return nil
      }
    }
    return try await GroupCommit.write(requests, alone: alone) { batch in
      // Payments locked in one order by every batch.
      let sorted = batch.sorted { $0.refund.paymentID.rawValue < $1.refund.paymentID.rawValue }
      let rows = try await client.query(try InsertClaimingBatch(requests: sorted).query, logger: logger)
      var written: [String: (Int64, Int64)] = [:]
      for try await (refund, eventTransaction, requestID, _) in rows.decode(InsertClaimingBatch.Row.self) {
        if let refund, let eventTransaction, let requestID { written[refund] = (eventTransaction, requestID) }
      }
      return batch.map { request in written[request.refund.id.rawValue].map { ($0.0, $0.1) } }
    }
  }

  public func insertClaiming(
    _ refund: RefundRecord, expectRefunded: Int64?, request: IdempotencyRequest, lockFor: Duration, call: ProviderCall
  ) async throws -> Int64? {
    precondition(
      refund.merchantID == request.merchant && refund.status == .pending, "a new pending refund of the key's merchant")
    precondition(
      call.operation == .createRefund && call.refund == refund.id && call.payment == refund.paymentID,
      "the call that makes this refund")
    let statement = InsertClaiming(
      refund: refund, expectRefunded: expectRefunded, request: request,
      lockMilliseconds: PostgresIdempotencyStore.milliseconds(lockFor), providerKey: call.providerKey)
    return try await self.database.run("refunds.insert_claiming", recordsMovements: true) {
      // Nil: the key exists, or the payment changed since it was read and no longer allows this
      // refund as read; the general path decides under the payment's lock.
      guard let (eventTransaction, requestID) = try await self.claims.submit(statement) else { return nil }
      MoneyMovements.record(.refund(refund))
      WrittenEvents.record(transaction: eventTransaction)
      return requestID
    }
  }

  /// The pending refund settled as the provider said, its event, the call's ending and the
  /// key's answer, in one statement, while the refund is pending and the key still the
  /// owner's. The key is locked before the refund, the order of every other writer of both (the
  /// general path fences the key first), so a takeover settling the same refund cannot deadlock
  /// with it. A refund written without its key finished would be a half-write: dividing by zero
  /// aborts the whole statement instead.
  struct FinishPending: PostgresPreparedStatement {
    static let sql = """
      WITH owned AS (
        SELECT 1 FROM idempotency_keys
        WHERE merchant_id = $5::text AND idempotency_key = $6::text AND owner_token = $7::bigint AND recovery_point <> 'finished'
        FOR UPDATE
      ), updated AS (
        UPDATE refunds SET status = $1::text, provider_refund_id = $2::text,
          update_time = timestamptz '2000-01-01 00:00:00+00' + interval '1 microsecond' * $3::bigint
        WHERE refund_id = $4::text AND (merchant_id = $5::text AND status = 'pending') IS TRUE AND EXISTS (SELECT 1 FROM owned)
        RETURNING refund_id, merchant_id, payment_id
      ), event AS (
        INSERT INTO payment_events (merchant_id, payment_id, refund_id, type, amount_minor)
        SELECT merchant_id, payment_id, refund_id, 'refund_succeeded', $8::bigint FROM updated WHERE $9::boolean
        RETURNING tx::text::bigint AS tx
      ), call AS (
        UPDATE provider_requests SET outcome = $10::text, finish_time = now()
        WHERE request_id = $11::bigint AND EXISTS (SELECT 1 FROM updated)
        RETURNING 1
      ), finished AS (
        UPDATE idempotency_keys SET recovery_point = 'finished', locked_until = NULL, payment_id = $12::text, refund_id = $4::text,
          response_code = $13::integer, response_message = $14::bytea, response_details = $15::bytea, update_time = now()
        WHERE merchant_id = $5::text AND idempotency_key = $6::text AND owner_token = $7::bigint AND EXISTS (SELECT 1 FROM updated)
        RETURNING 1
      )
      SELECT (SELECT count(*) FROM updated)::bigint
          / (CASE WHEN (SELECT count(*) FROM updated) = (SELECT count(*) FROM finished) THEN 1 ELSE 0 END),
        (SELECT tx FROM event)
      """
    typealias Row = (Int64, Int64?)

    /// Whether the refund was written, and the transaction of its event if one was.
    typealias Answer = GroupCommit.Finished

    let refund: RefundRecord
    let owner: KeyOwner
    let response: StoredResponse
    let call: ProviderCallEnd

    func makeBindings() throws -> PostgresBindings {
      var binds = PostgresBindings()
      binds.append(self.refund.status.rawValue)
      binds.append(self.refund.providerRefundID)
      binds.append(PostgresTime.microseconds(self.refund.updateTime))
      binds.append(self.refund.id.rawValue)
      binds.append(self.refund.merchantID.rawValue)
      binds.append(self.owner.key)
      binds.append(self.owner.token)
      binds.append(self.refund.amount.minorUnits)
      binds.append(self.refund.status == .succeeded)
      binds.append(self.call.outcome.rawValue)
      binds.append(self.call.requestID)
      binds.append(self.refund.paymentID.rawValue)
      binds.append(Int32(self.response.code))
      binds.append(ByteBuffer(bytes: self.response.message))
      binds.append(ByteBuffer(bytes: self.response.details))
      return binds
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
  }

  /// `FinishPending` for several refunds at once, in one statement and one transaction. Each
  /// refund is written only under its own conditions (still pending, its key still its owner's);
  /// the others write nothing and return no row. The keys are locked first, as alone. Sent
  /// unnamed, as `FinishProcessingBatch` is.
  struct FinishPendingBatch {
    static let sql = """
      WITH input AS (
        SELECT * FROM unnest($1::text[], $2::text[], $3::boolean[], $4::bigint[], $5::text[], $6::text[], $7::text[], $8::bigint[],
          $9::bigint[], $10::boolean[], $11::text[], $12::bigint[], $13::text[], $14::integer[], $15::bytea[], $16::bytea[])
          AS i (status, provider_refund_id, has_provider_refund_id, update_micros, refund_id, merchant_id, idempotency_key,
            owner_token, amount_minor, succeeded, outcome, request_id, payment_id, response_code, response_message,
            response_details)
      ), owned AS (
        SELECT i.refund_id FROM input i JOIN idempotency_keys k
          ON k.merchant_id = i.merchant_id AND k.idempotency_key = i.idempotency_key AND k.owner_token = i.owner_token
            AND k.recovery_point <> 'finished'
        FOR UPDATE OF k
      ), updated AS (
        UPDATE refunds r SET status = i.status,
          provider_refund_id = CASE WHEN i.has_provider_refund_id THEN i.provider_refund_id END,
          update_time = timestamptz '2000-01-01 00:00:00+00' + interval '1 microsecond' * i.update_micros
        FROM input i
        WHERE r.refund_id = i.refund_id AND (r.merchant_id = i.merchant_id AND r.status = 'pending') IS TRUE
          AND i.refund_id IN (SELECT refund_id FROM owned)
        RETURNING r.refund_id, r.merchant_id, r.payment_id
      ), event AS (
        INSERT INTO payment_events (merchant_id, payment_id, refund_id, type, amount_minor)
        SELECT u.merchant_id, u.payment_id, u.refund_id, 'refund_succeeded', i.amount_minor
        FROM updated u JOIN input i USING (refund_id) WHERE i.succeeded
        RETURNING refund_id, tx::text::bigint AS tx
      ), call AS (
        UPDATE provider_requests p SET outcome = i.outcome, finish_time = now()
        FROM input i
        WHERE p.request_id = i.request_id AND i.refund_id IN (SELECT refund_id FROM updated)
        RETURNING 1
      ), finished AS (
        UPDATE idempotency_keys k SET recovery_point = 'finished', locked_until = NULL, payment_id = i.payment_id,
          refund_id = i.refund_id, response_code = i.response_code, response_message = i.response_message,
          response_details = i.response_details, update_time = now()
        FROM input i
        WHERE k.merchant_id = i.merchant_id AND k.idempotency_key = i.idempotency_key AND k.owner_token = i.owner_token
          AND i.refund_id IN (SELECT refund_id FROM updated)
        RETURNING 1
      )
      -- A refund written without its key finished would be a half-write: divide by zero to
      -- abort the whole statement instead.
      SELECT u.refund_id, e.tx,
        1 / (CASE WHEN (SELECT count(*) FROM updated) = (SELECT count(*) FROM finished) THEN 1 ELSE 0 END)
      FROM updated u LEFT JOIN event e USING (refund_id)
      """
    let requests: [FinishPending]

    var query: PostgresQuery {
      get throws {
        let requests = self.requests
        var binds = PostgresBindings()
        binds.append(requests.map(\.refund.status.rawValue))
        binds.append(requests.map { $0.refund.providerRefundID ?? "" })
        binds.append(requests.map { $0.refund.providerRefundID != nil })
        binds.append(requests.map { PostgresTime.microseconds($0.refund.updateTime) })
        binds.append(requests.map(\.refund.id.rawValue))
        binds.append(requests.map(\.refund.merchantID.rawValue))
        binds.append(requests.map(\.owner.key))
        binds.append(requests.map(\.owner.token))
        binds.append(requests.map(\.refund.amount.minorUnits))
        binds.append(requests.map { $0.refund.status == .succeeded })
        binds.append(requests.map(\.call.outcome.rawValue))
        binds.append(requests.map(\.call.requestID))
        binds.append(requests.map(\.refund.paymentID.rawValue))
        binds.append(requests.map { Int32($0.response.code) })
        binds.append(requests.map { ByteBuffer(bytes: $0.response.message) })
        binds.append(requests.map { ByteBuffer(bytes: $0.response.details) })
        return PostgresQuery(unsafeSQL: Self.sql, binds: binds)
      }
    }
  }

  /// Writes `requests` as one statement (`FinishPending` alone, `FinishPendingBatch` for more). A
  /// batch the server refused wrote nothing: its requests are then written one by one, so that
  /// each gets its own answer or error. One alone that aborted itself (its key taken over between
  /// its checks) wrote nothing either: the general path finds out what happened.
  static func finishPending(
    _ requests: [FinishPending], client: PostgresClient, logger: Logger
  ) async throws -> [Result<FinishPending.Answer, any Error>] {
    // Keys locked in one order by every batch.
    try await GroupCommit.finish(
      requests, client: client, logger: logger, id: \.refund.id.rawValue,
      order: { ($0.owner.merchant.rawValue, $0.owner.key) < ($1.owner.merchant.rawValue, $1.owner.key) }
    ) { try FinishPendingBatch(requests: $0).query }
  }

  public func finishPending(
    _ refund: RefundRecord, owner: KeyOwner, response: StoredResponse, call: ProviderCallEnd
  ) async throws -> Bool {
    precondition(owner.merchant == refund.merchantID, "the key of this refund's merchant")
    precondition(refund.status != .failed, "a failed refund releases its amount: the general path settles it")
    let statement = FinishPending(refund: refund, owner: owner, response: response, call: call)
    return try await self.database.run("refunds.finish_pending", recordsMovements: true) {
      let answer = try await self.finishes.submit(statement)
      if answer.written, refund.status == .succeeded { MoneyMovements.record(.refund(refund)) }
      if let eventTransaction = answer.eventTransaction { WrittenEvents.record(transaction: eventTransaction) }
      return answer.written
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
