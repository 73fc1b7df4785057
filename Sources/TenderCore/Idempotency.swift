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
  /// The owner's fencing token: a new one on every claim and takeover.
  public let ownerToken: Int64
  /// Whether any owner ever started a provider call for this operation.
  public let providerAttempted: Bool

  public init(
    request: IdempotencyRequest, recoveryPoint: RecoveryPoint, paymentID: PaymentID?, refundID: RefundID?,
    lockedUntil: Date?, createTime: Date,
    ownerToken: Int64 = 1, providerAttempted: Bool = false
  ) {
    self.request = request
    self.recoveryPoint = recoveryPoint
    self.paymentID = paymentID
    self.refundID = refundID
    self.lockedUntil = lockedUntil
    self.createTime = createTime
    self.ownerToken = ownerToken
    self.providerAttempted = providerAttempted
  }

  /// Who may write this operation's steps: the key and the current owner's token.
  public var owner: KeyOwner {
    KeyOwner(merchant: self.request.merchant, key: self.request.key, token: self.ownerToken)
  }

  /// What the record says may already have happened at the provider.
  public var history: ProviderHistory { self.providerAttempted ? .maybeSent : .nothingSent }
}

/// The owner of a claimed key. Every write of the operation names it and does nothing once
/// another owner has taken the key over (the token no longer matches).
public struct KeyOwner: Sendable, Hashable {
  public let merchant: MerchantID
  public let key: String
  public let token: Int64

  public init(merchant: MerchantID, key: String, token: Int64) {
    self.merchant = merchant
    self.key = key
    self.token = token
  }
}

/// A write of a keyed operation refused because its owner lost the key to another owner (its
/// lock expired and a retry or the completer took over). Nothing was written.
public struct FencedOut: Error, Sendable, Hashable {
  public let owner: KeyOwner
  public init(_ owner: KeyOwner) { self.owner = owner }
}

/// What claiming a key found.
public enum IdempotencyClaim: Sendable, Hashable {
  /// A new record: the caller owns it (locked) and does the work.
  case started(IdempotencyRecord)
  /// An unfinished record whose lock had expired: the caller took it over (with a new owner
  /// token) and resumes from its recovery point.
  case resumed(IdempotencyRecord)
  /// The request already finished: answer this, marked as replayed.
  case replay(StoredResponse)
  /// The key was used for a different request (method or content): IDEMPOTENCY_KEY_REUSED.
  case reused
  /// The first request is still running under a fresh lock: IDEMPOTENCY_KEY_IN_USE.
  case inUse
}

/// Durable idempotency records with recovery points, expiring locks and fencing tokens.
public protocol IdempotencyStore: Sendable {
  /// Records `request` under its key, or reports what an earlier request with that key left.
  /// Atomic: of any number of concurrent claims of one key, exactly one starts (or takes over).
  func claim(_ request: IdempotencyRequest, lockFor: Duration) async throws -> IdempotencyClaim
  /// Stores the response and drops the lock; retries replay it from now on. Throws `FencedOut`
  /// (writing nothing) when `owner` no longer owns the key.
  func finish(_ owner: KeyOwner, response: StoredResponse) async throws
  /// Deletes the unfinished record, freeing the key, for operations that ended in a state a
  /// retry should not inherit (nothing reached the provider). Throws `FencedOut` as `finish`.
  func release(_ owner: KeyOwner) async throws
  /// Extends the owner's lock while it waits on the provider; false when it no longer owns the key.
  func extend(_ owner: KeyOwner, lockFor: Duration) async throws -> Bool
  /// The stored answer of a finished key (nil while unfinished or when there is no such key).
  func answer(merchant: MerchantID, key: String) async throws -> StoredResponse?
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
