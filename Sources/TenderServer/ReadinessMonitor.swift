public import Logging
public import ServiceLifecycle
public import TenderCore
public import TenderRPC

/// Probes the server's dependencies on an interval and publishes the result on the health board:
/// SERVING only while every probe answers within its timeout.
public struct ReadinessMonitor: Service {
  private let probes: [any ReadinessProbe]
  private let board: HealthStatusBoard
  private let interval: Duration
  private let timeout: Duration
  private let logger: Logger
  private let startWhen: @Sendable () async -> Void

  /// - Parameter startWhen: returns when probing may begin (once the gRPC server listens, so
  ///   nothing reports ready while start-up work such as migrations is still running).
  public init(
    probes: [any ReadinessProbe],
    board: HealthStatusBoard,
    interval: Duration,
    timeout: Duration? = nil,
    logger: Logger,
    startWhen: @escaping @Sendable () async -> Void = {}
  ) {
    self.startWhen = startWhen
    self.probes = probes
    self.board = board
    self.interval = interval
    // Not tied to the interval: a busy database answering in 300 ms is slow, not down, and a
    // short probe interval must not make readiness flap.
    self.timeout = timeout ?? .seconds(2)
    self.logger = logger
  }

  public func run() async throws {
    await cancelWhenGracefulShutdown {
      await self.startWhen()
      var lastFailure: String?? = .none
      while !Task.isCancelled {
        let failure = await self.firstFailure()
        if failure != lastFailure {
          if let failure {
            self.logger.error("not ready: dependency unreachable", metadata: ["dependency": "\(failure)"])
            self.board.setAll(.notServing)
          } else {
            self.logger.notice("ready: all dependencies answer")
            self.board.setAll(.serving)
          }
          lastFailure = .some(failure)
        }
        try? await Task.sleep(for: self.interval)
      }
    }
  }

  /// The name of the first probe that fails or times out, or nil when all answer.
  private func firstFailure() async -> String? {
    for probe in self.probes {
      let timeout = self.timeout
      let answered = await withTaskGroup(of: Bool.self) { group in
        group.addTask { (try? await probe.check()) != nil }
        group.addTask {
          try? await Task.sleep(for: timeout)
          return false
        }
        let first = await group.next() ?? false
        group.cancelAll()
        return first
      }
      if !answered { return probe.name }
    }
    return nil
  }
}
