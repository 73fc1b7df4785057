import Logging
import PostgresNIO
import Synchronization
import TenderCore

/// Group commit for one kind of write: requests that arrive while earlier ones are being written
/// are written together, as one statement and one commit.
///
/// One lane carries the statements while it keeps up. A request that finds no statement in flight
/// is sent at once, alone: a quiet server adds no wait. The others queue, and when a statement
/// ends its lane takes everything queued (up to `largest`) as the next statement. So batches grow
/// with the load by themselves, and one lane makes them the largest (the fewest statements and
/// commits for the load).
///
/// A statement can wait on a lock that another transaction holds. So when requests are queued
/// and no lane in flight has started a statement for `stall`, another lane opens and takes them,
/// up to `lanes` in flight. A lane that ends its statement while another is making progress
/// leaves the queue to that one and closes: the lanes go back to one once nothing is stuck.
///
/// Each statement runs in a task of its own, bounded by `timeout`: no caller's cancellation or
/// timeout cancels a statement that carries other callers' writes. `execute` gives each request
/// its own answer or error, in order; when it throws (a connection lost, the timeout), each
/// request of the statement fails with that error.
final class StatementBatcher<Item: Sendable, Answer: Sendable>: Sendable {
  typealias Execute = @Sendable ([Item]) async throws -> [Result<Answer, any Error>]

  private struct Waiting {
    let item: Item
    let continuation: CheckedContinuation<Answer, any Error>
  }

  private struct State {
    var queue: [Waiting] = []
    /// When each lane in flight started its statement, by lane.
    var lanes: [Int: ContinuousClock.Instant] = [:]
    var nextLane = 0
    /// Whether a watch for a stalled lane is waiting.
    var watching = false

    /// Whether every lane in flight but `lane` started its statement `stall` or more ago (true
    /// when there is none).
    func stalled(at now: ContinuousClock.Instant, stall: Duration, besides lane: Int? = nil) -> Bool {
      self.lanes.allSatisfy { $0.key == lane || now - $0.value >= stall }
    }

    /// A new lane, its statement starting `now`.
    mutating func open(at now: ContinuousClock.Instant) -> Int {
      defer { self.nextLane += 1 }
      self.lanes[self.nextLane] = now
      return self.nextLane
    }

    /// Whether a watch is to start: true once, until the watch ends.
    mutating func arm() -> Bool {
      defer { self.watching = true }
      return !self.watching
    }
  }

  private let state = Mutex(State())
  private let lanes: Int
  private let stall: Duration
  private let largest: Int
  private let timeout: Duration?
  private let execute: Execute
  private let reports: WriteBatchReports?
  private let name: String
  private let distinct: (@Sendable (Item) -> String)?

  /// `name` labels the statement in `reports`. A `stall` of zero opens a lane whenever one is
  /// free. With `distinct`, no statement carries two requests of the same key: a later one waits
  /// for the next statement, in its turn.
  init(
    _ name: String, lanes: Int, stall: Duration, largest: Int, timeout: Duration?,
    reports: WriteBatchReports? = nil, distinct: (@Sendable (Item) -> String)? = nil, execute: @escaping Execute
  ) {
    self.name = name
    self.reports = reports
    self.distinct = distinct
    precondition(lanes > 0 && largest > 0, "at least one lane and one request per statement")
    self.lanes = lanes
    self.stall = stall
    self.largest = largest
    self.timeout = timeout
    self.execute = execute
  }

  /// Requests waiting for a lane.
  var queued: Int { self.state.withLock { $0.queue.count } }

  /// `item` written, alone or with others; its answer.
  func submit(_ item: Item) async throws -> Answer {
    try await withCheckedThrowingContinuation { continuation in
      let now = ContinuousClock.now
      let (opened, watch) = self.state.withLock { state -> ((lane: Int, batch: [Waiting])?, Bool) in
        state.queue.append(Waiting(item: item, continuation: continuation))
        guard state.lanes.count < self.lanes else { return (nil, false) }
        if state.stalled(at: now, stall: self.stall) {
          return ((state.open(at: now), self.take(&state.queue)), false)
        }
        return (nil, state.arm())
      }
      if let opened { self.start(opened.batch, lane: opened.lane) }
      if watch { self.watch() }
    }
  }

  /// Waits until the newest statement in flight has run for `stall`; if requests are still
  /// queued behind it then, opens a lane for them. Watches on while requests queue and a lane
  /// can still open.
  private func watch() {
    Task.detached {
      while true {
        let now = ContinuousClock.now
        let (wait, opened) = self.state.withLock { state -> (Duration?, (lane: Int, batch: [Waiting])?) in
          guard !state.queue.isEmpty, state.lanes.count < self.lanes else {
            state.watching = false
            return (nil, nil)
          }
          guard let newest = state.lanes.values.max(), !state.stalled(at: now, stall: self.stall) else {
            return (nil, (state.open(at: now), self.take(&state.queue)))
          }
          return (newest + self.stall - now, nil)
        }
        if let opened { self.start(opened.batch, lane: opened.lane) }
        if let wait {
          try? await Sleep.for(wait)
        } else if opened == nil {
          return
        }
      }
    }
  }

