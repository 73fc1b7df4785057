@testable import TenderCore
import Testing

@Suite("Sleep: a cancelled sleep is freed at once")
struct SleepTests {
  @Test("A sleep ends after its duration")
  func ends() async throws {
    let started = ContinuousClock.now
    try await Sleep.for(.milliseconds(20))
    #expect(ContinuousClock.now - started >= .milliseconds(20))
  }

  @Test("Cancelling an hour's sleep throws CancellationError and lets go of its timer", .timeLimit(.minutes(1)))
  func cancelledIsReleased() async throws {
    let (released, releasedContinuation) = AsyncStream.makeStream(of: Void.self)
    let sleeping = Task {
      try await Sleep.for(.seconds(3600), whenReleased: { releasedContinuation.yield() })
    }
    sleeping.cancel()
    await #expect(throws: CancellationError.self) { try await sleeping.value }
    // A cancelled `Task.sleep` would be held for the hour: this would wait out the time limit.
    var iterator = released.makeAsyncIterator()
    #expect(await iterator.next() != nil)
  }

  @Test("A sleep in a task cancelled before it starts throws at once", .timeLimit(.minutes(1)))
  func cancelledBeforeStart() async throws {
    let sleeping = Task {
      withUnsafeCurrentTask { $0?.cancel() }
      try await Sleep.for(.seconds(3600))
    }
    await #expect(throws: CancellationError.self) { try await sleeping.value }
  }

  @Test("Ten thousand cancelled sleeps are all released", .timeLimit(.minutes(1)))
  func manyReleased() async throws {
    let count = 10_000
    let (released, releasedContinuation) = AsyncStream.makeStream(of: Void.self)
    await withTaskGroup(of: Void.self) { group in
      for _ in 0..<count {
        group.addTask { try? await Sleep.for(.seconds(3600), whenReleased: { releasedContinuation.yield() }) }
      }
      group.cancelAll()
    }
    var seen = 0
    for await _ in released {
      seen += 1
      if seen == count { break }
    }
    #expect(seen == count)
  }
}
