@testable import TenderCore
import Testing

@Suite("Sleep: a cancelled sleep is freed at once", .serialized)
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

  @Test("Concurrent sleeps of different lengths each end, none before its time", .timeLimit(.minutes(1)))
  func concurrentSleepsEndOnTime() async throws {
    let early = try await withThrowingTaskGroup(of: Bool.self) { group in
      for index in 0..<200 {
        group.addTask {
          let duration = Duration.milliseconds(1 + (index * 37) % 150)
          let started = ContinuousClock.now
          try await Sleep.for(duration)
          return ContinuousClock.now - started < duration
        }
      }
      return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
    }
    #expect(early == 0)
  }

  @Test("A short sleep queued while the timer waits for an hour's still ends on time", .timeLimit(.minutes(1)))
  func shorterSleepWakesTheTimer() async throws {
    let timer = SleepTimer()
    let long = Task { try await Sleep.for(.seconds(3600), timer: timer, whenReleased: nil) }
    defer { long.cancel() }
    // The timer's thread waits for the hour's deadline when the short sleep comes. (Checking for
    // cancellation lets the time limit end the wait if the thread never gets there.)
    while (timer.waitingFor ?? .zero) < .seconds(3000) {
      try Task.checkCancellation()
      await Task.yield()
    }
    let started = ContinuousClock.now
    try await Sleep.for(.milliseconds(20), timer: timer, whenReleased: nil)
    #expect(ContinuousClock.now - started >= .milliseconds(20))
  }

  @Test("Cancelled sleeps do not pile up in the timer's queue", .timeLimit(.minutes(1)))
  func cancelledLeaveTheQueue() async throws {
    let timer = SleepTimer()
    let queued = await withTaskGroup(of: Void.self) { group in
      for _ in 0..<10_000 {
        group.addTask { try? await Sleep.for(.seconds(3600), timer: timer, whenReleased: nil) }
      }
      while timer.pending < 10_000, !Task.isCancelled { await Task.yield() }
      let queued = timer.slots
      group.cancelAll()
      return queued
    }
    #expect(queued == 10_000)
    #expect(timer.pending == 0)
    #expect(timer.slots <= 64)
  }
}
