import Synchronization
public import TenderCore

/// The serving status of each gRPC service, shared by the health service and whoever decides it
/// (the readiness monitor, the drain on shutdown).
public final class HealthStatusBoard: ServingState {
  /// Status as the health protocol reports it.
  public enum Status: Sendable, Hashable {
    case serving
    case notServing
  }

  private struct State {
    var statuses: [String: Status]
    var watchers: [String: [UInt64: AsyncStream<Status?>.Continuation]] = [:]
    var nextWatcherID: UInt64 = 0
    var isShutDown = false
  }

  private let state: Mutex<State>

  /// Creates a board knowing `services` (plus the whole-server entry `""`), all NOT_SERVING.
  public init(services: [String]) {
    var statuses: [String: Status] = ["": .notServing]
    for service in services { statuses[service] = .notServing }
    self.state = Mutex(State(statuses: statuses))
  }

  /// How many watch streams are open, and over how many service names: a cancelled watch leaves
  /// neither behind.
  public var watches: (streams: Int, names: Int) {
    self.state.withLock { state in (state.watchers.values.reduce(0) { $0 + $1.count }, state.watchers.count) }
  }

  /// Whether the server as a whole is SERVING.
  public var isServing: Bool { self.status(of: "") == .serving }

  /// The status of `service`, or nil when the service is unknown.
  public func status(of service: String) -> Status? {
    self.state.withLock { $0.statuses[service] }
  }

  /// Sets every known service (and the server as a whole) to `status`. Ignored after shutdown.
  public func setAll(_ status: Status) {
    self.state.withLock { state in
      guard !state.isShutDown else { return }
      for service in state.statuses.keys {
        Self.update(&state, service: service, to: status)
      }
    }
  }

  /// Sets one service's status, making it known if it was not. Ignored after shutdown.
  public func set(_ status: Status, for service: String) {
    self.state.withLock { state in
      guard !state.isShutDown else { return }
      Self.update(&state, service: service, to: status)
    }
  }

  /// Marks everything NOT_SERVING for good and ends every watch stream, so draining is not held up
  /// by long-lived Watch calls.
  public func shutDown() {
    let watchers = self.state.withLock { state -> [AsyncStream<Status?>.Continuation] in
      guard !state.isShutDown else { return [] }
      for service in state.statuses.keys {
        Self.update(&state, service: service, to: .notServing)
      }
      state.isShutDown = true
      defer { state.watchers = [:] }
      return state.watchers.values.flatMap(\.values)
    }
    // Outside the lock: finishing runs each stream's onTermination, which takes the lock.
    for continuation in watchers { continuation.finish() }
  }

  /// A watch its owner can end from outside the stream (a handler whose RPC was cancelled).
  public struct Watch: Sendable {
    /// As `watch(_:)` returns it.
    public let stream: AsyncStream<Status?>
    fileprivate let continuation: AsyncStream<Status?>.Continuation

    /// Finishes the stream; the board forgets the watch.
    public func end() {
      self.continuation.finish()
    }
  }

  /// A stream that yields the current status of `service` at once (nil while it is unknown) and
  /// then each change. Intermediate states may be skipped; the latest one is always delivered.
  public func watch(_ service: String) -> AsyncStream<Status?> {
    self.startWatch(service).stream
  }

  /// `watch(_:)`, with a way to end it.
  public func startWatch(_ service: String) -> Watch {
    let (stream, continuation) = AsyncStream.makeStream(of: Status?.self, bufferingPolicy: .bufferingNewest(1))
    let id: UInt64? = self.state.withLock { state in
      continuation.yield(state.statuses[service])
      guard !state.isShutDown else {
        continuation.finish()
        return nil
      }
      let id = state.nextWatcherID
      state.nextWatcherID += 1
      state.watchers[service, default: [:]][id] = continuation
      return id
    }
    if let id {
      continuation.onTermination = { [weak self] _ in
        self?.state.withLock { state in
          _ = state.watchers[service]?.removeValue(forKey: id)
          // A name nobody watches any more is forgotten, however many distinct names come and go.
          if state.watchers[service]?.isEmpty == true { state.watchers[service] = nil }
        }
      }
    }
    return Watch(stream: stream, continuation: continuation)
  }

  private static func update(_ state: inout State, service: String, to status: Status) {
    let previous = state.statuses.updateValue(status, forKey: service)
    guard previous != status else { return }
    for continuation in state.watchers[service, default: [:]].values {
      continuation.yield(status)
    }
  }
}
