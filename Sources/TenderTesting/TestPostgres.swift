import Foundation
import Synchronization
public import TenderDevSupport

/// One throwaway PostgreSQL cluster per test process, started on first use and stopped at exit;
/// each test gets a database of its own in it.
public enum TestPostgres {
  private static let started = Mutex<LocalPostgres?>(nil)
  private static let counter = Atomic<Int>(0)
  private static let cluster = Task<LocalPostgres, any Error> {
    let directory = URL(fileURLWithPath: NSTemporaryDirectory())
      .appendingPathComponent("tender-test-pg-\(getpid())", isDirectory: true)
    // Every test server, crash-test process and store test has a pool of its own, all at once.
    let cluster = try await LocalPostgres.start(
      in: directory, port: try LocalPostgres.freePort(), database: "tender_test", maxConnections: 1000)
    TestPostgres.started.withLock { $0 = cluster }
    atexit {
      TestPostgres.started.withLock { $0 }?.destroy()
    }
    return cluster
  }

  /// The shared cluster, started on first call.
  public static func shared() async throws -> LocalPostgres {
    try await self.cluster.value
  }

  /// A new, empty database in the shared cluster; returns its URL.
  public static func makeDatabase() async throws -> String {
    let cluster = try await self.shared()
    let name = "t\(getpid())_\(self.counter.add(1, ordering: .relaxed).newValue)"
    try await cluster.createDatabase(name)
    return cluster.url(database: name)
  }
}
