import Foundation
import Logging
import PostgresNIO
import Synchronization
public import TenderDevSupport
import TenderPostgres

/// One throwaway PostgreSQL cluster per test process, started on first use and stopped at exit.
///
/// Each test gets a database of its own: a schema in the cluster's one test database, owned by a
/// login role of the same name. PostgreSQL puts a schema named after the role first on that
/// role's search path, so everything connecting with the returned URL — Tender's stores, its
/// migrator, a test's own SQL — sees only that schema's tables, as if it were a database. A
/// schema costs a few catalog rows where a database copies a whole catalog (about 0.4 s of CPU
/// each, one at a time), and tests make a hundred of them.
public enum TestPostgres {
  private static let started = Mutex<LocalPostgres?>(nil)
  private static let counter = Atomic<Int>(0)
  static let database = "tender_test"
  private static let logger = {
    var logger = Logger(label: "tender.test.postgres")
    logger.logLevel = .warning
    return logger
  }()

  /// The cluster and a superuser pool on its test database, which creates the roles and schemas.
  private static let cluster = Task<(LocalPostgres, PostgresClient), any Error> {
    let directory = URL(fileURLWithPath: NSTemporaryDirectory())
      .appendingPathComponent("tender-test-pg-\(getpid())", isDirectory: true)
    // Every test server, crash-test process and store test has a pool of its own, all at once.
    let cluster = try await LocalPostgres.start(
      in: directory, port: try LocalPostgres.freePort(), database: TestPostgres.database, maxConnections: 1000,
      durable: false
    )
    TestPostgres.started.withLock { $0 = cluster }
    atexit {
      TestPostgres.started.withLock { $0 }?.destroy()
    }
    let admin = PostgresClient(
      configuration: try DatabaseURL.configuration(from: cluster.url(database: TestPostgres.database)),
      backgroundLogger: TestPostgres.logger)
    // Runs until the process exits (the cluster is stopped then).
    Task.detached { await admin.run() }
    return (cluster, admin)
  }

  /// The shared cluster, started on first call.
  public static func shared() async throws -> LocalPostgres {
    try await self.cluster.value.0
  }

  /// A new database of this test's own, migrated (or `empty`); returns its URL.
  public static func makeDatabase(empty: Bool = false) async throws -> String {
    let (cluster, admin) = try await self.cluster.value
    let name = "t\(getpid())_\(self.counter.add(1, ordering: .relaxed).newValue)"
    try await admin.withTransaction(logger: Self.logger) { connection in
      try await connection.query(PostgresQuery(unsafeSQL: "CREATE ROLE \(name) LOGIN"), logger: Self.logger)
      try await connection.query(
        PostgresQuery(unsafeSQL: "CREATE SCHEMA \(name) AUTHORIZATION \(name)"), logger: Self.logger)
    }
    let url = cluster.url(database: Self.database, user: name)
    if !empty {
      try await withPostgresClient(url) { client in
        _ = try await Migrator(client: client, logger: Self.logger).migrate()
      }
    }
    return url
  }
}
