import Synchronization
import TenderCore
@testable import TenderPostgres
import Testing

/// Group commit's batching, without a database: the statement is a closure that records the
/// batches it is given and waits until the test lets it answer.
@Suite("Requests batched into statements")
struct StatementBatcherTests {
  /// A statement that blocks until released, recording each batch it is given.
  final class Gate: Sendable {
    private let state = Mutex<(batches: [[Int]], open: Bool, waiters: [CheckedContinuation<Void, Never>])>(
      ([], false, []))

    var batches: [[Int]] { self.state.withLock { $0.batches } }

    func enter(_ items: [Int]) async {
      await withCheckedContinuation { continuation in
        let open = self.state.withLock { state -> Bool in
          state.batches.append(items)
          if !state.open { state.waiters.append(continuation) }
          return state.open
        }
        if open { continuation.resume() }
      }
    }

    func release() {
      let waiters = self.state.withLock { state -> [CheckedContinuation<Void, Never>] in
        state.open = true
        defer { state.waiters = [] }
        return state.waiters
      }
      for waiter in waiters { waiter.resume() }
    }
  }

  /// Waits (without a clock) until `condition` holds.
  func until(_ condition: () -> Bool) async {
    while !condition() { await Task.yield() }
  }

  @Test(
    "A request that finds a lane free is sent alone; those that arrive meanwhile go together, at most `largest` each")
  func batchesFormUnderLoad() async throws {
    let gate = Gate()
    let batcher = StatementBatcher<Int, Int>("test", lanes: 1, stall: .zero, largest: 3, timeout: .seconds(60)) {
      items in
      await gate.enter(items)
      return items.map { .success($0 * 10) }
    }
    try await withThrowingTaskGroup(of: (Int, Int).self) { group in
      group.addTask { (0, try await batcher.submit(0)) }
      await self.until { gate.batches.count == 1 }
      for item in 1...5 {
        group.addTask { (item, try await batcher.submit(item)) }
      }
      await self.until { batcher.queued == 5 }
      gate.release()
      var answers: [Int: Int] = [:]
      for try await (item, answer) in group { answers[item] = answer }
      #expect(answers == [0: 0, 1: 10, 2: 20, 3: 30, 4: 40, 5: 50])
    }
    #expect(gate.batches.map(\.count) == [1, 3, 2])
    #expect(gate.batches.first == [0] && Set(gate.batches.joined()) == Set(0...5))
    #expect(batcher.queued == 0)
  }

  @Test("Each lane carries its own statement: with two lanes and no stall time two requests go alone at once")
  func lanes() async throws {
    let gate = Gate()
    let batcher = StatementBatcher<Int, Int>("test", lanes: 2, stall: .zero, largest: 8, timeout: .seconds(60)) {
      items in
      await gate.enter(items)
      return items.map { .success($0) }
    }
    try await withThrowingTaskGroup(of: Int.self) { group in
      group.addTask { try await batcher.submit(1) }
      group.addTask { try await batcher.submit(2) }
      await self.until { gate.batches.count == 2 }
      group.addTask { try await batcher.submit(3) }
      await self.until { batcher.queued == 1 }
      gate.release()
      var answers: [Int] = []
      for try await answer in group { answers.append(answer) }
      #expect(answers.sorted() == [1, 2, 3])
    }
    #expect(gate.batches.map(\.count) == [1, 1, 1])
  }

  @Test(
    "A second lane opens only for requests queued behind a statement that ran past the stall time",
    .timeLimit(.minutes(1)))
  func laneOpensOnStall() async throws {
    let stuck = Gate()
    let gate = Gate()
    let batcher = StatementBatcher<Int, Int>(
      "test", lanes: 2, stall: .milliseconds(20), largest: 8, timeout: .seconds(60)
    ) {
      items in
      if items == [0] { await stuck.enter(items) } else { await gate.enter(items) }
      return items.map { .success($0) }
    }
    try await withThrowingTaskGroup(of: Int.self) { group in
      group.addTask { try await batcher.submit(0) }
      await self.until { stuck.batches.count == 1 }
      gate.release()
      // Nothing else arrives: the watch opens the second lane once the first has run 20 ms.
      group.addTask { try await batcher.submit(1) }
      let first = try await group.next()
      #expect(first == 1)
      #expect(stuck.batches == [[0]] && gate.batches == [[1]])
      stuck.release()
      let last = try await group.next()
      #expect(last == 0)
    }
  }

