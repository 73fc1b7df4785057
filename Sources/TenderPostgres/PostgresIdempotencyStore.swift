import Foundation
public import Logging
public import PostgresNIO
public import TenderCore
public import Tracing

/// `IdempotencyStore` on PostgreSQL (the `idempotency_keys` table of migrations 3 and 6). Every
/// statement that writes the table is here, those other stores run inside their own transactions
/// (`fence`, `apply`) included; elsewhere it is only read in conditions (an operation still open),
/// and written where one statement does two tables' work in one round trip: the fast path's in
/// PostgresPaymentStore and PostgresProviderCallLog's `begin`.
public struct PostgresIdempotencyStore: IdempotencyStore {
  private let client: PostgresClient
  private let logger: Logger
  private let database: DatabaseCalls

  public init(
    client: PostgresClient, logger: Logger, tracer: any Tracer = NoOpTracer(),
    callTimeout: Duration? = PostgresStores.defaultCallTimeout
  ) {
    self.client = client
    self.logger = logger
    self.database = DatabaseCalls(tracer: tracer, timeout: callTimeout)
  }

  static func milliseconds(_ duration: Duration) -> Int64 {
    duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
  }

  public func claim(_ request: IdempotencyRequest, lockFor: Duration) async throws -> IdempotencyClaim {
    let logger = self.logger
    let lock = Self.milliseconds(lockFor)
    return try await self.database.run("idempotency.claim") {
      try await unwrappingTransactionError {
        try await self.client.withTransaction(logger: logger) { connection -> IdempotencyClaim in
          // A key freed between the insert and the read (its owner released it: nothing of its
          // operation happened) is gone when read; the next insert then starts it afresh. One
          // another claim took over first is read again (and found in use).
          for _ in 0..<3 {
            // Of concurrent inserts of one key, one commits; the others wait for it here, then
            // insert nothing and read what it wrote.
            let inserted = try await connection.query(
              """
              INSERT INTO idempotency_keys (merchant_id, idempotency_key, method, request_fingerprint, recovery_point, locked_until)
              VALUES (\(request.merchant.rawValue), \(request.key), \(request.method), \(ByteBuffer(bytes: request.fingerprint)), 'started',
                      now() + \(lock) * interval '1 millisecond')
              ON CONFLICT (merchant_id, idempotency_key) DO NOTHING
              RETURNING locked_until, create_time, owner_token
              """,
              logger: logger
            )
            for try await (lockedUntil, created, token) in inserted.decode((Date, Date, Int64).self) {
              return .started(
                IdempotencyRecord(
                  request: request, recoveryPoint: .started, paymentID: nil, refundID: nil, lockedUntil: lockedUntil,
                  createTime: created, ownerToken: token
                )
              )
            }
            if let claim = try await Self.claimExisting(request, lock: lock, connection, logger: logger) {
              return claim
            }
          }
          throw StoredDataError(what: "idempotency record vanished during claim")
        }
      }
    }
  }

  /// The claim of a key that exists: replayed, reused, in use, or taken over (its lock expired);
  /// nil when it is gone (freed since the insert looked) or another claim took it over first.
  ///
  /// The record is read without a row lock, so concurrent claims of a key in use (a client's
  /// retries, a stampede) do not queue behind each other: the answer is decided from the
  /// committed record, and only a takeover writes, fenced by the owner token it read.
  private static func claimExisting(
    _ request: IdempotencyRequest, lock: Int64, _ connection: PostgresConnection, logger: Logger
  ) async throws -> IdempotencyClaim? {
    let rows = try await connection.query(
      """
      SELECT method, request_fingerprint, recovery_point, locked_until > now() AS locked, owner_token,
             response_code, response_message, response_details
      FROM idempotency_keys WHERE merchant_id = \(request.merchant.rawValue) AND idempotency_key = \(request.key)
      """,
      logger: logger
    )
    for try await row in rows {
      let r = row.makeRandomAccess()
      let method = try r["method"].decode(String.self)
      let fingerprint = Array(buffer: try r["request_fingerprint"].decode(ByteBuffer.self))
      guard method == request.method, fingerprint == request.fingerprint else { return .reused }
      guard let point = RecoveryPoint(rawValue: try r["recovery_point"].decode(String.self)) else {
        throw StoredDataError(what: "recovery point")
      }
      if point == .finished {
        return .replay(
          StoredResponse(
            code: try r["response_code"].decode(Int.self),
            message: try r["response_message"].decode(ByteBuffer?.self).map { Array(buffer: $0) } ?? [],
            details: try r["response_details"].decode(ByteBuffer?.self).map { Array(buffer: $0) } ?? []
          )
        )
      }
      if try r["locked"].decode(Bool?.self) == true { return .inUse }
      // The lock expired: whoever held it crashed or gave up. Take it over under a new owner
      // token, so the previous owner's later writes change nothing — unless, since the read,
      // another claim took it over, its owner finished or freed it, or renewed its lock (then
      // nothing is written and the claim looks again).
      let seen = try r["owner_token"].decode(Int64.self)
      let relocked = try await connection.query(
        """
        UPDATE idempotency_keys SET locked_until = now() + \(lock) * interval '1 millisecond', owner_token = owner_token + 1, update_time = now()
        WHERE merchant_id = \(request.merchant.rawValue) AND idempotency_key = \(request.key) AND owner_token = \(seen)
          AND recovery_point <> 'finished' AND (locked_until IS NULL OR locked_until <= now())
        RETURNING recovery_point, locked_until, owner_token, payment_id, refund_id, create_time, provider_attempted
        """,
        logger: logger
      )
      for try await taken in relocked {
        let t = taken.makeRandomAccess()
        // What the previous owner wrote last, read under the takeover's row lock.
        guard let resumed = RecoveryPoint(rawValue: try t["recovery_point"].decode(String.self)) else {
          throw StoredDataError(what: "recovery point")
        }
        return .resumed(
          IdempotencyRecord(
            request: request,
            recoveryPoint: resumed,
            paymentID: try t["payment_id"].decode(String?.self).map(PaymentID.init(unchecked:)),
            refundID: try t["refund_id"].decode(String?.self).map(RefundID.init(unchecked:)),
            lockedUntil: try t["locked_until"].decode(Date?.self),
            createTime: try t["create_time"].decode(Date.self),
            ownerToken: try t["owner_token"].decode(Int64.self),
            providerAttempted: try t["provider_attempted"].decode(Bool.self)
          )
        )
      }
      return nil
    }
    return nil
  }

