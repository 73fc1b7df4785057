import Foundation
public import Logging
public import PostgresNIO
public import TenderCore
public import Tracing

/// `PaymentStore` on PostgreSQL. Every statement names the merchant; constraints in the schema
/// back the domain's rules (see migration 3).
public struct PostgresPaymentStore: PaymentStore, KeyedPaymentCreation {
  private let client: PostgresClient
  private let logger: Logger
  private let database: DatabaseCalls
  /// Group commit of the two statements of new keyed payments (see `StatementBatcher`).
  private let claims: StatementBatcher<InsertClaiming, InsertClaiming.Row?>
  private let finishes: StatementBatcher<FinishProcessing, FinishProcessing.Answer>
  /// Reads of one payment by id that arrive while others are being read are read together, as
  /// one statement (see `StatementBatcher`; a read waits on no lock, so a short stall).
  private let reads: StatementBatcher<PaymentByID, PaymentRecord?>

  /// The most requests one statement carries.
  static let largestBatch = 32

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
      "payment_claims", lanes: writeLanes, stall: writeStall, largest: Self.largestBatch, timeout: callTimeout,
      reports: writeBatches
    ) {
      try await Self.insertClaiming($0, client: client, logger: logger)
    }
    self.finishes = StatementBatcher(
      "payment_finishes", lanes: writeLanes, stall: writeStall, largest: Self.largestBatch, timeout: callTimeout,
      reports: writeBatches
    ) {
      try await Self.finishProcessing($0, client: client, logger: logger)
    }
    self.reads = StatementBatcher(
      "payment_reads", lanes: 2, stall: .milliseconds(5), largest: Self.largestRead, timeout: callTimeout
    ) {
      try await Self.read($0, client: client, logger: logger)
    }
  }

  /// The most reads one statement carries.
  static let largestRead = 64

  static let columns = """
    payment_id, merchant_id, status, capture_method, currency, amount_minor, capturable_minor, captured_minor,
    refunded_minor, failure_reason, payment_method, customer_reference, description, metadata::text AS metadata,
    provider_payment_id, create_time, update_time, (extract(epoch FROM create_time) * 1000000)::bigint AS create_micros
    """

  public func insert(_ payment: PaymentRecord, step: IdempotencyStep<PaymentRecord>?) async throws -> PaymentEvent {
    let logger = self.logger
    return try await self.database.run("payments.insert", recordsMovements: true) {
      try await unwrappingTransactionError {
        try await self.client.withTransaction(logger: logger) { connection in
          if let step { try await PostgresIdempotencyStore.fence(step.owner, connection, logger: logger) }
          let ledger = payment.ledger
          try await connection.query(
            """
            INSERT INTO payments (payment_id, merchant_id, status, capture_method, currency, amount_minor, capturable_minor,
              captured_minor, refunded_minor, failure_reason, payment_method, customer_reference, description, metadata,
              provider_payment_id, create_time, update_time)
            VALUES (\(payment.id.rawValue), \(payment.merchantID.rawValue), \(ledger.status.rawValue), \(ledger.captureMethod.rawValue),
              \(ledger.amount.currency.code), \(ledger.amount.minorUnits), \(ledger.capturableMinorUnits), \(ledger.capturedMinorUnits),
              \(ledger.refundedMinorUnits), \(ledger.failureReason?.rawValue), \(payment.paymentMethod), \(payment.customerReference),
              \(payment.description), \(try Self.json(payment.metadata))::jsonb, \(payment.providerPaymentID), \(payment.createTime), \(payment.updateTime))
            """,
            logger: logger
          )
          let event = try await Self.appendEvent(
            connection, logger: logger, merchant: payment.merchantID, payment: payment.id, refund: nil,
            type: .paymentCreated, from: nil, to: ledger.status, amount: ledger.amount.minorUnits
          )
          MoneyMovements.record(.payment(payment))
          if let step {
            try await PostgresIdempotencyStore.apply(
              step, record: payment, payment: payment.id, refund: nil, connection, logger: logger)
          }
          return event
        }
      }
    }
  }

  // The hot path's statements are named prepared statements: parsed and planned once per
  // connection, not on every call. Every parameter carries a cast, so its type never depends on
  // inference.

  struct InsertClaiming: PostgresPreparedStatement {
    static let sql = """
      WITH claimed AS (
        INSERT INTO idempotency_keys (merchant_id, idempotency_key, method, request_fingerprint, recovery_point, locked_until, payment_id,
          provider_attempted)
        VALUES ($1::text, $2::text, $3::text, $4::bytea, 'payment_created', now() + $5::bigint * interval '1 millisecond', $6::text, true)
        ON CONFLICT (merchant_id, idempotency_key) DO NOTHING
        RETURNING merchant_id
      ), inserted AS (
        INSERT INTO payments (payment_id, merchant_id, status, capture_method, currency, amount_minor, payment_method,
          customer_reference, description, metadata, create_time, update_time)
        SELECT $6::text, merchant_id, 'processing', $7::text, $8::text, $9::bigint, $10::text, $11::text, $12::text, $13::text::jsonb,
          timestamptz '2000-01-01 00:00:00+00' + interval '1 microsecond' * $14::bigint,
          timestamptz '2000-01-01 00:00:00+00' + interval '1 microsecond' * $14::bigint
        FROM claimed
        RETURNING payment_id, merchant_id
      ), call AS (
        INSERT INTO provider_requests (merchant_id, payment_id, operation, provider_idempotency_key, outcome, amount_minor)
        SELECT merchant_id, payment_id, 'create_payment', $15::text, 'unknown', $9::bigint FROM inserted
        RETURNING request_id
      ), event AS (
        INSERT INTO payment_events (merchant_id, payment_id, type, to_status, amount_minor)
        SELECT merchant_id, payment_id, 'payment_created', 'processing', $9::bigint FROM inserted
        RETURNING tx::text::bigint AS tx, event_id, create_time
      )
      SELECT event.tx, event.event_id, event.create_time, call.request_id FROM event, call
      """
    typealias Row = (Int64, Int64, Date, Int64)

    let payment: PaymentRecord
    let request: IdempotencyRequest
    let lockMilliseconds: Int64
    let providerKey: String

    func makeBindings() throws -> PostgresBindings {
      let ledger = self.payment.ledger
      var binds = PostgresBindings()
      binds.append(self.request.merchant.rawValue)
      binds.append(self.request.key)
      binds.append(self.request.method)
      binds.append(ByteBuffer(bytes: self.request.fingerprint))
      binds.append(self.lockMilliseconds)
      binds.append(self.payment.id.rawValue)
      binds.append(ledger.captureMethod.rawValue)
      binds.append(ledger.amount.currency.code)
      binds.append(ledger.amount.minorUnits)
      binds.append(self.payment.paymentMethod)
      binds.append(self.payment.customerReference)
      binds.append(self.payment.description)
      binds.append(try PostgresPaymentStore.json(self.payment.metadata))
      binds.append(PostgresTime.microseconds(self.payment.createTime))
      binds.append(self.providerKey)
      return binds
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
  }

  /// `InsertClaiming` for several new keys at once, in one statement and one transaction: each key
  /// that is free is claimed with its payment, the call's record and the event; a key that exists
  /// (or a second request of the same key in the batch) writes nothing and returns no row.
  struct InsertClaimingBatch: PostgresPreparedStatement {
    static let sql = """
      WITH input AS (
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::bigint[], $6::text[], $7::text[], $8::text[],
          $9::bigint[], $10::text[], $11::text[], $12::text[], $13::text[], $14::bigint[], $15::text[])
          AS i (merchant_id, idempotency_key, method, fingerprint, lock_milliseconds, payment_id, capture_method, currency,
            amount_minor, payment_method, customer_reference, description, metadata, create_micros, provider_key)
      ), claimed AS (
        INSERT INTO idempotency_keys (merchant_id, idempotency_key, method, request_fingerprint, recovery_point, locked_until, payment_id,
          provider_attempted)
        SELECT merchant_id, idempotency_key, method, fingerprint, 'payment_created',
          now() + lock_milliseconds * interval '1 millisecond', payment_id, true
        FROM input
        ON CONFLICT (merchant_id, idempotency_key) DO NOTHING
        RETURNING payment_id
      ), inserted AS (
        INSERT INTO payments (payment_id, merchant_id, status, capture_method, currency, amount_minor, payment_method,
          customer_reference, description, metadata, create_time, update_time)
        SELECT i.payment_id, i.merchant_id, 'processing', i.capture_method, i.currency, i.amount_minor, i.payment_method,
          i.customer_reference, i.description, i.metadata::jsonb,
          timestamptz '2000-01-01 00:00:00+00' + interval '1 microsecond' * i.create_micros,
          timestamptz '2000-01-01 00:00:00+00' + interval '1 microsecond' * i.create_micros
        FROM input i JOIN claimed USING (payment_id)
        RETURNING payment_id, merchant_id, amount_minor
      ), call AS (
        INSERT INTO provider_requests (merchant_id, payment_id, operation, provider_idempotency_key, outcome, amount_minor)
        SELECT n.merchant_id, n.payment_id, 'create_payment', i.provider_key, 'unknown', n.amount_minor
        FROM inserted n JOIN input i USING (payment_id)
        RETURNING payment_id, request_id
      ), event AS (
        INSERT INTO payment_events (merchant_id, payment_id, type, to_status, amount_minor)
        SELECT merchant_id, payment_id, 'payment_created', 'processing', amount_minor FROM inserted
        RETURNING payment_id, tx::text::bigint AS tx, event_id, create_time
      )
      SELECT event.payment_id, event.tx, event.event_id, event.create_time, call.request_id FROM event JOIN call USING (payment_id)
      """
    typealias Row = (String, Int64, Int64, Date, Int64)

    let requests: [InsertClaiming]

    func makeBindings() throws -> PostgresBindings {
      let requests = self.requests
      var binds = PostgresBindings()
      binds.append(requests.map(\.request.merchant.rawValue))
      binds.append(requests.map(\.request.key))
      binds.append(requests.map(\.request.method))
      binds.append(requests.map { ByteBuffer(bytes: $0.request.fingerprint) })
      binds.append(requests.map(\.lockMilliseconds))
      binds.append(requests.map(\.payment.id.rawValue))
      binds.append(requests.map(\.payment.ledger.captureMethod.rawValue))
      binds.append(requests.map(\.payment.ledger.amount.currency.code))
      binds.append(requests.map(\.payment.ledger.amount.minorUnits))
      binds.append(requests.map(\.payment.paymentMethod))
      binds.append(requests.map(\.payment.customerReference))
      binds.append(requests.map(\.payment.description))
      binds.append(try requests.map { try PostgresPaymentStore.json($0.payment.metadata) })
      binds.append(requests.map { PostgresTime.microseconds($0.payment.createTime) })
      binds.append(requests.map(\.providerKey))
      return binds
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
  }

  /// Writes `requests` as one statement (`InsertClaiming` alone, `InsertClaimingBatch` for more):
  /// each request's row, or nil when its key was not free. A batch the server refused (a deadlock
  /// with another replica's batch over the same keys, or an error of one request) wrote nothing:
  /// its requests are then written one by one, so that each gets its own answer or error. One
  /// alone that lost a deadlock wrote nothing either, and takes the general path.
  static func insertClaiming(
    _ requests: [InsertClaiming], client: PostgresClient, logger: Logger
  ) async throws -> [Result<InsertClaiming.Row?, any Error>] {
    @Sendable func alone(_ request: InsertClaiming) async throws -> InsertClaiming.Row? {
      do {
        for try await row in try await client.execute(request, logger: logger) { return row }
        return nil
      } catch let error as PSQLError where PostgresFailures.isFastPathRefusal(error) {
        return nil
      }
    }
    return try await GroupCommit.write(requests, alone: alone) { batch in
      // Keys claimed in one order by every batch, so two batches wait on each other's keys in
      // one direction only.
      let sorted = batch.sorted {
        ($0.request.merchant.rawValue, $0.request.key) < ($1.request.merchant.rawValue, $1.request.key)
      }
      var rows: [String: InsertClaiming.Row] = [:]
      for try await (payment, tx, id, time, requestID) in try await client.execute(
        InsertClaimingBatch(requests: sorted), logger: logger)
      {
        rows[payment] = (tx, id, time, requestID)
      }
      return batch.map { rows[$0.payment.id.rawValue] }
    }
  }

  public func insertClaiming(
    _ payment: PaymentRecord, request: IdempotencyRequest, lockFor: Duration, call: ProviderCall
  ) async throws -> (PaymentEvent, Int64)? {
    precondition(
      payment.merchantID == request.merchant && payment.ledger.status == .processing,
      "a new payment of the key's merchant")
    precondition(call.operation == .createPayment && call.payment == payment.id, "the call that creates this payment")
    let statement = InsertClaiming(
      payment: payment, request: request, lockMilliseconds: PostgresIdempotencyStore.milliseconds(lockFor),
      providerKey: call.providerKey)
    return try await self.database.run("payments.insert_claiming", recordsMovements: true) {
      // The key row names the payment inserted by the same statement; the foreign key is checked
      // at the end of the statement, when both exist. A key that exists already inserts nothing.
      guard let (tx, id, time, requestID) = try await self.claims.submit(statement) else { return nil }
      let event = PaymentEvent(
        position: EventPosition(transaction: tx, id: id), merchantID: payment.merchantID, paymentID: payment.id,
        refundID: nil,
        type: .paymentCreated, fromStatus: nil, toStatus: .processing,
        amountMinorUnits: payment.ledger.amount.minorUnits, createTime: time
      )
      MoneyMovements.record(.payment(payment))
      WrittenEvents.record(transaction: tx)
      return (event, requestID)
    }
  }

  /// The payment is found by its primary key alone: its other conditions are written `(…) IS TRUE`
  /// so that no index can serve them. As plain conditions they let the planner choose, about as
  /// cheap by the statistics, the open-payments index or a listing index, and then walk on every
  /// call the entries that finished payments leave there until VACUUM removes them (a third of
  /// PostgreSQL's CPU per payment under load).
  struct FinishProcessing: PostgresPreparedStatement {
    static let sql = """
      WITH updated AS (
        UPDATE payments SET status = $1::text, capturable_minor = $2::bigint, captured_minor = $3::bigint, refunded_minor = $4::bigint,
          failure_reason = $5::text, provider_payment_id = $6::text,
          update_time = timestamptz '2000-01-01 00:00:00+00' + interval '1 microsecond' * $7::bigint
        WHERE payment_id = $8::text AND (merchant_id = $9::text AND status = 'processing') IS TRUE
          AND EXISTS (
            SELECT 1 FROM idempotency_keys
            WHERE merchant_id = $9::text AND idempotency_key = $13::text AND owner_token = $19::bigint AND recovery_point <> 'finished'
          )
        RETURNING payment_id, merchant_id
      ), event AS (
        INSERT INTO payment_events (merchant_id, payment_id, type, from_status, to_status, amount_minor)
        SELECT merchant_id, payment_id, $10::text, 'processing', $1::text, $11::bigint FROM updated WHERE $12::boolean
        RETURNING tx::text::bigint AS tx
      ), call AS (
        UPDATE provider_requests SET outcome = $18::text, finish_time = now()
        WHERE request_id = $17::bigint AND EXISTS (SELECT 1 FROM updated)
        RETURNING 1
      ), finished AS (
        UPDATE idempotency_keys SET recovery_point = 'finished', locked_until = NULL, payment_id = $8::text,
          response_code = $14::integer, response_message = $15::bytea, response_details = $16::bytea, update_time = now()
        WHERE merchant_id = $9::text AND idempotency_key = $13::text AND owner_token = $19::bigint AND EXISTS (SELECT 1 FROM updated)
        RETURNING 1
      )
      -- A payment written without its key finished would be a half-write: divide by zero to
      -- abort the whole statement instead.
      SELECT (SELECT count(*) FROM updated)::bigint
        / (CASE WHEN (SELECT count(*) FROM updated) = (SELECT count(*) FROM finished) THEN 1 ELSE 0 END),
        (SELECT tx FROM event)
      """
    typealias Row = (Int64, Int64?)

    /// Whether the payment was written, and the transaction of its status event if one was.
    typealias Answer = GroupCommit.Finished

    let payment: PaymentRecord
    let owner: KeyOwner
    let response: StoredResponse
    let call: ProviderCallEnd

    func makeBindings() throws -> PostgresBindings {
      let ledger = self.payment.ledger
      var binds = PostgresBindings()
      binds.append(ledger.status.rawValue)
      binds.append(ledger.capturableMinorUnits)
      binds.append(ledger.capturedMinorUnits)
      binds.append(ledger.refundedMinorUnits)
      binds.append(ledger.failureReason?.rawValue)
      binds.append(self.payment.providerPaymentID)
      binds.append(PostgresTime.microseconds(self.payment.updateTime))
      binds.append(self.payment.id.rawValue)
      binds.append(self.payment.merchantID.rawValue)
      binds.append(PaymentEventType.entering(ledger.status).rawValue)
      binds.append(ledger.status == .succeeded ? ledger.capturedMinorUnits : nil)
      binds.append(ledger.status != .processing)
      binds.append(self.owner.key)
      binds.append(Int32(self.response.code))
      binds.append(ByteBuffer(bytes: self.response.message))
      binds.append(ByteBuffer(bytes: self.response.details))
      binds.append(self.call.requestID)
      binds.append(self.call.outcome.rawValue)
      binds.append(self.owner.token)
      return binds
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
  }

  /// `FinishProcessing` for several payments at once, in one statement and one transaction. Each
  /// payment is written only under its own conditions (still processing, its key still its
  /// owner's); the others write nothing and return no row. The half-write check covers them all:
  /// a payment written without its key finished aborts the whole statement.
  ///
  /// Sent unnamed, so it is planned for each batch, with the batch's size and the tables' as they
  /// are now. A prepared statement's generic plan, made once for ten requests while the tables
  /// were small, joins them by hashing whole tables, and keeps doing so as they grow until the
  /// next ANALYZE: under load a fresh database then spent more CPU on those scans than on the
  /// payments.
  struct FinishProcessingBatch {
    static let sql = """
      WITH input AS (
        SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[], $6::text[], $7::boolean[],
          $8::bigint[], $9::text[], $10::text[], $11::text[], $12::bigint[], $13::boolean[], $14::boolean[], $15::text[],
          $16::integer[], $17::bytea[], $18::bytea[], $19::bigint[], $20::text[], $21::bigint[])
          AS i (status, capturable_minor, captured_minor, refunded_minor, failure_reason, provider_payment_id,
            has_provider_payment_id, update_micros, payment_id, merchant_id, event_type, event_amount, has_event_amount,
            has_event, idempotency_key, response_code, response_message, response_details, request_id, outcome, owner_token)
      ), updated AS (
        UPDATE payments p SET status = i.status, capturable_minor = i.capturable_minor, captured_minor = i.captured_minor,
          refunded_minor = i.refunded_minor, failure_reason = NULLIF(i.failure_reason, ''),
          provider_payment_id = CASE WHEN i.has_provider_payment_id THEN i.provider_payment_id END,
          update_time = timestamptz '2000-01-01 00:00:00+00' + interval '1 microsecond' * i.update_micros
        FROM input i
        WHERE p.payment_id = i.payment_id AND (p.merchant_id = i.merchant_id AND p.status = 'processing') IS TRUE
          AND EXISTS (
            SELECT 1 FROM idempotency_keys k
            WHERE k.merchant_id = i.merchant_id AND k.idempotency_key = i.idempotency_key AND k.owner_token = i.owner_token
              AND k.recovery_point <> 'finished'
          )
        RETURNING p.payment_id, p.merchant_id
      ), event AS (
        INSERT INTO payment_events (merchant_id, payment_id, type, from_status, to_status, amount_minor)
        SELECT u.merchant_id, u.payment_id, i.event_type, 'processing', i.status,
          CASE WHEN i.has_event_amount THEN i.event_amount END
        FROM updated u JOIN input i USING (payment_id) WHERE i.has_event
        RETURNING payment_id, tx::text::bigint AS tx
      ), call AS (
        UPDATE provider_requests r SET outcome = i.outcome, finish_time = now()
        FROM input i
        WHERE r.request_id = i.request_id AND i.payment_id IN (SELECT payment_id FROM updated)
        RETURNING 1
      ), finished AS (
        UPDATE idempotency_keys k SET recovery_point = 'finished', locked_until = NULL, payment_id = i.payment_id,
          response_code = i.response_code, response_message = i.response_message, response_details = i.response_details,
          update_time = now()
        FROM input i
        WHERE k.merchant_id = i.merchant_id AND k.idempotency_key = i.idempotency_key AND k.owner_token = i.owner_token
          AND i.payment_id IN (SELECT payment_id FROM updated)
        RETURNING 1
      )
      -- A payment written without its key finished would be a half-write: divide by zero to
      -- abort the whole statement instead.
      SELECT u.payment_id, e.tx,
        1 / (CASE WHEN (SELECT count(*) FROM updated) = (SELECT count(*) FROM finished) THEN 1 ELSE 0 END)
      FROM updated u LEFT JOIN event e USING (payment_id)
      """
    let requests: [FinishProcessing]

    func makeBindings() throws -> PostgresBindings {
      let requests = self.requests
      let ledgers = requests.map(\.payment.ledger)
      var binds = PostgresBindings()
      binds.append(ledgers.map(\.status.rawValue))
      binds.append(ledgers.map(\.capturableMinorUnits))
      binds.append(ledgers.map(\.capturedMinorUnits))
      binds.append(ledgers.map(\.refundedMinorUnits))
      // No failure reason is the empty text: every reason is a non-empty name.
      binds.append(ledgers.map { $0.failureReason?.rawValue ?? "" })
      binds.append(requests.map { $0.payment.providerPaymentID ?? "" })
      binds.append(requests.map { $0.payment.providerPaymentID != nil })
      binds.append(requests.map { PostgresTime.microseconds($0.payment.updateTime) })
      binds.append(requests.map(\.payment.id.rawValue))
      binds.append(requests.map(\.payment.merchantID.rawValue))
      binds.append(ledgers.map { PaymentEventType.entering($0.status).rawValue })
      binds.append(ledgers.map { $0.status == .succeeded ? $0.capturedMinorUnits : 0 })
      binds.append(ledgers.map { $0.status == .succeeded })
      binds.append(ledgers.map { $0.status != .processing })
      binds.append(requests.map(\.owner.key))
      binds.append(requests.map { Int32($0.response.code) })
      binds.append(requests.map { ByteBuffer(bytes: $0.response.message) })
      binds.append(requests.map { ByteBuffer(bytes: $0.response.details) })
      binds.append(requests.map(\.call.requestID))
      binds.append(requests.map(\.call.outcome.rawValue))
      binds.append(requests.map(\.owner.token))
      return binds
    }

    var query: PostgresQuery {
      get throws { PostgresQuery(unsafeSQL: Self.sql, binds: try self.makeBindings()) }
    }
  }

  /// Writes `requests` as one statement (`FinishProcessing` alone, `FinishProcessingBatch` for
  /// more). A batch the server refused wrote nothing: its requests are then written one by one,
  /// so that each gets its own answer or error. One alone that aborted itself (its key taken over
  /// between its checks) or lost a deadlock (with a takeover's transaction, which locks the key
  /// before the payment where this statement locks the payment first) wrote nothing either: it
  /// takes the general path, which finds out what happened.
  static func finishProcessing(
    _ requests: [FinishProcessing], client: PostgresClient, logger: Logger
  ) async throws -> [Result<FinishProcessing.Answer, any Error>] {
    // Payments locked in one order by every batch.
    try await GroupCommit.finish(
      requests, client: client, logger: logger, id: \.payment.id.rawValue,
      order: { $0.payment.id.rawValue < $1.payment.id.rawValue }
    ) { try FinishProcessingBatch(requests: $0).query }
  }

  public func finishProcessing(
    _ payment: PaymentRecord, owner: KeyOwner, response: StoredResponse, call: ProviderCallEnd
  ) async throws -> Bool {
    precondition(owner.merchant == payment.merchantID, "the key of this payment's merchant")
    let statement = FinishProcessing(payment: payment, owner: owner, response: response, call: call)
    return try await self.database.run("payments.finish_processing", recordsMovements: true) {
      let answer = try await self.finishes.submit(statement)
      if answer.written, payment.ledger.status != .processing { MoneyMovements.record(.payment(payment)) }
      if let eventTransaction = answer.eventTransaction { WrittenEvents.record(transaction: eventTransaction) }
      return answer.written
    }
  }

  struct PaymentByID: PostgresPreparedStatement {
    static let sql =
      "SELECT \(PostgresPaymentStore.columns) FROM payments WHERE payment_id = $1::text AND merchant_id = $2::text"
    typealias Row = PaymentRecord

    let id: PaymentID
    let merchant: MerchantID

    func makeBindings() throws -> PostgresBindings {
      PostgresPaymentStore.binds(self.id.rawValue, self.merchant.rawValue)
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try PostgresPaymentStore.decode(row).0 }
  }

  /// The payments of several `PaymentByID`, as one statement, by primary key only: each row is
  /// then matched to the requests naming both its id and its merchant. A merchant condition here
  /// would let the planner's generic plan scan every entry of a merchant in a listing index (seen
  /// on a table still empty when the plan was made: a BitmapAnd with `payments_page_by_status`).
  struct PaymentsByIDs: PostgresPreparedStatement {
    static let sql = "SELECT \(PostgresPaymentStore.columns) FROM payments WHERE payment_id = ANY($1::text[])"
    typealias Row = PaymentRecord

    let ids: [String]

    func makeBindings() throws -> PostgresBindings {
      var binds = PostgresBindings()
      binds.append(self.ids)
      return binds
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try PostgresPaymentStore.decode(row).0 }
  }

  public func payment(_ id: PaymentID, merchant: MerchantID) async throws -> PaymentRecord? {
    try await self.database.run("payments.get") {
      try await self.reads.submit(PaymentByID(id: id, merchant: merchant))
    }
  }

  /// One read alone as `PaymentByID`; more as one `PaymentsByIDs`.
  static func read(
    _ requests: [PaymentByID], client: PostgresClient, logger: Logger
  ) async throws -> [Result<PaymentRecord?, any Error>] {
    try await GroupCommit.write(requests) { request in
      for try await record in try await client.execute(request, logger: logger) { return record }
      return nil
    } together: { batch in
      var found: [PaymentID: PaymentRecord] = [:]
      let statement = PaymentsByIDs(ids: batch.map(\.id.rawValue))
      for try await record in try await client.execute(statement, logger: logger) { found[record.id] = record }
      return batch.map { request in found[request.id].flatMap { $0.merchantID == request.merchant ? $0 : nil } }
    }
  }

  public func update(
    _ id: PaymentID,
    merchant: MerchantID,
    step: IdempotencyStep<PaymentRecord>?,
    _ change: @escaping @Sendable (inout PaymentRecord) throws -> Void
  ) async throws -> (PaymentRecord, PaymentEvent?)? {
    let logger = self.logger
    return try await self.database.run("payments.update", recordsMovements: true) {
      try await unwrappingTransactionError {
        try await self.client.withTransaction(logger: logger) { connection -> (PaymentRecord, PaymentEvent?)? in
          if let step { try await PostgresIdempotencyStore.fence(step.owner, connection, logger: logger) }
          guard let record = try await Self.lock(id, merchant: merchant, connection, logger: logger) else { return nil }
          return try await Self.change(record, connection, logger: logger, step: step, change)
        }
      }
    }
  }

  /// Applies `change` to `record` (locked by the caller's transaction) and stores the result with
  /// the event of any status change, then `step`; a change that leaves the payment as it was
  /// writes nothing of it.
  static func change(
    _ locked: PaymentRecord,
    _ connection: PostgresConnection,
    logger: Logger,
    step: IdempotencyStep<PaymentRecord>?,
    _ change: (inout PaymentRecord) throws -> Void
  ) async throws -> (PaymentRecord, PaymentEvent?) {
    var record = locked
    let before = record.ledger.status
    try change(&record)
    let ledger = record.ledger
    // A step that changes nothing of the payment (an answer stored for it) leaves its row alone.
    if record == locked {
      if let step {
        try await PostgresIdempotencyStore.apply(
          step, record: record, payment: record.id, refund: nil, connection, logger: logger)
      }
      return (record, nil)
    }
    let id = record.id
    let merchant = record.merchantID
    let updated = try await connection.query(
      """
      UPDATE payments SET status = \(ledger.status.rawValue), capturable_minor = \(ledger.capturableMinorUnits),
        captured_minor = \(ledger.capturedMinorUnits), refunded_minor = \(ledger.refundedMinorUnits),
        failure_reason = \(ledger.failureReason?.rawValue), provider_payment_id = \(record.providerPaymentID), update_time = now()
      WHERE payment_id = \(id.rawValue) AND merchant_id = \(merchant.rawValue)
      RETURNING update_time
      """,
      logger: logger
    )
    // The record as stored, at the database's precision.
    for try await time in updated.decode(Date.self) { record.updateTime = time }
    var event: PaymentEvent?
    if ledger.status != before {
      let amount: Int64? = ledger.status == .succeeded ? ledger.capturedMinorUnits : nil
      event = try await Self.appendEvent(
        connection, logger: logger, merchant: merchant, payment: id, refund: nil,
        type: .entering(ledger.status), from: before, to: ledger.status, amount: amount
      )
      MoneyMovements.record(.payment(record))
    }
    if let step {
      try await PostgresIdempotencyStore.apply(
        step, record: record, payment: record.id, refund: nil, connection, logger: logger)
    }
    return (record, event)
  }

  public func list(
    merchant: MerchantID, filter: PaymentFilter, pageSize: Int, after: PageCursor?
  ) async throws -> Page<PaymentRecord> {
    precondition((1...1000).contains(pageSize), "page size out of range")
    return try await self.database.run("payments.list") {
      var binds = PostgresBindings()
      binds.append(merchant.rawValue)
      var sql = "SELECT \(Self.columns) FROM payments WHERE merchant_id = $1"
      if !filter.statuses.isEmpty {
        binds.append(filter.statuses.map(\.rawValue))
        sql += " AND status = ANY($\(binds.count)::text[])"
      }
      if let reference = filter.customerReference {
        binds.append(reference)
        sql += " AND customer_reference = $\(binds.count) AND customer_reference <> ''"
      }
      if let from = filter.createdFrom {
        binds.append(from)
        sql += " AND create_time >= $\(binds.count)"
      }
      if let before = filter.createdBefore {
        binds.append(before)
        sql += " AND create_time < $\(binds.count)"
      }
      return try await Self.keysetPage(
        self.client, logger: self.logger, sql: sql, binds: binds, idColumn: "payment_id", pageSize: pageSize,
        after: after,
        decode: Self.decode, id: \.id.rawValue
      )
    }
  }

  public func events(merchant: MerchantID?, after position: EventPosition, limit: Int) async throws -> [PaymentEvent] {
    try await self.database.run("payments.events") {
      // Only transactions older than this statement's snapshot xmin: all of them have finished,
      // so no event can appear later at a position before the ones returned.
      let query: PostgresQuery =
        if let merchant {
          """
          SELECT tx::text::bigint, event_id, merchant_id, payment_id, refund_id, type, from_status, to_status, amount_minor, create_time
          FROM payment_events
          WHERE merchant_id = \(merchant.rawValue) AND (tx, event_id) > (\(String(position.transaction))::xid8, \(position.id))
            AND tx < pg_snapshot_xmin(pg_current_snapshot())
          ORDER BY tx, event_id LIMIT \(limit)
          """
        } else {
          """
          SELECT tx::text::bigint, event_id, merchant_id, payment_id, refund_id, type, from_status, to_status, amount_minor, create_time
          FROM payment_events
          WHERE (tx, event_id) > (\(String(position.transaction))::xid8, \(position.id))
            AND tx < pg_snapshot_xmin(pg_current_snapshot())
          ORDER BY tx, event_id LIMIT \(limit)
          """
        }
      let rows = try await self.client.query(query, logger: self.logger)
      var events: [PaymentEvent] = []
      for try await (tx, id, merchantID, paymentID, refundID, type, from, to, amount, created) in rows.decode(
        (Int64, Int64, String, String, String?, String, String?, String?, Int64?, Date).self
      ) {
        guard let type = PaymentEventType(rawValue: type) else { throw StoredDataError(what: "event type \(type)") }
        events.append(
          PaymentEvent(
            position: EventPosition(transaction: tx, id: id),
            merchantID: MerchantID(unchecked: merchantID),
            paymentID: PaymentID(unchecked: paymentID),
            refundID: refundID.map(RefundID.init(unchecked:)),
            type: type,
            fromStatus: from.flatMap(PaymentStatus.init(rawValue:)),
            toStatus: to.flatMap(PaymentStatus.init(rawValue:)),
            amountMinorUnits: amount,
            createTime: created
          )
        )
      }
      return events
    }
  }

  public func currentPosition() async throws -> EventPosition {
    try await self.database.run("payments.current_position") {
      // Transactions from xmin on are running or yet to start: their events come after this.
      let rows = try await self.client.query(
        "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint - 1", logger: self.logger)
      for try await transaction in rows.decode(Int64.self) {
        return EventPosition(transaction: transaction, id: Int64.max)
      }
      throw StoredDataError(what: "no snapshot")
    }
  }

  /// Records an event in the writing transaction; its position is that transaction and a new id.
  static func appendEvent(
    _ connection: PostgresConnection,
    logger: Logger,
    merchant: MerchantID,
    payment: PaymentID,
    refund: RefundID?,
    type: PaymentEventType,
    from: PaymentStatus?,
    to: PaymentStatus?,
    amount: Int64?
  ) async throws -> PaymentEvent {
    let rows = try await connection.query(
      """
      INSERT INTO payment_events (merchant_id, payment_id, refund_id, type, from_status, to_status, amount_minor)
      VALUES (\(merchant.rawValue), \(payment.rawValue), \(refund?.rawValue), \(type.rawValue), \(from?.rawValue), \(to?.rawValue), \(amount))
      RETURNING tx::text::bigint, event_id, create_time
      """,
      logger: logger
    )
    for try await (tx, id, created) in rows.decode((Int64, Int64, Date).self) {
      WrittenEvents.record(transaction: tx)
      return PaymentEvent(
        position: EventPosition(transaction: tx, id: id), merchantID: merchant, paymentID: payment, refundID: refund,
        type: type, fromStatus: from, toStatus: to, amountMinorUnits: amount, createTime: created
      )
    }
    throw StoredDataError(what: "no event position returned")
  }

  /// A newest-first keyset page: `sql` (a SELECT with its WHERE clause, selecting `create_micros`)
  /// continues strictly after the cursor in (create_time DESC, id DESC) order, at the microsecond
  /// precision PostgreSQL stores, one row more than the page to know whether another follows.
  static func keysetPage<Item: Sendable>(
    _ client: PostgresClient,
    logger: Logger,
    sql: String,
    binds: PostgresBindings,
    idColumn: String,
    pageSize: Int,
    after: PageCursor?,
    decode: (PostgresRow) throws -> (Item, Int64),
    id: (Item) -> String
  ) async throws -> Page<Item> {
    var sql = sql
    var binds = binds
    if let after {
      binds.append(after.createTimeMicroseconds)
      let micros = binds.count
      binds.append(after.id)
      sql +=
        " AND (create_time, \(idColumn)) < (timestamptz 'epoch' + $\(micros) * interval '1 microsecond', $\(binds.count))"
    }
    binds.append(pageSize + 1)
    sql += " ORDER BY create_time DESC, \(idColumn) DESC LIMIT $\(binds.count)"
    var rows: [(Item, Int64)] = []
    for try await row in try await client.query(PostgresQuery(unsafeSQL: sql, binds: binds), logger: logger) {
      rows.append(try decode(row))
    }
    let items = Array(rows.prefix(pageSize))
    let next = rows.count > pageSize ? items.last.map { PageCursor(createTimeMicroseconds: $0.1, id: id($0.0)) } : nil
    return Page(items: items.map(\.0), next: next)
  }

  /// The merchant's payment, locked until the transaction ends.
  static func lock(
    _ id: PaymentID, merchant: MerchantID, _ connection: PostgresConnection, logger: Logger
  ) async throws -> PaymentRecord? {
    let rows = try await connection.query(
      PostgresQuery(
        unsafeSQL: "SELECT \(Self.columns) FROM payments WHERE payment_id = $1 AND merchant_id = $2 FOR UPDATE",
        binds: Self.binds(id.rawValue, merchant.rawValue)
      ),
      logger: logger
    )
    for try await row in rows { return try Self.decode(row).0 }
    return nil
  }

  static func binds(_ values: String...) -> PostgresBindings {
    var binds = PostgresBindings()
    for value in values { binds.append(value) }
    return binds
  }

  static func json(_ metadata: [String: String]) throws -> String {
    String(decoding: try JSONSerialization.data(withJSONObject: metadata, options: [.sortedKeys]), as: UTF8.self)
  }

  static func decode(_ row: PostgresRow) throws -> (PaymentRecord, Int64) {
    let r = row.makeRandomAccess()
    let statusText = try r["status"].decode(String.self)
    let currencyCode = try r["currency"].decode(String.self)
    guard let status = PaymentStatus(rawValue: statusText),
      let method = CaptureMethod(rawValue: try r["capture_method"].decode(String.self)),
      let currency = Currency(code: currencyCode)
    else { throw StoredDataError(what: "payment status, capture method or currency") }
    let failure = try r["failure_reason"].decode(String?.self).flatMap(FailureReason.init(rawValue:))
    guard
      let ledger = PaymentLedger(
        status: status,
        amount: Money(minorUnits: try r["amount_minor"].decode(Int64.self), currency: currency),
        captureMethod: method,
        capturableMinorUnits: try r["capturable_minor"].decode(Int64.self),
        capturedMinorUnits: try r["captured_minor"].decode(Int64.self),
        refundedMinorUnits: try r["refunded_minor"].decode(Int64.self),
        failureReason: failure
      )
    else { throw StoredDataError(what: "payment amounts") }
    let metadataText = try r["metadata"].decode(String.self)
    let metadata = (try? JSONSerialization.jsonObject(with: Data(metadataText.utf8))) as? [String: String] ?? [:]
    let record = PaymentRecord(
      id: PaymentID(unchecked: try r["payment_id"].decode(String.self)),
      merchantID: MerchantID(unchecked: try r["merchant_id"].decode(String.self)),
      ledger: ledger,
      paymentMethod: try r["payment_method"].decode(String.self),
      customerReference: try r["customer_reference"].decode(String.self),
      description: try r["description"].decode(String.self),
      metadata: metadata,
      providerPaymentID: try r["provider_payment_id"].decode(String?.self),
      createTime: try r["create_time"].decode(Date.self),
      updateTime: try r["update_time"].decode(Date.self)
    )
    return (record, try r["create_micros"].decode(Int64.self))
  }
}

/// A stored row Tender cannot read back: a schema or data problem, never the caller's fault.
public struct StoredDataError: Error, CustomStringConvertible {
  public let what: String
  public var description: String { "unreadable stored data: \(self.what)" }
}
