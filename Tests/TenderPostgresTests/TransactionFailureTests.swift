import Logging
import PostgresNIO
@testable import TenderPostgres
import TenderTesting
import Testing

/// How a transaction that fails outside its closure (at BEGIN or COMMIT) is reported.
@Suite("Transaction failures against a real PostgreSQL")
struct TransactionFailureTests {
  let logger = Logger(label: "tender.test.transactions")

  @Test(
    "A transaction that fails at COMMIT surfaces as the database's own error (here a deferred constraint, which is not unavailability)"
  )
  func constraintAtCommit() async throws {
    let url = try await TestPostgres.makeDatabase()
    try await withPostgresClient(url) { client in
      try await client.query("CREATE TABLE parent (id int PRIMARY KEY)")
      try await client.query(
        "CREATE TABLE child (parent_id int REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)")
      let logger = self.logger
      let failure = await #expect(throws: PSQLError.self) {
        try await unwrappingTransactionError {
          try await client.withTransaction(logger: logger) { connection in
            try await connection.query("INSERT INTO child VALUES (7)", logger: logger)
          }
        }
      }
      #expect(failure?.serverInfo?[.sqlState] == "23503")
      #expect(failure.map(PostgresFailures.isUnavailable) == false)
    }
  }
}
