import Synchronization

/// Runs work that may never return without waiting for it past a limit.
///
/// A task group cannot do this: it waits for its children, even cancelled ones, so a call stuck
/// on a connection that will never answer keeps its caller stuck too. `Bounded.run` runs the work
/// in a task of its own and returns its answer, or throws `Bounded.TimedOut` once `limit` passes
/// (or `CancellationError` once the caller is cancelled), cancelling the work and leaving it
/// behind. Work left behind must therefore be safe to finish late: Tender's store calls are
/// (every write is fenced by its key's owner token, and a late commit is the same ambiguous
/// outcome as a connection lost at COMMIT).
public enum Bounded {
  /// The limit passed before the work answered.
  public struct TimedOut: Error, CustomStringConvertible {
    public let limit: Duration
    public var description: String { "no answer within \(self.limit)" }
  }

  /// `body`'s answer, or `TimedOut` after `limit`; `limit` nil waits without end (but still
  /// answers a cancelled caller at once).
  ///
  /// The limit is a deadline in `SleepTimer`'s queue that finishes the race itself when it
  /// passes, not a task sleeping beside the work: the work's task is the only one started. That
  /// task prefers `PreferredExecutor.current` (the RPC's event loop under Tender's transport).
  public static func run<T: Sendable>(
    within limit: Duration?, _ body: @escaping @Sendable () async throws -> T
  ) async throws -> T {
    try await self.run(within: limit, timer: .shared, body)
  }

  static func run<T: Sendable>(
    within limit: Duration?, timer: SleepTimer, _ body: @escaping @Sendable () async throws -> T
  ) async throws -> T {
    let race = Race<T>(limit: limit, timer: timer)
    return try await withTaskCancellationHandler {
      try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
        guard race.start(continuation) else { return }
        race.attach(
          Task(executorPreference: PreferredExecutor.current) {
            do {
              race.finish(.success(try await body()))
            } catch {
              race.finish(.failure(error))
            }
          })
        race.arm()
      }
    } onCancel: {
      race.finish(.failure(CancellationError()))
    }
  }
}

/// The first of the work's answer, the limit and the caller's cancellation resumes the caller;
/// the others find it done. Finishing cancels the work if it is still running, and takes the
/// limit's deadline out of the timer's queue if it has not passed.
private final class Race<T: Sendable>: TimerTarget {
  private struct State {
    var continuation: CheckedContinuation<T, any Error>?
    var work: Task<Void, Never>?
    var deadline: SleepTimer.Ticket?
    var finished = false
  }

  private let state = Mutex(State())
  private let limit: Duration?
  private let timer: SleepTimer

  init(limit: Duration?, timer: SleepTimer) {
    self.limit = limit
    self.timer = timer
  }

  /// False when the caller was cancelled before the race started (it has been answered).
  func start(_ continuation: CheckedContinuation<T, any Error>) -> Bool {
    let finished = self.state.withLock { state -> Bool in
      if !state.finished { state.continuation = continuation }
      return state.finished
    }
    if finished { continuation.resume(throwing: CancellationError()) }
    return !finished
  }

  /// Cancels `work` when the race is done (at once if it is done already).
  func attach(_ work: Task<Void, Never>) {
    let finished = self.state.withLock { state -> Bool in
      if !state.finished { state.work = work }
      return state.finished
    }
    if finished { work.cancel() }
  }

  /// Queues the limit's deadline, if there is a limit and the race is still on.
  func arm() {
    guard let limit = self.limit else { return }
    let ticket = self.timer.wake(self, after: limit)
    let finished = self.state.withLock { state -> Bool in
      if !state.finished { state.deadline = ticket }
      return state.finished
    }
    if finished { self.timer.forget(ticket) }
  }

  /// The limit passed (the timer has already let go of the deadline).
  func timerFired() {
    self.finish(.failure(Bounded.TimedOut(limit: self.limit ?? .zero)), deadlinePassed: true)
  }

  func finish(_ result: Result<T, any Error>) {
    self.finish(result, deadlinePassed: false)
  }

  private func finish(_ result: Result<T, any Error>, deadlinePassed: Bool) {
    let taken = self.state.withLock { state -> State? in
      guard !state.finished else { return nil }
      let taken = state
      state = State(finished: true)
      return taken
    }
    guard let taken else { return }
    if !deadlinePassed, let deadline = taken.deadline { self.timer.forget(deadline) }
    taken.continuation?.resume(with: result)
    taken.work?.cancel()
  }
}
