import Crypto
public import Logging
public import TenderCore

/// How a keyed request ends for its caller.
public enum KeyedOutcome<Open: Sendable>: Sendable {
  /// The operation's answer as stored: every retry with the key gets exactly these bytes.
  case answered(StoredResponse, replayed: Bool)
  /// The provider's outcome is not known yet: nothing is stored, the key stays locked, and a
  /// retry after the lock or the completer finishes the operation under the same provider key.
  case open(Open)
}

/// Why a keyed request is answered without running (or finishing) its operation.
public enum KeyedRefusal: Error, Sendable, Hashable {
  /// The key was used for a different request.
  case reused
  /// The first request with the key is still running.
  case inUse
  /// The provider certainly never acted on the operation; it ended as failed and the key is free.
  case providerUnavailable
  /// The provider's outcome is not known yet; retry with the same key.
  case outcomeUnknown
}

/// The one path of every keyed operation: claim the key (start, replay, reused, in use, or take
/// over), run the operation's steps as the key's owner, store the answer exactly once, answer
/// from the stored bytes. Every write of the steps is fenced by the owner's token; an owner that
/// lost the key answers from the winner's stored answer. The completer drives the same steps.
public struct KeyedOperationRunner: Sendable {
  public let idempotency: any IdempotencyStore
  public let calls: any ProviderCallLog
  /// How long an owner holds its key without a sign of life; the heartbeat renews it every third.
  public let lock: Duration
  let logger: Logger

  public init(idempotency: any IdempotencyStore, calls: any ProviderCallLog, lock: Duration, logger: Logger) {
    self.idempotency = idempotency
    self.calls = calls
    self.lock = lock
    self.logger = logger
  }

  /// Claims `request`'s key and runs `execute` as its owner.
  /// - Parameter open: turns a stored answer back into the answer sent (CreateClient's are sealed).
  public func run<Open: Sendable>(
    _ request: IdempotencyRequest,
    open: @Sendable (StoredResponse) throws -> StoredResponse = { $0 },
    _ execute: (IdempotencyRecord) async throws -> KeyedOutcome<Open>
  ) async throws -> KeyedOutcome<Open> {
    switch try await self.idempotency.claim(request, lockFor: self.lock) {
    case .replay(let stored): return .answered(try open(stored), replayed: true)
    case .reused: throw KeyedRefusal.reused
    case .inUse: throw KeyedRefusal.inUse
    case .started(let record), .resumed(let record):
      return try await self.owning(record.owner, open: open) { try await execute(record) }
    }
  }

  /// Runs the steps of an operation whose key `owner` holds; when the owner turns out to have lost
  /// it, answers what the new owner stored (or IN_USE while it is still at work).
  public func owning<Open: Sendable>(
    _ owner: KeyOwner,
    open: @Sendable (StoredResponse) throws -> StoredResponse = { $0 },
    _ steps: () async throws -> KeyedOutcome<Open>
  ) async throws -> KeyedOutcome<Open> {
    do {
      return try await steps()
    } catch let fenced as FencedOut where fenced.owner == owner {
      self.logger.warning(
        "lost the idempotency key to another owner; answering from its result",
        metadata: ["merchant_id": "\(owner.merchant)"])
      guard let stored = try await self.idempotency.answer(merchant: owner.merchant, key: owner.key) else {
        throw KeyedRefusal.inUse
      }
      return .answered(try open(stored), replayed: true)
    }
  }

  /// One call to the provider as the key's owner: recorded before it is made (which also marks
  /// the operation as having reached out, and renews the lock), the lock renewed while it is in
  /// flight, and the outcome policy's verdict on the result.
  /// - Parameter begun: the id of the call's record when the caller already wrote it.
  public func callProvider<Answer: Sendable>(
    owner: KeyOwner,
    history: ProviderHistory,
    call: ProviderCall,
    begun: Int64? = nil,
    _ perform: @escaping @Sendable () async -> Result<Answer, ProviderError>
  ) async throws -> ProviderExchange<Answer> {
    let requestID: Int64
    if let begun {
      requestID = begun
    } else {
      requestID = try await self.calls.begin(call, owner: owner, lockFor: self.lock)
      try CrashPoints.reach("\(call.operation.rawValue).call_recorded")
    }
    let result = await self.withHeartbeat(owner, perform)
    let next: ProviderOutcomePolicy.Next
    switch result {
    case .success: next = .apply
    case .failure(let error): next = ProviderOutcomePolicy.next(history: history, attempt: ProviderAttempt(error))
    }
    if case .failure(let error) = result {
      self.logger.warning(
        "provider call without an answer",
        metadata: [
          "operation": "\(call.operation.rawValue)", "payment_id": "\(call.payment)", "problem": "\(error)",
          "next": "\(next)",
        ]
      )
    }
    return ProviderExchange(requestID: requestID, result: result, next: next)
  }

