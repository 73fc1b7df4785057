import Dispatch
import Synchronization
import Testing

@testable import TenderCore

/// Work that ignores cancellation and answers only when the test lets it.
private final class Stuck: Sendable {
  private let waiting = Mutex<CheckedContinuation<Void, Never>?>(nil)
  private let sawCancellation = Mutex(false)
  let entered: AsyncStream<Void>
  private let enteredContinuation: AsyncStream<Void>.Continuation

  init() {
    (self.entered, self.enteredContinuation) = AsyncStream.makeStream(of: Void.self)
  }

  func wait() async -> Int {
    await withCheckedContinuation { continuation in
      self.waiting.withLock { $0 = continuation }
      self.enteredContinuation.yield()
    }
    self.sawCancellation.withLock { $0 = Task.isCancelled }
    return 1
  }

  /// Lets the work answer; true when it had been cancelled by then.
  func release() async -> Bool {
    // The work sets `waiting` before it tells `entered`, so nil means the news is still to come.
    if self.waiting.withLock({ $0 == nil }) {
      for await _ in self.entered { break }
    }
    self.waiting.withLock { $0?.resume() }
    for _ in 0..<1000 where !self.sawCancellation.withLock({ $0 }) { try? await Task.sleep(for: .milliseconds(2)) }
    return self.sawCancellation.withLock { $0 }
  }
}

@Suite("Bounded: work that may never answer, bounded without waiting for it")
struct BoundedTests {
  @Test("Work that answers in time gives its value or its error")
  func answers() async throws {
    #expect(try await Bounded.run(within: .seconds(10)) { 42 } == 42)
    struct Refused: Error {}
    await #expect(throws: Refused.self) {
      try await Bounded.run(within: .seconds(10)) { () throws -> Int in throw Refused() }
    }
    #expect(try await Bounded.run(within: nil) { "unbounded" } == "unbounded")
  }

  @Test(
    "Work that never answers and ignores cancellation times out at the limit, and is cancelled", .timeLimit(.minutes(1))
  )
  func stuckTimesOut() async throws {
    let stuck = Stuck()
    let started = ContinuousClock.now
    let error = await #expect(throws: Bounded.TimedOut.self) {
      try await Bounded.run(within: .milliseconds(300)) { await stuck.wait() }
    }
    let waited = ContinuousClock.now - started
    #expect(error?.limit == .milliseconds(300))
    #expect(waited >= .milliseconds(300))
    // A task group would have waited for the stuck work: the time limit would end this test.
    #expect(await stuck.release())
  }

  @Test(
    "A cancelled caller is answered at once while its work is stuck, and the work is cancelled", .timeLimit(.minutes(1))
  )
  func cancelledCaller() async throws {
    let stuck = Stuck()
    let caller = Task { try await Bounded.run(within: .seconds(3600)) { await stuck.wait() } }
    var entered = stuck.entered.makeAsyncIterator()
    _ = await entered.next()
    caller.cancel()
    await #expect(throws: CancellationError.self) { try await caller.value }
    #expect(await stuck.release())
  }

  @Test("A caller cancelled before it starts is answered with CancellationError", .timeLimit(.minutes(1)))
  func cancelledBeforeStart() async throws {
    let caller = Task {
      withUnsafeCurrentTask { $0?.cancel() }
      return try await Bounded.run(within: .seconds(3600)) { 1 }
    }
    await #expect(throws: CancellationError.self) { try await caller.value }
  }

  @Test("A limit's deadline leaves the timer's queue once the work answers, and fires only when it passes")
  func deadlineLeavesTheQueue() async throws {
    let timer = SleepTimer()
    for value in 0..<1000 {
      #expect(try await Bounded.run(within: .seconds(3600), timer: timer) { value } == value)
    }
    #expect(timer.pending == 0)
    await #expect(throws: Bounded.TimedOut.self) {
      try await Bounded.run(within: .milliseconds(20), timer: timer) { try await Task.sleep(for: .seconds(3600)) }
    }
    #expect(timer.pending == 0)
  }

  @Test("The work runs on the preferred executor bound for it")
  func workOnThePreferredExecutor() async throws {
    let executor = CountingExecutor()
    let ran = try await PreferredExecutor.$current.withValue(executor) {
      try await Bounded.run(within: .seconds(10)) { executor.isCurrent }
    }
    #expect(ran)
    #expect(try await Bounded.run(within: .seconds(10)) { executor.isCurrent } == false)
  }
}

/// A task executor on a queue of its own that can tell whether the current job is its.
private final class CountingExecutor: TaskExecutor {
  private let queue = DispatchQueue(label: "tender.bounded-tests")
  private let key = DispatchSpecificKey<Bool>()

  init() {
    self.queue.setSpecific(key: self.key, value: true)
  }

  var isCurrent: Bool { DispatchQueue.getSpecific(key: self.key) == true }

  func enqueue(_ job: consuming ExecutorJob) {
    let job = UnownedJob(job)
    self.queue.async { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
  }
}
