public import Foundation
import Subprocess
import Synchronization
import SystemPackage

/// A `tender` process started in the background, for tests of signals and process lifecycle.
/// Its standard error (the JSON log) is read as it is written: waiting for a log line or for the
/// exit is waiting for that event, not polling.
public final class RunningTender: Sendable {
  public enum Failure: Error {
    case exitedEarly(status: Int32, log: String)
    case noListeningAddress(log: String)
  }

  private struct State: Sendable {
    var lines: [String] = []
    var pid: pid_t?
    var status: Int32?
    var waiters: [(id: UUID, ready: @Sendable (State) -> Bool, continuation: CheckedContinuation<Void, Never>)] = []
    /// Waits whose time ran out before they were registered.
    var expired: Set<UUID> = []
  }

  /// The state, shared with the task that reads the log.
  private final class Shared: Sendable {
    private let mutex = Mutex(State())
    func withLock<Result: Sendable>(_ body: (inout State) -> Result) -> Result {
      self.mutex.withLock { body(&$0) }
    }
  }

  private let state = Shared()
  private let task: Task<Void, Never>
  /// The port `tender` reported in its "gRPC listening" log line.
  public let port: Int

  /// Starts `tender` with `arguments` and waits up to `timeout` for its "gRPC listening" line.
  /// `environment` is added to the test process's own.
  public init(_ arguments: [String], environment: [String: String] = [:], timeout: Duration = .seconds(60)) async throws
  {
    let state = self.state
    let overrides = Dictionary(
      uniqueKeysWithValues: environment.compactMap { name, value in
        Environment.Key(rawValue: name).map { ($0, Optional(value)) }
      })
    self.task = Task {
      var status: Int32 = -1
      do {
        let result = try await Subprocess.run(
          .path(FilePath(TenderExecutable.path)),
          arguments: Arguments(arguments),
          environment: .inherit.updating(overrides),
          input: .none,
          output: .discarded,
          error: .sequence
        ) { execution in
          RunningTender.update(state) { $0.pid = execution.processIdentifier.value }
          for try await line in execution.standardError.strings(bufferingPolicy: .unbounded) {
            RunningTender.update(state) { $0.lines.append(line.trimmingCharacters(in: .newlines)) }
          }
        }
        switch result.terminationStatus {
        case .exited(let code): status = code
        case .signaled(let signal): status = signal
        }
      } catch {
        RunningTender.update(state) { $0.lines.append("RunningTender: \(error)") }
      }
      RunningTender.update(state) { $0.status = status }
    }
    _ = await Self.wait(self.state, timeout: timeout) { $0.status != nil || Self.listeningPort(in: $0.lines) != nil }
    let (lines, status) = self.state.withLock { ($0.lines, $0.status) }
    if let port = Self.listeningPort(in: lines) {
      self.port = port
      return
    }
    let log = lines.joined(separator: "\n")
    if let status { throw Failure.exitedEarly(status: status, log: log) }
    self.state.withLock { $0.pid }.map { _ = kill($0, SIGKILL) }
    throw Failure.noListeningAddress(log: log)
  }

  deinit {
    let (pid, status) = self.state.withLock { ($0.pid, $0.status) }
    if let pid, status == nil { kill(pid, SIGINT) }
  }

  /// Everything the process has logged so far.
  public var log: String {
    self.state.withLock { $0.lines.joined(separator: "\n") }
  }

  /// Sends `signal` (e.g. SIGTERM) to the process.
  public func send(_ signal: Int32) {
    if let pid = self.state.withLock({ $0.pid }) { kill(pid, signal) }
  }

  /// Waits up to `timeout` for the process to exit; returns its status (the signal's number if a
  /// signal ended it), or nil if still running.
  public func waitForExit(timeout: Duration) async throws -> Int32? {
    _ = await Self.wait(self.state, timeout: timeout) { $0.status != nil }
    return self.state.withLock { $0.status }
  }

  /// The port of the HTTP bridge, once it has logged that it listens.
  public var bridgePort: Int? {
    Self.listeningPort(in: self.state.withLock { $0.lines }, message: "HTTP bridge listening")
  }

  /// Waits up to `timeout` for the HTTP bridge to log that it listens; returns its port.
  public func waitForBridge(timeout: Duration) async -> Int? {
    _ = await Self.wait(self.state, timeout: timeout) {
      $0.status != nil || Self.listeningPort(in: $0.lines, message: "HTTP bridge listening") != nil
    }
    return self.bridgePort
  }

  /// Changes the state and resumes the waiters it satisfies.
  private static func update(_ state: Shared, _ change: (inout State) -> Void) {
    let ready = state.withLock { state -> [CheckedContinuation<Void, Never>] in
      change(&state)
      let snapshot = state
      let (done, waiting) = (state.waiters.filter { $0.ready(snapshot) }, state.waiters.filter { !$0.ready(snapshot) })
      state.waiters = waiting
      return done.map(\.continuation)
    }
    ready.forEach { $0.resume() }
  }

  /// Returns true once `ready` holds, false if `timeout` passes first.
  private static func wait(
    _ state: Shared, timeout: Duration, until ready: @escaping @Sendable (State) -> Bool
  ) async -> Bool {
    let id = UUID()
    let timer = Task {
      try? await Task.sleep(for: timeout)
      let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
        guard let index = state.waiters.firstIndex(where: { $0.id == id }) else {
          state.expired.insert(id)
          return nil
        }
        return state.waiters.remove(at: index).continuation
      }
      waiter?.resume()
    }
    defer { timer.cancel() }
    await withCheckedContinuation { continuation in
      let now = state.withLock { state -> Bool in
        if ready(state) || state.expired.remove(id) != nil { return true }
        state.waiters.append((id, ready, continuation))
        return false
      }
      if now { continuation.resume() }
    }
    return state.withLock { ready($0) }
  }

  private static func listeningPort(in lines: [String], message: String = "gRPC listening") -> Int? {
    for line in lines where line.contains("\"\(message)\"") {
      guard let data = line.data(using: .utf8),
        let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
        let address = object["address"] as? String,
        let colon = address.lastIndex(of: ":")
      else { continue }
      return Int(address[address.index(after: colon)...])
    }
    return nil
  }
}
