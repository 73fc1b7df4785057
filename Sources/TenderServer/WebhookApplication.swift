import CoreMetrics
import Logging
import ServiceLifecycle
import TenderCore
import TenderOperations

/// Applies webhooks: each one the bridge stored is handed over at once (the fast path), and every
/// `interval` a round takes what is still due — after a restart, or once an object it names has
/// appeared — and publishes the inbox's backlog.
struct WebhookApplication: Service {
  let applier: WebhookApplier
  let inbox: any WebhookInbox
  let received: AsyncStream<WebhookEvent>
  let interval: Duration
  /// Events applied at once.
  var concurrency = 8
  let waiting: Gauge
  let parked: Gauge
  let logger: Logger

  /// Applies what is due until nothing is (a backlog after a restart drains in one go), then
  /// publishes the backlog; returns how many events were handled.
  func round() async throws -> Int {
    var handled = 0
    while true {
      let count = try await self.applier.round(limit: 500)
      handled += count
      if count < 500 { break }
    }
    let (waiting, parked) = try await self.inbox.backlog()
    self.waiting.record(waiting)
    self.parked.record(parked)
    return handled
  }

  func run() async throws {
    await withTaskGroup(of: Void.self) { group in
      group.addTask {
        await cancelWhenGracefulShutdown {
          // Up to `concurrency` events are applied at once (each its own transaction; events of
          // one payment serialize on its row lock, and the state machine never moves it back).
          await withTaskGroup(of: Void.self) { workers in
            var running = 0
            for await event in self.received {
              if running >= self.concurrency {
                await workers.next()
                running -= 1
              }
              running += 1
              workers.addTask {
                do {
                  try await self.applier.apply(event)
                } catch {
                  // The round below tries it again.
                  self.logger.warning(
                    "could not apply a webhook yet",
                    metadata: ["event_id": "\(event.eventID)", "problem": "\(type(of: error))"])
                }
              }
            }
          }
        }
      }
      group.addTask {
        while !Task.isShuttingDownGracefully {
          do {
            try await cancelWhenGracefulShutdown { try await Task.sleep(for: self.interval) }
            try await cancelWhenGracefulShutdown { _ = try await self.round() }
          } catch {
            if Task.isShuttingDownGracefully || Task.isCancelled { return }
            self.logger.warning("webhook round failed", metadata: ["problem": "\(type(of: error))"])
          }
        }
      }
    }
  }
}
