import Foundation
import Synchronization
public import TenderServer

/// One throwaway PostgreSQL cluster per test process, started on first use and stopped at exit;
/// each test gets a database of its own in it.
public enum TestPostgres {
  private static let cluster = Mutex<Result<LocalPostgres, any Error>?>(nil)
  private static let counter = Atomic<Int>(0)

  /// The shared cluster, started on first call.
  public static func shared() throws -> LocalPostgres {
    try self.cluster.withLock { cached in
      if let cached { return try cached.get() }
      let result = Result {
        let directory = URL(fileURLWithPath: NSTemporaryDirectory())
          .appendingPathComponent("tender-test-pg-\(getpid())", isDirectory: true)
        // Every test server, crash-test process and store test has a pool of its own, all at once.
        return try LocalPostgres.start(in: directory, port: try LocalPostgres.freePort(), database: "tender_test", maxConnections: 1000)
      }
      cached = result
      if case .success = result {
        atexit {
          if case .success(let cluster) = TestPostgres.cluster.withLock({ $0 }) { cluster.destroy() }
        }
      }
      return try result.get()
    }
  }

  /// A new, empty database in the shared cluster; returns its URL.
  public static func makeDatabase() throws -> String {
    let cluster = try self.shared()
    let name = "t\(getpid())_\(self.counter.add(1, ordering: .relaxed).newValue)"
    try cluster.createDatabase(name)
    return cluster.url(database: name)
  }
}
