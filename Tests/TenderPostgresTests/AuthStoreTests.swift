import Logging
import PostgresNIO
import TenderAuth
import TenderPostgres
import TenderTesting
import Testing

@Suite("Auth store against a real PostgreSQL")
struct AuthStoreTests {
  @Test("A client of a disabled merchant stands disabled, whatever its own status (before, it kept moving money)")
  func disabledMerchant() async throws {
    let url = try await TestPostgres.makeDatabase()
    let (clientID, _) = try await TestPostgres.makeClient(
      database: url, merchantID: "mer_shop", scopes: ["payments:write"])
    try await withPostgresClient(url) { client in
      let store = PostgresAuthStore(client: client, logger: Logger(label: "tender.test.auth"))
      #expect(try await store.standing(clientID: clientID, tokenID: "tok_a").clientStatus == .active)
      try await client.query("UPDATE merchants SET status = 'disabled' WHERE merchant_id = 'mer_shop'")
      #expect(try await store.standing(clientID: clientID, tokenID: "tok_a").clientStatus == .disabled)
      try await client.query("UPDATE merchants SET status = 'active' WHERE merchant_id = 'mer_shop'")
      #expect(try await store.standing(clientID: clientID, tokenID: "tok_a").clientStatus == .active)
      #expect(try await store.standing(clientID: "cli_unknown", tokenID: "tok_a").clientStatus == nil)
    }
  }
}
