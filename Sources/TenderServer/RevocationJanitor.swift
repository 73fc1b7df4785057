import Logging
import ServiceLifecycle
import TenderAuth

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
