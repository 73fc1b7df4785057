import Logging
import PostgresNIO
import TenderPostgres
import TenderTesting
import Testing

@Suite("Migrations against a real PostgreSQL")
struct MigratorTests {
  let logger = Logger(label: "tender.test.migrations")

  /// Applied versions as the database records them.
  static func recordedVersions(_ client: PostgresClient) async throws -> [Int] {
    var versions: [Int] = []
    for try await version in try await client.query("SELECT version FROM tender_schema_migrations ORDER BY version")
      .decode(Int.self)
    {
      versions.append(version)
    }
    return versions
  }

  static func tableExists(_ client: PostgresClient, _ name: String) async throws -> Bool {
    for try await exists in try await client.query("SELECT to_regclass(\(name)) IS NOT NULL").decode(Bool.self) {
      return exists
    }
    return false
  }

  @Test("Applying migrations twice applies each once and leaves one correct schema")
  func migrateTwice() async throws {
    let url = try await TestPostgres.makeDatabase(empty: true)
    try await withPostgresClient(url) { client in
      let migrator = Migrator(client: client, logger: self.logger)
      let first = try await migrator.migrate()
      #expect(first == Migrations.all.map(\.version))
      let second = try await migrator.migrate()
      #expect(second.isEmpty)
      #expect(try await Self.recordedVersions(client) == Migrations.all.map(\.version))
      #expect(try await Self.tableExists(client, "merchants"))
    }
  }

  @Test("Two `tender migrate` processes racing on one database both succeed and apply each migration once")
  func concurrentProcesses() async throws {
    let url = try await TestPostgres.makeDatabase(empty: true)
    async let first = TenderExecutable.run(["migrate", "--database-url", url])
    async let second = TenderExecutable.run(["migrate", "--database-url", url])
    let outcomes = try await [first, second]
    for outcome in outcomes {
      #expect(outcome.status == 0, "\(outcome.standardError)")
    }
    try await withPostgresClient(url) { client in
      let versions = try await Self.recordedVersions(client)
      #expect(versions == Migrations.all.map(\.version))
      let merchantsExists = try await Self.tableExists(client, "merchants")
      #expect(merchantsExists)
    }
  }

  @Test("A migration edited after it was applied is refused, not silently skipped")
  func editedMigrationRefused() async throws {
    let url = try await TestPostgres.makeDatabase(empty: true)
    try await withPostgresClient(url) { client in
      try await Migrator(client: client, logger: self.logger).migrate()
      let original = Migrations.all[0]
      let edited = Migration(
        version: original.version, name: original.name, statements: original.statements + ["SELECT 1"])
      await #expect(throws: Migrator.Failure.self) {
        try await Migrator(client: client, migrations: [edited], logger: self.logger).migrate()
      }
    }
  }

  @Test("A database migrated by a newer build is refused by an older one")
  func newerSchemaRefused() async throws {
    let url = try await TestPostgres.makeDatabase(empty: true)
    try await withPostgresClient(url) { client in
      let newer =
        Migrations.all + [Migration(version: 9_999, name: "future", statements: ["CREATE TABLE future_table (id int)"])]
      try await Migrator(client: client, migrations: newer, logger: self.logger).migrate()
      await #expect(throws: Migrator.Failure.self) {
        try await Migrator(client: client, logger: self.logger).migrate()
      }
    }
  }
}