  /// Runs `body` while renewing `owner`'s lock every third of its length; stops renewing once
  /// another owner holds the key (the body's writes will then be refused).
  func withHeartbeat<T: Sendable>(_ owner: KeyOwner, _ body: @escaping @Sendable () async -> T) async -> T {
    let idempotency = self.idempotency
    let lock = self.lock
    let logger = self.logger
    return await withTaskGroup(of: T?.self) { group in
      group.addTask { await body() }
      group.addTask {
        while true {
          // Not `Task.sleep`: cancelled when the body ends, it would hold this task for up to
          // a third of the lock after every operation.
          do { try await Sleep.for(lock / 3) } catch { return nil }
          do {
            guard try await idempotency.extend(owner, lockFor: lock) else {
              logger.warning("another owner took over the idempotency key during a provider call")
              return nil
            }
          } catch {
            // The database may be back before the lock runs out; keep trying.
            logger.warning("could not renew the idempotency lock", metadata: ["problem": "\(type(of: error))"])
          }
        }
      }
      var result: T?
      for await value in group {
        if let value {
          result = value
          group.cancelAll()
        }
      }
      return result!
    }
  }

  /// The completer's round for one method: takes over each unfinished record of `method` whose
  /// lock expired (a record another replica takes first is skipped) and hands it to `resume`,
  /// which drives the operation's steps or returns false when nothing of it can have happened —
  /// the key is then freed. One record's failure does not stop the round. Returns how many
  /// records were taken over.
  public func takeOverStale(
    method: String, limit: Int = 50, _ resume: (IdempotencyRecord) async throws -> Bool
  ) async throws -> Int {
    var resolved = 0
    for record in try await self.idempotency.stale(methods: [method], limit: limit) {
      let claimed: IdempotencyRecord
      switch try await self.idempotency.claim(record.request, lockFor: self.lock) {
      case .resumed(let record):
        claimed = record
      case .started(let fresh):
        // Its owner freed the key meanwhile (nothing of the operation happened) and the claim
        // made it anew; nobody asked for that, so it is freed again.
        try? await self.idempotency.release(fresh.owner)
        continue
      case .replay, .reused, .inUse:
        continue
      }
      resolved += 1
      do {
        if try await !resume(claimed) {
          try await self.idempotency.release(claimed.owner)
        }
      } catch is FencedOut {
        continue
      } catch {
        self.logger.warning(
          "could not finish an interrupted operation",
          metadata: ["method": "\(method)", "problem": "\(type(of: error))"])
      }
    }
    return resolved
  }

  /// The provider's idempotency key: derived from the merchant, the caller's key and the
  /// operation, so it is the same on every retry and never collides across merchants.
  public static func providerKey(merchant: MerchantID, key: String, operation: ProviderCall.Operation) -> String {
    var hash = SHA256()
    hash.update(data: Array("\(merchant.rawValue)\u{0}\(key)\u{0}\(operation.rawValue)".utf8))
    return "tender_" + Hex.encode(hash.finalize())
  }
}

/// One provider call as the owner made it: its record, its result and what to do next.
public struct ProviderExchange<Answer: Sendable>: Sendable {
  public let requestID: Int64
  public let result: Result<Answer, ProviderError>
  public let next: ProviderOutcomePolicy.Next

  /// The call's record ending, for a step that applies `outcome`.
  public func ended(_ outcome: ProviderCall.Outcome) -> ProviderCallEnd {
    ProviderCallEnd(requestID: self.requestID, outcome: outcome)
  }
}

extension Result where Failure == ProviderError {
  /// The result of a provider call, for the runner.
  public static func of(_ body: () async throws(ProviderError) -> Success) async -> Result<Success, ProviderError> {
    do {
      return .success(try await body())
    } catch {
      return .failure(error)
    }
  }
}
