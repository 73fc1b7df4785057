import Foundation
import Logging
import PostgresNIO
import Synchronization
public import TenderDevSupport
import TenderPostgres

/// One throwaway PostgreSQL cluster per test process, started on first use and stopped at exit;
/// each test gets a database of its own in it, copied from a template that has every migration
/// applied (so each test does not migrate its own), or empty for the migration tests.
public enum TestPostgres {
  private static let started = Mutex<LocalPostgres?>(nil)
  private static let counter = Atomic<Int>(0)
  static let template = "tender_template"
  private static let cluster = Task<LocalPostgres, any Error> {
    let directory = URL(fileURLWithPath: NSTemporaryDirectory())
      .appendingPathComponent("tender-test-pg-\(getpid())", isDirectory: true)
    // Every test server, crash-test process and store test has a pool of its own, all at once.
    let cluster = try await LocalPostgres.start(
      in: directory, port: try LocalPostgres.freePort(), database: "tender_test", maxConnections: 1000, durable: false
    )
    TestPostgres.started.withLock { $0 = cluster }
    atexit {
      TestPostgres.started.withLock { $0 }?.destroy()
    }
    try await cluster.createDatabase(TestPostgres.template)
    var logger = Logger(label: "tender.test.postgres")
    logger.logLevel = .warning
    let client = PostgresClient(
      configuration: try DatabaseURL.configuration(from: cluster.url(database: TestPostgres.template)),
      backgroundLogger: logger)
    try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask { await client.run() }
      // Closed before any copy: PostgreSQL copies a template only while nobody is connected to it.
      defer { group.cancelAll() }
      _ = try await Migrator(client: client, logger: logger).migrate()
    }
    return cluster
  }

  /// The shared cluster, started on first call.
  public static func shared() async throws -> LocalPostgres {
    try await self.cluster.value
  }

  /// A new database in the shared cluster, migrated (or `empty`); returns its URL.
  public static func makeDatabase(empty: Bool = false) async throws -> String {
    let cluster = try await self.shared()
    let name = "t\(getpid())_\(self.counter.add(1, ordering: .relaxed).newValue)"
    try await cluster.createDatabase(name, template: empty ? nil : Self.template)
    return cluster.url(database: name)
  }
}
