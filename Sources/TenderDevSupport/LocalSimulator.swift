public import Logging
public import TenderProviderSim

extension ProviderSimulator {
  /// Starts a simulator in a task of its own and returns once it listens: the simulator, its
  /// port and the task (cancel it to stop the simulator). How `tender dev` and the tests run one.
  public static func startInBackground(
    configuration: Configuration,
    logger: Logger
  ) async throws -> (simulator: ProviderSimulator, port: Int, task: Task<Void, any Error>) {
    let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
    let simulator = ProviderSimulator(configuration: configuration, logger: logger) { port in
      continuation.yield(port)
      continuation.finish()
    }
    let task = Task {
      defer { continuation.finish() }
      try await simulator.run()
    }
    var iterator = ports.makeAsyncIterator()
    guard let port = await iterator.next() else {
      task.cancel()
      throw SimulatorDidNotStart()
    }
    return (simulator, port, task)
  }

  public struct SimulatorDidNotStart: Error {}
}