  @Test(
    "While the statement in flight is within the stall time, requests queue for it instead of opening a lane",
    .timeLimit(.minutes(1)))
  func noLaneWithinStall() async throws {
    let gate = Gate()
    let batcher = StatementBatcher<Int, Int>("test", lanes: 2, stall: .seconds(3600), largest: 8, timeout: .seconds(60))
    {
      items in
      await gate.enter(items)
      return items.map { .success($0) }
    }
    try await withThrowingTaskGroup(of: Int.self) { group in
      group.addTask { try await batcher.submit(0) }
      await self.until { gate.batches.count == 1 }
      for item in 1...3 {
        group.addTask { try await batcher.submit(item) }
      }
      await self.until { batcher.queued == 3 }
      #expect(gate.batches == [[0]])
      gate.release()
      var answers: [Int] = []
      for try await answer in group { answers.append(answer) }
      #expect(answers.sorted() == [0, 1, 2, 3])
    }
    #expect(gate.batches.map(\.count) == [1, 3])
  }

  @Test("With a distinct key, a statement never carries two requests of one key: the later one goes next")
  func distinctKeys() async throws {
    let gate = Gate()
    let batcher = StatementBatcher<Int, Int>(
      "test", lanes: 1, stall: .zero, largest: 8, timeout: .seconds(60), distinct: { "\($0 % 10)" }
    ) { items in
      await gate.enter(items)
      return items.map { .success($0) }
    }
    try await withThrowingTaskGroup(of: Int.self) { group in
      group.addTask { try await batcher.submit(0) }
      await self.until { gate.batches.count == 1 }
      // 11 and 21 share a key, as do 12 and 32.
      for item in [11, 12, 21, 32, 13] {
        group.addTask { try await batcher.submit(item) }
        await self.until { batcher.queued == [11, 12, 21, 32, 13].firstIndex(of: item)! + 1 }
      }
      gate.release()
      var answers: [Int] = []
      for try await answer in group { answers.append(answer) }
      #expect(answers.sorted() == [0, 11, 12, 13, 21, 32])
    }
    #expect(gate.batches == [[0], [11, 12, 13], [21, 32]])
  }

  struct Refused: Error, Equatable {}

  @Test("A statement that fails fails each request it carried, one request refused fails alone, and the lane goes on")
  func failures() async throws {
    let gate = Gate()
    let batcher = StatementBatcher<Int, Int>("test", lanes: 1, stall: .zero, largest: 8, timeout: .seconds(60)) {
      items in
      await gate.enter(items)
      if items.contains(0) { throw Refused() }
      return items.map { $0 == 8 ? .failure(Refused()) : .success($0) }
    }
    try await withThrowingTaskGroup(of: Result<Int, Refused>.self) { group in
      group.addTask {
        do { return .success(try await batcher.submit(0)) } catch let error as Refused { return .failure(error) }
      }
      await self.until { gate.batches.count == 1 }
      for item in [7, 8] {
        group.addTask {
          do { return .success(try await batcher.submit(item)) } catch let error as Refused { return .failure(error) }
        }
      }
      await self.until { batcher.queued == 2 }
      gate.release()
      var results: [Result<Int, Refused>] = []
      for try await result in group { results.append(result) }
      // The first statement failed as a whole; of the second, only the request it refused.
      #expect(results.filter { $0 == .failure(Refused()) }.count == 2)
      #expect(results.compactMap { try? $0.get() } == [7])
    }
    #expect(gate.batches.map(\.count) == [1, 2])
  }

  @Test("A statement that never answers fails its requests at the timeout and frees its lane")
  func timeout() async throws {
    let gate = Gate()
    let stuck = Gate()
    let batcher = StatementBatcher<Int, Int>("test", lanes: 1, stall: .zero, largest: 8, timeout: .milliseconds(50)) {
      items in
      if items == [0] { await stuck.enter(items) } else { await gate.enter(items) }
      return items.map { .success($0) }
    }
    gate.release()
    await #expect(throws: Bounded.TimedOut.self) { try await batcher.submit(0) }
    #expect(try await batcher.submit(1) == 1)
    stuck.release()
  }
}