  public func finish(_ owner: KeyOwner, response: StoredResponse) async throws {
    try await self.database.run("idempotency.finish") {
      let rows = try await self.client.query(
        """
        UPDATE idempotency_keys SET recovery_point = 'finished', locked_until = NULL, response_code = \(response.code),
          response_message = \(ByteBuffer(bytes: response.message)), response_details = \(ByteBuffer(bytes: response.details)), update_time = now()
        WHERE merchant_id = \(owner.merchant.rawValue) AND idempotency_key = \(owner.key) AND owner_token = \(owner.token)
          AND recovery_point <> 'finished'
        RETURNING 1
        """,
        logger: self.logger
      )
      guard try await rows.decode(Int.self).reduce(0, +) == 1 else { throw FencedOut(owner) }
    }
  }

  public func release(_ owner: KeyOwner) async throws {
    try await self.database.run("idempotency.release") {
      let rows = try await self.client.query(
        """
        DELETE FROM idempotency_keys WHERE merchant_id = \(owner.merchant.rawValue) AND idempotency_key = \(owner.key)
          AND owner_token = \(owner.token) AND recovery_point <> 'finished'
        RETURNING 1
        """,
        logger: self.logger
      )
      guard try await rows.decode(Int.self).reduce(0, +) == 1 else { throw FencedOut(owner) }
    }
  }

  public func extend(_ owner: KeyOwner, lockFor: Duration) async throws -> Bool {
    try await self.database.run("idempotency.extend") {
      let rows = try await self.client.query(
        """
        UPDATE idempotency_keys SET locked_until = now() + \(Self.milliseconds(lockFor)) * interval '1 millisecond'
        WHERE merchant_id = \(owner.merchant.rawValue) AND idempotency_key = \(owner.key) AND owner_token = \(owner.token)
          AND recovery_point <> 'finished'
        RETURNING 1
        """,
        logger: self.logger
      )
      return try await rows.decode(Int.self).reduce(0, +) == 1
    }
  }

  public func answer(merchant: MerchantID, key: String) async throws -> StoredResponse? {
    try await self.database.run("idempotency.answer") {
      let rows = try await self.client.query(
        """
        SELECT response_code, response_message, response_details FROM idempotency_keys
        WHERE merchant_id = \(merchant.rawValue) AND idempotency_key = \(key) AND recovery_point = 'finished'
        """,
        logger: self.logger
      )
      for try await (code, message, details) in rows.decode((Int, ByteBuffer?, ByteBuffer?).self) {
        return StoredResponse(
          code: code, message: message.map { Array(buffer: $0) } ?? [], details: details.map { Array(buffer: $0) } ?? []
        )
      }
      return nil
    }
  }

