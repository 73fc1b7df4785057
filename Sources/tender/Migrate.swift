import ArgumentParser
import Foundation
import Logging
import PostgresNIO
import TenderPostgres
import TenderServer

struct Migrate: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Apply pending database migrations (safe to run twice, and concurrently)."
  )

  @Option(name: .customLong("database-url"), help: "\(Setting.databaseURL.help) [$TENDER_DATABASE_URL]")
  var databaseURL: String?

  func run() async throws {
    let database: PostgresClient.Configuration
    do {
      database = try await Setting.databaseURL.resolve(\.database, flag: self.databaseURL)
    } catch let error as ConfigurationError {
      exitWithConfigurationError(error)
    }
    let logger = makeLogger(level: .info)
    let applied = try await migrate(database, logger: logger)
    logger.notice("migrations up to date", metadata: ["applied": "\(applied)"])
  }
}

/// Runs the migrator with a pool that lives only as long as the migration.
func migrate(_ database: PostgresClient.Configuration, logger: Logger) async throws -> [Int] {
  let client = PostgresClient(configuration: database, backgroundLogger: logger)
  return try await withThrowingTaskGroup(of: [Int]?.self) { group in
    group.addTask {
      await client.run()
      return nil
    }
    defer { group.cancelAll() }
    return try await Migrator(client: client, logger: logger).migrate()
  }
}
