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
  public static func run<T: Sendable>(
    within limit: Duration?, _ body: @escaping @Sendable () async throws -> T
  ) async throws -> T {
    let race = Race<T>()
    return try await withTaskCancellationHandler {
      try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
        guard race.start(continuation) else { return }
        let work = Task {
          do {
            race.finish(.success(try await body()))
          } catch {
            race.finish(.failure(error))
          }
        }
        race.attach(work)
        if let limit {
          let timer = Task {
            try await Sleep.for(limit)
            race.finish(.failure(TimedOut(limit: limit)))
          }
          race.attach(timer)
        }
      }
    } onCancel: {
      race.finish(.failure(CancellationError()))
    }
  }
}

/// The first of the work's answer, the limit and the caller's cancellation resumes the caller;
/// the others find it done. Finishing cancels every task still attached.
private final class Race<T: Sendable>: Sendable {
  private struct State {
    var continuation: CheckedContinuation<T, any Error>?
    var cancels: [@Sendable () -> Void] = []
    var finished = false
  }

  private let state = Mutex(State())

  /// False when the caller was cancelled before the race started (it has been answered).
  func start(_ continuation: CheckedContinuation<T, any Error>) -> Bool {
    let finished = self.state.withLock { state -> Bool in
      if !state.finished { state.continuation = continuation }
      return state.finished
    }
    if finished { continuation.resume(throwing: CancellationError()) }
    return !finished
  }

  /// Cancels `task` when the race is done (at once if it is done already).
  func attach<Success: Sendable, Failure: Error>(_ task: Task<Success, Failure>) {
    let finished = self.state.withLock { state -> Bool in
      if !state.finished { state.cancels.append { task.cancel() } }
      return state.finished
    }
    if finished { task.cancel() }
  }

  func finish(_ result: Result<T, any Error>) {
    let taken = self.state.withLock { state -> (CheckedContinuation<T, any Error>?, [@Sendable () -> Void])? in
      guard !state.finished else { return nil }
      state.finished = true
      defer { (state.continuation, state.cancels) = (nil, []) }
      return (state.continuation, state.cancels)
    }
    guard let (continuation, cancels) = taken else { return }
    continuation?.resume(with: result)
    for cancel in cancels { cancel() }
  }
}
