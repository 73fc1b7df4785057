public import Logging
public import ServiceLifecycle
public import TenderCore
public import TenderRPC

/// Probes the server's dependencies on an interval and publishes the result on the health board:
/// SERVING once every probe answers within its timeout; NOT_SERVING from the start until then,
/// and after `failureThreshold` failed rounds in a row (one slow answer on a busy machine is not
/// an outage, as orchestrators' probe thresholds have it).
public struct ReadinessMonitor: Service {
  private let probes: [any ReadinessProbe]
  private let board: HealthStatusBoard
  private let interval: Duration
  private let timeout: Duration
  private let failureThreshold: Int
  private let logger: Logger
  private let startWhen: @Sendable () async -> Void
  private let onChange: @Sendable (Bool) -> Void

  /// - Parameters:
  ///   - startWhen: returns when probing may begin (once the gRPC server listens, so nothing
  ///     reports ready while start-up work such as migrations is still running).
  ///   - onChange: told each readiness published (the `tender_ready` gauge).
  public init(
    probes: [any ReadinessProbe],
    board: HealthStatusBoard,
    interval: Duration,
    timeout: Duration? = nil,
    failureThreshold: Int = 3,
    logger: Logger,
    startWhen: @escaping @Sendable () async -> Void = {},
    onChange: @escaping @Sendable (Bool) -> Void = { _ in }
  ) {
    self.startWhen = startWhen
    self.onChange = onChange
    self.probes = probes
    self.board = board
    self.interval = interval
    // Not tied to the interval: a busy database answering in 300 ms is slow, not down, and a
    // short probe interval must not make readiness flap.
    self.timeout = timeout ?? .seconds(2)
    self.failureThreshold = max(1, failureThreshold)
    self.logger = logger
  }

  public func run() async throws {
    await cancelWhenGracefulShutdown {
      await self.startWhen()
      // nil until the first round: the first result is published whatever it is.
      var serving: Bool?
      var failures = 0
      while !Task.isCancelled {
        if let failure = await self.firstFailure() {
          failures += 1
          if serving != false, serving == nil || failures >= self.failureThreshold {
            self.logger.error(
              "not ready: dependency unreachable",
              metadata: ["dependency": "\(failure)", "failed_rounds": "\(failures)"])
            self.board.setAll(.notServing)
            self.onChange(false)
            serving = false
          } else if serving == true {
            self.logger.warning(
              "dependency did not answer", metadata: ["dependency": "\(failure)", "failed_rounds": "\(failures)"])
          }
        } else {
          failures = 0
          if serving != true {
            self.logger.notice("ready: all dependencies answer")
            self.board.setAll(.serving)
            self.onChange(true)
            serving = true
          }
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
          // Not `Task.sleep`: cancelled once the probe answers, it would live until the timeout.
          try? await Sleep.for(timeout)
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
