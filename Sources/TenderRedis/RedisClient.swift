public import Logging
import NIOCore
import NIOPosix
public import ServiceLifecycle
import Synchronization
import TenderCore

/// A small pool of Redis connections with reconnection and backoff.
///
/// No call waits on an unreachable Redis for longer than the connect or command timeout, and
/// while a slot is backing off after failures its calls fail at once with `RedisError.unavailable`,
/// so callers can apply their own policy (e.g. failing open) without slowing down.
public final class RedisClient: Service, Sendable {
  private enum Slot {
    case empty(failures: Int, retryAt: ContinuousClock.Instant?)
    case connecting(Task<RedisConnection, any Error>, failures: Int)
    case connected(RedisConnection)
  }

  private struct State {
    var slots: [Slot]
    var next = 0
    var isShutDown = false
  }

  public let configuration: RedisConfiguration
  private let state: Mutex<State>
  private let logger: Logger

  public init(configuration: RedisConfiguration, logger: Logger) {
    self.configuration = configuration
    self.logger = logger
    self.state = Mutex(
      State(slots: Array(repeating: .empty(failures: 0, retryAt: nil), count: max(1, configuration.poolSize))))
  }

  /// Sends a command on one of the pool's connections.
  public func send(_ arguments: [String]) async throws -> RESPValue {
    let (index, connection) = try await self.connection()
    do {
      return try await connection.send(arguments)
    } catch let error as RedisError where error == .timeout || error == .connectionClosed {
      self.dropped(index, connection: connection)
      throw error
    }
  }

  /// Keeps the pool until graceful shutdown, then closes every connection.
  public func run() async throws {
    try? await gracefulShutdown()
    let connections = self.state.withLock { state -> [RedisConnection] in
      state.isShutDown = true
      return state.slots.compactMap { slot in
        if case .connected(let connection) = slot { return connection }
        return nil
      }
    }
    connections.forEach { $0.close() }
  }

  private enum Acquisition {
    case ready(RedisConnection)
    case wait(Task<RedisConnection, any Error>)
  }

  private func connection() async throws -> (Int, RedisConnection) {
    let configuration = self.configuration
    let (index, acquisition) = try self.state.withLock { state -> (Int, Acquisition) in
      guard !state.isShutDown else { throw RedisError.unavailable }
      let index = state.next
      state.next = (state.next + 1) % state.slots.count
      switch state.slots[index] {
      case .connected(let connection) where connection.isActive:
        return (index, .ready(connection))
      case .connecting(let task, _):
        return (index, .wait(task))
      case .empty(_, let retryAt?) where ContinuousClock.now < retryAt:
        throw RedisError.unavailable
      case .empty(let failures, _):
        let task = Task { try await RedisConnection.connect(to: configuration) }
        state.slots[index] = .connecting(task, failures: failures)
        return (index, .wait(task))
      case .connected:
        let task = Task { try await RedisConnection.connect(to: configuration) }
        state.slots[index] = .connecting(task, failures: 0)
        return (index, .wait(task))
      }
    }
    switch acquisition {
    case .ready(let connection):
      return (index, connection)
    case .wait(let task):
      do {
        let connection = try await task.value
        self.state.withLock { state in
          if case .connecting = state.slots[index] { state.slots[index] = .connected(connection) }
        }
        return (index, connection)
      } catch {
        self.failed(index)
        throw error
      }
    }
  }

  /// Records a failed attempt on a slot and schedules its next one with exponential backoff.
  private func failed(_ index: Int) {
    let configuration = self.configuration
    let failures = self.state.withLock { state -> Int in
      guard case .connecting(_, let previous) = state.slots[index] else { return 0 }
      let failures = previous + 1
      let backoff = Backoff.doubling(configuration.initialBackoff, attempt: failures, cap: configuration.maximumBackoff)
      state.slots[index] = .empty(failures: failures, retryAt: ContinuousClock.now + backoff)
      return failures
    }
    if failures == 1 {
      self.logger.warning(
        "Redis unreachable; backing off",
        metadata: ["redis.host": "\(configuration.host)", "redis.port": "\(configuration.port)"])
    }
  }

  /// Forgets a connection that failed; the next call on its slot reconnects.
  private func dropped(_ index: Int, connection: RedisConnection) {
    connection.close()
    self.state.withLock { state in
      if case .connected(let current) = state.slots[index], current === connection {
        state.slots[index] = .empty(failures: 0, retryAt: nil)
      }
    }
  }
}
