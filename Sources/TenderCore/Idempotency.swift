public import Foundation

/// One mutating request under an idempotency key.
public struct IdempotencyRequest: Sendable, Hashable {
  public let merchant: MerchantID
  /// The caller's `idempotency-key`: 1–255 printable ASCII characters.
  public let key: String
  /// `package.Service/Method`.
  public let method: String
  /// SHA-256 of the method and the request's deterministic serialization.
  public let fingerprint: [UInt8]

  public init(merchant: MerchantID, key: String, method: String, fingerprint: [UInt8]) {
    precondition(fingerprint.count == 32, "fingerprints are SHA-256 digests")
    self.merchant = merchant
    self.key = key
    self.method = method
    self.fingerprint = fingerprint
  }

  /// Whether `key` is usable as an idempotency key.
  public static func isValidKey(_ key: String) -> Bool {
    (1...255).contains(key.utf8.count) && key.utf8.allSatisfy { $0 >= 0x20 && $0 < 0x7F }
  }
}

/// How far a keyed operation got; work resumes from here after a crash or a timeout.
public enum RecoveryPoint: String, Sendable, Hashable {
  /// Recorded, nothing else done yet.
  case started
  /// The payment row exists (processing); the provider may or may not have been called.
  case paymentCreated = "payment_created"
  /// The refund row exists (pending); the provider may or may not have been called.
  case refundCreated = "refund_created"
  /// The provider answered; its outcome is being applied.
  case providerCalled = "provider_called"
  /// Done: the response is stored and is what every retry gets.
  case finished
}

/// The first response to a keyed request, kept to be replayed byte for byte.
public struct StoredResponse: Sendable, Hashable {
  /// The gRPC status code (0 for OK).
  public let code: Int
  /// The serialized response message (OK), or the status message in UTF-8 (errors).
  public let message: [UInt8]
  /// For errors: the serialized `google.rpc.Status` (grpc-status-details-bin); empty otherwise.
  public let details: [UInt8]

  public init(code: Int, message: [UInt8], details: [UInt8]) {
    self.code = code
    self.message = message
    self.details = details
  }
}

public struct IdempotencyRecord: Sendable, Hashable {
  public let request: IdempotencyRequest
  public let recoveryPoint: RecoveryPoint
  public let paymentID: PaymentID?
  public let refundID: RefundID?
  public let lockedUntil: Date?
  public let createTime: Date

  public init(request: IdempotencyRequest, recoveryPoint: RecoveryPoint, paymentID: PaymentID?, refundID: RefundID?, lockedUntil: Date?, createTime: Date) {
    self.request = request
    self.recoveryPoint = recoveryPoint
    self.paymentID = paymentID
    self.refundID = refundID
    self.lockedUntil = lockedUntil
    self.createTime = createTime
  }
}

/// What claiming a key found.
public enum IdempotencyClaim: Sendable, Hashable {
  /// A new record: the caller owns it (locked) and does the work.
  case started(IdempotencyRecord)
  /// An unfinished record whose lock had expired: the caller took it over and resumes from its
  /// recovery point.
  case resumed(IdempotencyRecord)
  /// The request already finished: answer this, marked as replayed.
  case replay(StoredResponse)
  /// The key was used for a different request (method or content): IDEMPOTENCY_KEY_REUSED.
  case reused
  /// The first request is still running under a fresh lock: IDEMPOTENCY_KEY_IN_USE.
  case inUse
}

/// Durable idempotency records with recovery points and expiring locks.
public protocol IdempotencyStore: Sendable {
  /// Records `request` under its key, or reports what an earlier request with that key left.
  /// Atomic: of any number of concurrent claims of one key, exactly one starts.
  func claim(_ request: IdempotencyRequest, lockFor: Duration) async throws -> IdempotencyClaim
  /// Stores the response and drops the lock; retries replay it from now on.
  func finish(merchant: MerchantID, key: String, response: StoredResponse) async throws
  /// Deletes a record on which nothing happened yet (recovery point `started`), so that the same
  /// key can be used again (e.g. the provider was unreachable and nothing was written).
  func abandon(merchant: MerchantID, key: String) async throws
  /// Deletes an unfinished record whatever its recovery point, freeing the key: for operations
  /// that ended in a state a retry should not inherit (the provider was unreachable).
  func release(merchant: MerchantID, key: String) async throws
  /// Unfinished records (of these methods, when given) whose lock has expired, oldest first: work
  /// for the completer.
  func stale(methods: [String]?, limit: Int) async throws -> [IdempotencyRecord]
  /// Deletes finished records older than `age` (they are kept at least 24 hours); returns how many.
  func reap(olderThan age: Duration) async throws -> Int
}

extension IdempotencyStore {
  /// Unfinished records of any method whose lock has expired, oldest first.
  public func stale(limit: Int) async throws -> [IdempotencyRecord] {
    try await self.stale(methods: nil, limit: limit)
  }
}

extension IdempotencyStore {
  /// The completer's round for one method: takes over each unfinished record of `method` whose
  /// lock expired (a record another replica takes first is skipped) and hands it to `resume`,
  /// which finishes the operation or returns false when there is nothing to resume — the record
  /// is then released. Returns how many records were resolved.
  public func takeOverStale(
    method: String,
    limit: Int,
    lockFor: Duration,
    _ resume: (IdempotencyRecord) async throws -> Bool
  ) async throws -> Int {
    var resolved = 0
    for record in try await self.stale(methods: [method], limit: limit) {
      guard case .resumed(let claimed) = try await self.claim(record.request, lockFor: lockFor) else { continue }
      if try await !resume(claimed) {
        try await self.release(merchant: claimed.request.merchant, key: claimed.request.key)
      }
      resolved += 1
    }
    return resolved
  }
}
