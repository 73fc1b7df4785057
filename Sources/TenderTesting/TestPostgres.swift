import Foundation
import Logging
import PostgresNIO
import Synchronization
import TenderAuth
import TenderCore
public import TenderDevSupport
import TenderPostgres

/// One throwaway PostgreSQL cluster per test process, started on first use and stopped at exit;
/// each test gets a database of its own in it, copied from a template that has every migration
/// applied (so each test does not migrate its own), or empty for the migration tests.
public enum TestPostgres {
  private static let started = Mutex<LocalPostgres?>(nil)
  private static let counter = Atomic<Int>(0)
  static let template = "tender_template"
  private static let logger = {
    var logger = Logger(label: "tender.test.postgres")
    logger.logLevel = .warning
    return logger
  }()

  /// The cluster, and a superuser pool (on its maintenance database) that creates the databases.
  private static let cluster = Task<(LocalPostgres, PostgresClient), any Error> {
    // In memory where the system has a tmpfs: a database is a thousand small files, which a disk
    // file system is slow to create (about 0.4 s of CPU per copy on ext4, 0.07 s on tmpfs).
    var isDirectory: ObjCBool = false
    let inMemory =
      FileManager.default.fileExists(atPath: "/dev/shm", isDirectory: &isDirectory) && isDirectory.boolValue
      && FileManager.default.isWritableFile(atPath: "/dev/shm")
    let directory = URL(fileURLWithPath: inMemory ? "/dev/shm" : NSTemporaryDirectory())
      .appendingPathComponent("tender-test-pg-\(getpid())", isDirectory: true)
    // Every test server, crash-test process and store test has a pool of its own, all at once.
    let cluster = try await LocalPostgres.start(
      in: directory, port: try LocalPostgres.freePort(), database: "tender_test", maxConnections: 1000, durable: false
    )
    TestPostgres.started.withLock { $0 = cluster }
    atexit {
      guard let cluster = TestPostgres.started.withLock({ $0 }) else { return }
      // The card-data scan (tests/support/card_scan.py) reads every row after the run; it stops
      // and removes the cluster then.
      if let scan = ProcessInfo.processInfo.environment["TENDER_CARD_SCAN_DIR"], !scan.isEmpty {
        let note = URL(fileURLWithPath: scan).appendingPathComponent("postgres-\(getpid()).cluster")
        if (try? "\(cluster.port)\t\(cluster.directory.path)".write(to: note, atomically: true, encoding: .utf8)) != nil
        {
          return
        }
      }
      cluster.destroy()
    }
    try await cluster.createDatabase(TestPostgres.template)
    // Closed before any copy: PostgreSQL copies a template only while nobody is connected to it.
    try await withPostgresClient(cluster.url(database: TestPostgres.template)) { client in
      _ = try await Migrator(client: client, logger: TestPostgres.logger).migrate()
    }
    let admin = PostgresClient(
      configuration: try DatabaseURL.configuration(from: cluster.url(database: "postgres")),
      backgroundLogger: TestPostgres.logger)
    // Runs until the process exits (the cluster is stopped then).
    Task.detached { await admin.run() }
    return (cluster, admin)
  }

  /// The shared cluster, started on first call.
  public static func shared() async throws -> LocalPostgres {
    try await self.cluster.value.0
  }

  /// A new database in the shared cluster, migrated (or `empty`); returns its URL.
  public static func makeDatabase(empty: Bool = false) async throws -> String {
    let (cluster, admin) = try await self.cluster.value
    let name = "t\(getpid())_\(self.counter.add(1, ordering: .relaxed).newValue)"
    // WAL_LOG copies block by block without the checkpoint FILE_COPY needs, which would make
    // every copy wait for the whole cluster's dirty pages.
    try await admin.query(
      PostgresQuery(
        unsafeSQL: "CREATE DATABASE \(name)" + (empty ? "" : " TEMPLATE \(Self.template) STRATEGY WAL_LOG")),
      logger: Self.logger)
    return cluster.url(database: name)
  }

  /// Creates the merchant (if it is missing) and an API client of it in the migrated database at
  /// `url`, through the same registry `tender client create` uses; returns the client's id and
  /// secret. The secret is hashed at the tests' cost (`TestServer.secretHashing`).
  public static func makeClient(
    database url: String, merchantID: String, scopes: [String]
  ) async throws -> (clientID: String, secret: String) {
    try await withPostgresClient(url) { client in
      let store = PostgresAuthStore(client: client, logger: Self.logger)
      try await store.ensureMerchant(id: merchantID, displayName: "Test merchant")
      let (record, secret) = try await ClientRegistry(
        store: store, hasher: ClientSecretHasher(parameters: TestServer.secretHashing), cache: nil
      ).create(merchantID: merchantID, scopes: scopes, displayName: "test")
      return (record.clientID, secret.value)
    }
  }
}
