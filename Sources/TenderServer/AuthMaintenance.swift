import Logging
import ServiceLifecycle
import TenderAuth
import TenderCore
import TenderOperations
import TenderProviders
import TenderRPC

/// Background upkeep that runs every `interval` until the server drains: a failed round is
/// logged and the next one tries again.
struct PeriodicTask: Service {
  let name: String
  let interval: Duration
  let logger: Logger
  let work: @Sendable () async throws -> Void

  func run() async throws {
    while !Task.isShuttingDownGracefully {
      do {
        try await cancelWhenGracefulShutdown { try await Task.sleep(for: self.interval) }
      } catch {
        return
      }
      do {
        try await cancelWhenGracefulShutdown { try await self.work() }
      } catch {
        if Task.isShuttingDownGracefully { return }
        self.logger.warning("\(self.name) failed a round", metadata: ["error": "\(String(reflecting: error))"])
      }
    }
  }
}

extension PeriodicTask {
  /// Deletes revocations of tokens that have expired anyway, so the list stays small.
  static func revocationJanitor(
    store: any AuthStore, interval: Duration = .seconds(3600), logger: Logger
  ) -> PeriodicTask {
    PeriodicTask(name: "revocation janitor", interval: interval, logger: logger) {
      let purged = try await store.purgeExpiredRevocations()
      if purged > 0 { logger.info("purged expired revocations", metadata: ["count": "\(purged)"]) }
    }
  }

  /// Deletes finished idempotency records once they are a day old (replays are promised for at
  /// least 24 hours).
  static func idempotencyReaper(store: any IdempotencyStore, interval: Duration, logger: Logger) -> PeriodicTask {
    PeriodicTask(name: "idempotency reaper", interval: interval, logger: logger) {
      let reaped = try await store.reap(olderThan: .seconds(24 * 3600))
      if reaped > 0 { logger.info("reaped finished idempotency records", metadata: ["count": "\(reaped)"]) }
    }
  }
}

/// Loads the signing keys (creating the first one on an empty database) once the server listens,
/// retrying while the database does not answer; serving never waits for it (the key ring also
/// loads on first use).
struct SigningKeyLoader: Service {
  let keys: KeyRing
  let logger: Logger
  let startWhen: @Sendable () async -> Void

  func run() async throws {
    await self.startWhen()
    var delay = Duration.milliseconds(500)
    while !Task.isShuttingDownGracefully {
      do {
        try await cancelWhenGracefulShutdown { try await self.keys.prepare() }
        // A service group expects its services to run until they are told to stop.
        try? await gracefulShutdown()
        return
      } catch {
        if Task.isShuttingDownGracefully { return }
        self.logger.warning(
          "signing keys not loaded yet; retrying", metadata: ["error": "\(String(reflecting: error))"])
      }
      do {
        let pause = delay
        try await cancelWhenGracefulShutdown { try await Task.sleep(for: pause) }
      } catch {
        return
      }
      delay = min(delay * 2, .seconds(30))
    }
  }
}

/// Keeps the provider connector's HTTP client open while the server runs and closes it on
/// shutdown (after the gRPC server, which stops first, has finished its calls).
struct ConnectorLifecycle: Service {
  let connector: StripeConnector

  func run() async throws {
    try? await gracefulShutdown()
    try await self.connector.shutdown()
  }
}
