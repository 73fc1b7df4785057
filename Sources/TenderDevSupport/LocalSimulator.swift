public import Logging
import ServiceLifecycle
public import TenderProviderSim

extension ProviderSimulator {
  /// Runs a simulator in the background while `body` runs, then stops it and waits until it has:
  /// how `tender dev` and the tests run one. `body` gets the simulator and its port once it
  /// listens.
  ///
  /// The simulator stops by graceful shutdown — its listener closes, open connections finish —
  /// never by cancellation, and runs in a task of its own so that cancelling the caller does not
  /// reach it either: a cancelled NIO server can drop a connection it accepted that moment
  /// without serving it, which NIO reports as a fatal error ("Deinited NIOAsyncWriter without
  /// calling finish()", swift-nio#2637).
  public static func runInBackground<Result: Sendable>(
    configuration: Configuration,
    logger: Logger,
    _ body: (_ simulator: ProviderSimulator, _ port: Int) async throws -> Result
  ) async throws -> Result {
    let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
    let simulator = ProviderSimulator(configuration: configuration, logger: logger) { port in
      continuation.yield(port)
      continuation.finish()
    }
    let group = ServiceGroup(
      configuration: .init(
        services: [.init(service: simulator)], gracefulShutdownSignals: [], cancellationSignals: [], logger: logger))
    let task = Task {
      defer { continuation.finish() }
      try await group.run()
    }
    func stop() async {
      await group.triggerGracefulShutdown()
      _ = await task.result
    }
    var iterator = ports.makeAsyncIterator()
    guard let port = await iterator.next(), port > 0 else {
      await stop()
      throw SimulatorDidNotStart()
    }
    do {
      let result = try await body(simulator, port)
      await stop()
      return result
    } catch {
      await stop()
      throw error
    }
  }

  public struct SimulatorDidNotStart: Error {}
}