  public func stale(methods: [String]?, limit: Int) async throws -> [IdempotencyRecord] {
    try await self.database.run("idempotency.stale") {
      let rows = try await self.client.query(
        """
        SELECT merchant_id, idempotency_key, method, request_fingerprint, recovery_point, locked_until, payment_id, refund_id, create_time,
          owner_token, provider_attempted
        FROM idempotency_keys WHERE recovery_point <> 'finished' AND (locked_until IS NULL OR locked_until <= now())
          AND (\(methods == nil) OR method = ANY(\(methods ?? [])::text[]))
        ORDER BY locked_until NULLS FIRST LIMIT \(limit)
        """,
        logger: self.logger
      )
      var records: [IdempotencyRecord] = []
      for try await (merchant, key, method, fingerprint, point, lockedUntil, payment, refund, created, token, attempted)
        in rows.decode(
          (String, String, String, ByteBuffer, String, Date?, String?, String?, Date, Int64, Bool).self
        )
      {
        guard let point = RecoveryPoint(rawValue: point) else { throw StoredDataError(what: "recovery point") }
        records.append(
          IdempotencyRecord(
            request: IdempotencyRequest(
              merchant: MerchantID(unchecked: merchant), key: key, method: method,
              fingerprint: Array(buffer: fingerprint)),
            recoveryPoint: point,
            paymentID: payment.map(PaymentID.init(unchecked:)),
            refundID: refund.map(RefundID.init(unchecked:)),
            lockedUntil: lockedUntil,
            createTime: created,
            ownerToken: token,
            providerAttempted: attempted
          )
        )
      }
      return records
    }
  }

  public func reap(olderThan age: Duration) async throws -> Int {
    let milliseconds = max(Self.milliseconds(age), 24 * 3600 * 1000)
    return try await self.database.run("idempotency.reap") {
      // In batches along the age index, so one round never holds many row locks or a long
      // transaction (which would also hold back the event feed).
      let batch = 5_000
      var total = 0
      while true {
        let rows = try await self.client.query(
          """
          DELETE FROM idempotency_keys WHERE (merchant_id, idempotency_key) IN (
            SELECT merchant_id, idempotency_key FROM idempotency_keys
            WHERE recovery_point = 'finished' AND create_time < now() - \(milliseconds) * interval '1 millisecond'
            ORDER BY create_time LIMIT \(batch)
          )
          RETURNING idempotency_key
          """,
          logger: self.logger
        )
        var count = 0
        for try await _ in rows.decode(String.self) { count += 1 }
        total += count
        if count < batch { return total }
      }
    }
  }
}

// The statements of other stores' transactions on a key: fencing and moving it a step.
extension PostgresIdempotencyStore {
  /// Locks the key's record for the rest of the transaction, first of all the transaction's
  /// locks (so writers of one operation never deadlock), if `owner` still owns it; otherwise the
  /// transaction rolls back with `FencedOut`.
  static func fence(_ owner: KeyOwner, _ connection: PostgresConnection, logger: Logger) async throws {
    let rows = try await connection.query(
      """
      SELECT 1 FROM idempotency_keys
      WHERE merchant_id = \(owner.merchant.rawValue) AND idempotency_key = \(owner.key) AND owner_token = \(owner.token)
        AND recovery_point <> 'finished'
      FOR UPDATE
      """,
      logger: logger
    )
    guard try await rows.decode(Int.self).reduce(0, +) == 1 else { throw FencedOut(owner) }
  }

  /// Moves the idempotency record (locked by `fence` earlier in the transaction) as `step` says,
  /// naming the payment (and refund) it concerns, storing the response made from `record` when
  /// finished, and records how the provider call the step applies ended.
  static func apply<Record>(
    _ step: IdempotencyStep<Record>,
    record: Record,
    payment: PaymentID,
    refund: RefundID?,
    _ connection: PostgresConnection,
    logger: Logger
  ) async throws {
    if let call = step.providerCall { try await PostgresProviderCallLog.finish(call, connection, logger: logger) }
    let owner = step.owner
    switch step.action {
    case .finish(let makeResponse):
      let response = try makeResponse(record)
      try await connection.query(
        """
        UPDATE idempotency_keys SET recovery_point = 'finished', locked_until = NULL, payment_id = \(payment.rawValue),
          refund_id = coalesce(\(refund?.rawValue), refund_id), response_code = \(response.code),
          response_message = \(ByteBuffer(bytes: response.message)), response_details = \(ByteBuffer(bytes: response.details)), update_time = now()
        WHERE merchant_id = \(owner.merchant.rawValue) AND idempotency_key = \(owner.key) AND owner_token = \(owner.token)
        """,
        logger: logger
      )
    case .advance(let point):
      try await connection.query(
        """
        UPDATE idempotency_keys SET recovery_point = \(point.rawValue), payment_id = \(payment.rawValue),
          refund_id = coalesce(\(refund?.rawValue), refund_id), update_time = now()
        WHERE merchant_id = \(owner.merchant.rawValue) AND idempotency_key = \(owner.key) AND owner_token = \(owner.token)
        """,
        logger: logger
      )
    case .release:
      try await connection.query(
        "DELETE FROM idempotency_keys WHERE merchant_id = \(owner.merchant.rawValue) AND idempotency_key = \(owner.key) AND owner_token = \(owner.token)",
        logger: logger
      )
    }
  }
}
