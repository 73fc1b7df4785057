public import Logging
public import PostgresNIO

/// Applies Tender's migrations: safe to run twice and safe when several processes race.
///
/// Everything happens in one transaction that first takes a transaction-scoped advisory lock, so
/// concurrent migrators queue behind each other and each one sees the others' committed work.
public struct Migrator: Sendable {
  /// Advisory lock key reserved for schema migrations ("tender" in ASCII).
  static let lockKey: Int64 = 0x7465_6e64_6572

  public enum Failure: Error, CustomStringConvertible {
    /// A migration recorded as applied differs from the one in this build.
    case checksumMismatch(version: Int, name: String)
    /// The database has a migration this build does not know: it is older than the schema.
    case unknownVersion(Int)

    public var description: String {
      switch self {
      case .checksumMismatch(let version, let name):
        return "migration \(version) (\(name)) was changed after it was applied"
      case .unknownVersion(let version):
        return "the database has migration \(version), which this build does not know; deploy a newer build"
      }
    }
  }

  private let client: PostgresClient
  private let migrations: [Migration]
  private let logger: Logger

  public init(client: PostgresClient, migrations: [Migration] = Migrations.all, logger: Logger) {
    self.client = client
    self.migrations = migrations.sorted { $0.version < $1.version }
    self.logger = logger
  }

  /// Applies every pending migration and returns the versions it applied (empty when up to date).
  @discardableResult
  public func migrate() async throws -> [Int] {
    do {
      return try await self.migrateInTransaction()
    } catch let error as PostgresTransactionError {
      // Our own refusals travel inside the transaction error; surface them as they are.
      if let failure = error.closureError as? Failure { throw failure }
      throw error
    }
  }

  private func migrateInTransaction() async throws -> [Int] {
    let migrations = self.migrations
    let logger = self.logger
    return try await self.client.withTransaction(logger: logger) { connection in
      // Migrations may wait for another migrator and rebuild large tables: the pool's statement
      // and lock timeouts are for the serving path, not for this transaction.
      try await connection.query("SET LOCAL statement_timeout = 0", logger: logger)
      try await connection.query("SET LOCAL lock_timeout = 0", logger: logger)
      try await connection.query("SELECT pg_advisory_xact_lock(\(Self.lockKey))", logger: logger)
      try await connection.query(
        """
        CREATE TABLE IF NOT EXISTS tender_schema_migrations (
          version     integer PRIMARY KEY,
          name        text NOT NULL,
          checksum    text NOT NULL,
          apply_time  timestamptz NOT NULL DEFAULT now()
        )
        """,
        logger: logger
      )
      var applied: [Int: String] = [:]
      let rows = try await connection.query(
        "SELECT version, checksum FROM tender_schema_migrations",
        logger: logger
      )
      for try await (version, checksum) in rows.decode((Int, String).self) {
        applied[version] = checksum
      }
      let known = Set(migrations.map(\.version))
      if let unknown = applied.keys.filter({ !known.contains($0) }).max() {
        throw Failure.unknownVersion(unknown)
      }
      var newlyApplied: [Int] = []
      for migration in migrations {
        if let checksum = applied[migration.version] {
          guard checksum == migration.checksum else {
            throw Failure.checksumMismatch(version: migration.version, name: migration.name)
          }
          continue
        }
        for statement in migration.statements {
          try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
        }
        try await connection.query(
          """
          INSERT INTO tender_schema_migrations (version, name, checksum)
          VALUES (\(migration.version), \(migration.name), \(migration.checksum))
          """,
          logger: logger
        )
        logger.info("applied migration", metadata: ["version": "\(migration.version)", "name": "\(migration.name)"])
        newlyApplied.append(migration.version)
      }
      return newlyApplied
    }
  }
}
