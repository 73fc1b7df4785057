import Logging
import ServiceLifecycle
import TenderAuth
import TenderCore
import TenderProviders
import TenderRPC

/// Deletes revocations of tokens that have expired anyway, hourly, so the list stays small.
struct RevocationJanitor: Service {
  let store: any AuthStore
  let logger: Logger
  var interval: Duration = .seconds(3600)

  func run() async throws {
    while !Task.isShuttingDownGracefully {
      do {
        try await cancelWhenGracefulShutdown { try await Task.sleep(for: self.interval) }
      } catch {
        return
      }
      do {
        let purged = try await self.store.purgeExpiredRevocations()
        if purged > 0 { self.logger.info("purged expired revocations", metadata: ["count": "\(purged)"]) }
      } catch {
        self.logger.warning("could not purge expired revocations", metadata: ["error": "\(String(reflecting: error))"])
      }
    }
  }
}

/// Deletes finished idempotency records once they are a day old (replays are promised for at
/// least 24 hours), every `interval`.
struct IdempotencyReaper: Service {
  let store: any IdempotencyStore
  let interval: Duration
  let logger: Logger

  func run() async throws {
    while !Task.isShuttingDownGracefully {
      do {
        try await cancelWhenGracefulShutdown { try await Task.sleep(for: self.interval) }
      } catch {
        return
      }
      do {
        let reaped = try await cancelWhenGracefulShutdown { try await self.store.reap(olderThan: .seconds(24 * 3600)) }
        if reaped > 0 { self.logger.info("reaped finished idempotency records", metadata: ["count": "\(reaped)"]) }
      } catch {
        if Task.isShuttingDownGracefully { return }
        self.logger.warning("could not reap idempotency records", metadata: ["error": "\(String(reflecting: error))"])
      }
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
        self.logger.warning("signing keys not loaded yet; retrying", metadata: ["error": "\(String(reflecting: error))"])
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

/// Runs the completer every `interval`: interrupted CreatePayment and CreateRefund operations
/// whose lock expired are finished exactly once (see `PaymentRPCService.completeStale` and
/// `RefundRPCService.completeStale`).
struct PaymentCompleter: Service {
  let payments: PaymentRPCService
  let refunds: RefundRPCService
  let interval: Duration
  let logger: Logger

  func run() async throws {
    while !Task.isShuttingDownGracefully {
      do {
        try await cancelWhenGracefulShutdown { try await Task.sleep(for: self.interval) }
      } catch {
        return
      }
      do {
        let resolved = try await cancelWhenGracefulShutdown {
          try await self.payments.completeStale() + self.refunds.completeStale()
        }
        if resolved > 0 { self.logger.info("completer finished interrupted operations", metadata: ["count": "\(resolved)"]) }
      } catch {
        if Task.isShuttingDownGracefully { return }
        self.logger.warning("payment completer failed a round", metadata: ["error": "\(String(reflecting: error))"])
      }
    }
  }
}
