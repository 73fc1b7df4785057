import Logging
import PostgresNIO
import TenderPostgres
import TenderTesting
import Testing

/// The statement and lock timeouts every pooled connection runs with.
@Suite("Database timeouts against a real PostgreSQL")
struct DatabaseTimeoutTests {
  static func setting(_ client: PostgresClient, _ name: String) async throws -> String {
    try await client.query(PostgresQuery(unsafeSQL: "SHOW \(name)")).decode(String.self).reduce("") { $0 + $1 }
  }

  @Test("Connections get the default timeouts, or the URL's")
  func defaults() async throws {
    let url = try await TestPostgres.makeDatabase()
    let defaults = try await withPostgresClient(url) { client in
      (try await Self.setting(client, "statement_timeout"), try await Self.setting(client, "lock_timeout"))
    }
    #expect(defaults.0 == "15s" && defaults.1 == "5s")
    let chosen = try await withPostgresClient(url + "&statement_timeout=2min&lock_timeout=0") { client in
      (try await Self.setting(client, "statement_timeout"), try await Self.setting(client, "lock_timeout"))
    }
    #expect(chosen.0 == "2min" && chosen.1 == "0")
  }

  @Test("A statement waiting on a lock gives up after lock_timeout; a slow one after statement_timeout")
  func timeoutsEndWaits() async throws {
    let url = try await TestPostgres.makeDatabase()
    try await withPostgresClient(url + "&lock_timeout=300ms&statement_timeout=1s") { client in
      try await client.query("CREATE TABLE held (id int PRIMARY KEY)")
      try await client.query("INSERT INTO held VALUES (1)")
      let (locked, lockedContinuation) = AsyncStream.makeStream(of: Void.self)
      let (release, releaseContinuation) = AsyncStream.makeStream(of: Void.self)
      async let holder: Void = client.withTransaction(logger: Logger(label: "tender.test")) { connection in
        try await connection.query("SELECT id FROM held WHERE id = 1 FOR UPDATE", logger: Logger(label: "tender.test"))
        lockedContinuation.finish()
        for await _ in release {}
      }
      for await _ in locked {}
      let lockError = await #expect(throws: PSQLError.self) {
        try await client.query("UPDATE held SET id = 2 WHERE id = 1")
      }
      #expect(lockError?.serverInfo?[.sqlState] == "55P03")  // lock_not_available
      releaseContinuation.finish()
      try await holder
      let slowError = await #expect(throws: PSQLError.self) {
        _ = try await client.query("SELECT pg_sleep(5)").collect()
      }
      #expect(slowError?.serverInfo?[.sqlState] == "57014")  // query_canceled
    }
  }
}