  /// The next statement's requests, taken from the queue's front; the rest stay in order.
  private func take(_ queue: inout [Waiting]) -> [Waiting] {
    guard let distinct = self.distinct else {
      guard queue.count > self.largest else {
        defer { queue = [] }
        return queue
      }
      defer { queue.removeFirst(self.largest) }
      return Array(queue.prefix(self.largest))
    }
    var taken: [Waiting] = []
    var left: [Waiting] = []
    var keys = Set<String>()
    for waiting in queue {
      if taken.count < self.largest, keys.insert(distinct(waiting.item)).inserted {
        taken.append(waiting)
      } else {
        left.append(waiting)
      }
    }
    queue = left
    return taken
  }

  /// Writes `batch` in `lane`, then whatever queued meanwhile, until the queue is empty or
  /// another lane is making progress.
  private func start(_ first: [Waiting], lane: Int) {
    // Detached: the statement carries several callers' writes, so it inherits none's task-locals
    // (their money movements and events are recorded by each caller from its own answer).
    Task.detached {
      var batch = first
      while true {
        let items = batch.map(\.item)
        self.reports?.sent(self.name, requests: items.count)
        do {
          let execute = self.execute
          let answers = try await Bounded.run(within: self.timeout) { try await execute(items) }
          precondition(answers.count == batch.count, "one answer per request")
          for (waiting, answer) in zip(batch, answers) { waiting.continuation.resume(with: answer) }
        } catch {
          for waiting in batch { waiting.continuation.resume(throwing: error) }
        }
        let now = ContinuousClock.now
        let (next, watch) = self.state.withLock { state -> ([Waiting]?, Bool) in
          guard !state.queue.isEmpty, state.stalled(at: now, stall: self.stall, besides: lane) else {
            state.lanes[lane] = nil
            // Left to the lane making progress; watched, should that one stall next.
            return (nil, !state.queue.isEmpty && state.arm())
          }
          state.lanes[lane] = now
          return (self.take(&state.queue), false)
        }
        if watch { self.watch() }
        guard let next else { return }
        batch = next
      }
    }
  }
}

extension Result where Failure == any Error {
  /// `body`'s answer or error.
  static func catching(_ body: () async throws -> Success) async -> Self {
    do {
      return .success(try await body())
    } catch {
      return .failure(error)
    }
  }
}

/// How group commit's store calls write their requests: one alone as its own statement
/// (`alone`), more as one statement (`together`, an answer per request, in order). A statement
/// the server refused wrote nothing (each is its own transaction): its requests are then written
/// one by one, so that each gets its own answer or error. Any other failure (a connection lost)
/// fails them all.
enum GroupCommit {
  static func write<Request, Answer>(
    _ requests: [Request],
    alone: (Request) async throws -> Answer,
    together: ([Request]) async throws -> [Answer]
  ) async throws -> [Result<Answer, any Error>] {
    guard requests.count > 1 else { return [await .catching { try await alone(requests[0]) }] }
    do {
      return try await together(requests).map { .success($0) }
    } catch let error as PSQLError where error.serverInfo != nil {
      var answers: [Result<Answer, any Error>] = []
      for request in requests { answers.append(await .catching { try await alone(request) }) }
      return answers
    }
  }

  /// What a finishing statement (`FinishProcessing`, `FinishPending`) answers a request: whether
  /// it was written, and the transaction of its event if one was written.
  struct Finished: Sendable {
    let written: Bool
    let eventTransaction: Int64?

    static let nothing = Finished(written: false, eventTransaction: nil)
  }

  /// `write` for the finishing statements. Alone, a request is its own statement, answering the
  /// count written and its event's transaction (a statement that aborted itself or lost a
  /// deadlock wrote nothing). Together, `together` is the batched statement for the requests in
  /// `order` (the order their rows are locked in); it answers a row (id, event transaction,
  /// half-write check) for each request written, named as `id` names a request.
  static func finish<Alone: PostgresPreparedStatement>(
    _ requests: [Alone], client: PostgresClient, logger: Logger, id: (Alone) -> String,
    order: (Alone, Alone) -> Bool, together: ([Alone]) throws -> PostgresQuery
  ) async throws -> [Result<Finished, any Error>] where Alone.Row == (Int64, Int64?) {
    try await Self.write(requests) { request in
      do {
        for try await (count, eventTransaction) in try await client.execute(request, logger: logger) {
          return Finished(written: count == 1, eventTransaction: eventTransaction)
        }
        return .nothing
      } catch let error as PSQLError where PostgresFailures.isFastPathRefusal(error) {
        return .nothing
      }
    } together: { batch in
      let rows = try await client.query(try together(batch.sorted(by: order)), logger: logger)
      var written: [String: Int64?] = [:]
      for try await (name, eventTransaction, _) in rows.decode((String, Int64?, Int32).self) {
        written[name] = eventTransaction
      }
      return batch.map { request in
        guard let eventTransaction = written[id(request)] else { return .nothing }
        return Finished(written: true, eventTransaction: eventTransaction)
      }
    }
  }
}
