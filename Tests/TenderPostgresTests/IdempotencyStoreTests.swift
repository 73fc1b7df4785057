import Crypto
import Foundation
import Logging
import PostgresNIO
import TenderCore
import TenderPostgres
import TenderTesting
import Testing

@Suite("Idempotency records against a real PostgreSQL")
struct IdempotencyStoreTests {
  let logger = Logger(label: "tender.test.idempotency")
  static let create = "tender.payments.v1.PaymentService/CreatePayment"

  func withStore(_ body: (PostgresIdempotencyStore, PostgresClient) async throws -> Void) async throws {
    let url = try await TestPostgres.makeDatabase()
    try await withPostgresClient(url) { client in
      for merchant in ["mer_a", "mer_b"] {
        try await client.query("INSERT INTO merchants (merchant_id, display_name) VALUES (\(merchant), \(merchant))")
      }
      try await body(PostgresIdempotencyStore(client: client, logger: self.logger), client)
    }
  }

  static func request(
    _ merchant: String = "mer_a", key: String = "order-42", method: String = create, body: String = "amount=100"
  ) -> IdempotencyRequest {
    var hash = SHA256()
    hash.update(data: Array(method.utf8) + [0] + Array(body.utf8))
    return IdempotencyRequest(
      merchant: MerchantID(merchant)!, key: key, method: method, fingerprint: Array(hash.finalize()))
  }

  static func kind(_ claim: IdempotencyClaim) -> String {
    switch claim {
    case .started: return "started"
    case .resumed: return "resumed"
    case .replay: return "replay"
    case .reused: return "reused"
    case .inUse: return "inUse"
    }
  }

  @Test(
    "A key its owner frees while another claim waits on its row is started afresh by that claim, not reported as vanished"
  )
  func freedDuringClaim() async throws {
    try await self.withStore { store, client in
      guard case .started = try await store.claim(Self.request(), lockFor: .seconds(30)) else {
        Issue.record("the first claim did not start the key")
        return
      }
      // Its lock ran out, so a claim goes on to take it over (an UPDATE, which waits on the row).
      try await client.query("UPDATE idempotency_keys SET locked_until = now() - interval '1 second'")
      try await client.withConnection { owner in
        // The owner holds the row, as releasing it does, while the claim is made.
        try await owner.query("BEGIN", logger: self.logger)
        try await owner.query("SELECT 1 FROM idempotency_keys FOR UPDATE", logger: self.logger)
        async let claimed = store.claim(Self.request(), lockFor: .seconds(30))
        // Once the claim waits on the row lock, the owner frees the key.
        let deadline = ContinuousClock.now + .seconds(30)
        var waiting: Int64 = 0
        while waiting == 0, ContinuousClock.now < deadline {
          waiting = try await client.query(
            "SELECT count(*)::bigint FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
          ).decode(Int64.self).reduce(0, +)
          if waiting == 0 { try await Task.sleep(for: .milliseconds(20)) }
        }
        #expect(waiting == 1, "the claim never waited on the row")
        try await owner.query("DELETE FROM idempotency_keys", logger: self.logger)
        try await owner.query("COMMIT", logger: self.logger)
        #expect(Self.kind(try await claimed) == "started")
      }
      let rows = try await client.query("SELECT count(*) FROM idempotency_keys").decode(Int.self).reduce(0, +)
      #expect(rows == 1)
    }
  }

  @Test("A claim of a key in use answers at once, without queueing behind a transaction holding its row")
  func inUseDoesNotWait() async throws {
    try await self.withStore { store, client in
      guard case .started = try await store.claim(Self.request(), lockFor: .seconds(30)) else {
        Issue.record("the first claim did not start the key")
        return
      }
      try await client.withConnection { owner in
        // Another claim, or the owner recording its progress, holds the row.
        try await owner.query("BEGIN", logger: self.logger)
        try await owner.query("SELECT 1 FROM idempotency_keys FOR UPDATE", logger: self.logger)
        // While the row is held: a claim that waited on it would fail at the lock timeout.
        #expect(Self.kind(try await store.claim(Self.request(), lockFor: .seconds(30))) == "inUse")
        try await owner.query("COMMIT", logger: self.logger)
      }
    }
  }

  @Test("Fifty concurrent claims of one key: exactly one starts, the others find it in use")
  func stampede() async throws {
    try await self.withStore { store, client in
      let kinds = try await withThrowingTaskGroup(of: String.self) { group in
        for _ in 0..<50 {
          group.addTask { Self.kind(try await store.claim(Self.request(), lockFor: .seconds(30))) }
        }
        return try await group.reduce(into: [String]()) { $0.append($1) }
      }
      #expect(kinds.filter { $0 == "started" }.count == 1)
      #expect(kinds.filter { $0 == "inUse" }.count == 49)
      let rows = try await client.query("SELECT count(*) FROM idempotency_keys").decode(Int.self).reduce(0, +)
      #expect(rows == 1)
    }
  }

  @Test(
    "After completion the stored response is replayed byte for byte; another request under the key is refused; merchants are separate"
  )
  func replayAndReuse() async throws {
    try await self.withStore { store, client in
      guard case .started(let record) = try await store.claim(Self.request(), lockFor: .seconds(30)) else {
        Issue.record("first claim did not start")
        return
      }
      let response = StoredResponse(
        code: 9, message: Array("card declined".utf8), details: [0x08, 0x09, 0x12, 0x00, 0xFF])
      try await store.finish(record.owner, response: response)
      #expect(try await store.claim(Self.request(), lockFor: .seconds(30)) == .replay(response))
      #expect(try await store.claim(Self.request(body: "amount=101"), lockFor: .seconds(30)) == .reused)
      #expect(
        try await store.claim(
          Self.request(method: "tender.refunds.v1.RefundService/CreateRefund"), lockFor: .seconds(30)) == .reused)
      #expect(Self.kind(try await store.claim(Self.request("mer_b"), lockFor: .seconds(30))) == "started")
      // Refusals changed nothing.
      let stored = try await client.query("SELECT count(*) FROM idempotency_keys WHERE merchant_id = 'mer_a'").decode(
        Int.self
      ).reduce(0, +)
      #expect(stored == 1)
      #expect(try await store.claim(Self.request(), lockFor: .seconds(30)) == .replay(response))
    }
  }

  @Test("A stale lock is taken over and work resumes from its recovery point; a fresh lock is refused")
  func staleLockTakeover() async throws {
    try await self.withStore { store, client in
      guard case .started = try await store.claim(Self.request(), lockFor: .seconds(30)) else {
        Issue.record("first claim did not start")
        return
      }
      #expect(try await store.claim(Self.request(), lockFor: .seconds(30)) == .inUse)
      #expect(try await store.stale(limit: 10).isEmpty)
      // The owner crashed: its lock runs out (moved into the past rather than waited for).
      try await client.query("UPDATE idempotency_keys SET locked_until = now() - interval '1 second'")
      let stale = try await store.stale(limit: 10)
      #expect(stale.map(\.request.key) == ["order-42"])
      guard case .resumed(let record) = try await store.claim(Self.request(), lockFor: .seconds(30)) else {
        Issue.record("the stale lock was not taken over")
        return
      }
      #expect(record.recoveryPoint == .started)
      // The new owner's lock is fresh again.
      #expect(try await store.claim(Self.request(), lockFor: .seconds(30)) == .inUse)
      #expect(try await store.stale(limit: 10).isEmpty)
    }
  }

  @Test("A released record frees the key; finished records are reaped after 24 hours, not before")
  func releaseAndReap() async throws {
    try await self.withStore { store, client in
      guard case .started(let first) = try await store.claim(Self.request(key: "k1"), lockFor: .seconds(30)) else {
        Issue.record("first claim did not start")
        return
      }
      try await store.release(first.owner)
      #expect(Self.kind(try await store.claim(Self.request(key: "k1"), lockFor: .seconds(30))) == "started")

      for key in ["old", "young"] {
        guard case .started(let record) = try await store.claim(Self.request(key: key), lockFor: .seconds(30)) else {
          Issue.record("claim of \(key) did not start")
          return
        }
        try await store.finish(record.owner, response: StoredResponse(code: 0, message: [1], details: []))
      }
      try await client.query(
        "UPDATE idempotency_keys SET create_time = now() - interval '25 hours' WHERE idempotency_key = 'old'")
      // Asking for less than a day still keeps a day.
      #expect(try await store.reap(olderThan: .seconds(60)) == 1)
      let keys = try await client.query("SELECT idempotency_key FROM idempotency_keys ORDER BY idempotency_key").decode(
        String.self
      ).reduce(into: [String]()) { $0.append($1) }
      #expect(keys == ["k1", "young"])
    }
  }

  @Test(
    "A takeover fences the previous owner: its finish, release and lock renewal change nothing; the new owner's answer is what everyone gets"
  )
  func fencing() async throws {
    try await self.withStore { store, client in
      guard case .started(let first) = try await store.claim(Self.request(), lockFor: .seconds(30)) else {
        Issue.record("first claim did not start")
        return
      }
      #expect(first.ownerToken == 1 && first.history == .nothingSent)
      #expect(try await store.extend(first.owner, lockFor: .seconds(30)))
      try await client.query(
        "UPDATE idempotency_keys SET locked_until = now() - interval '1 second', provider_attempted = true")
      guard case .resumed(let second) = try await store.claim(Self.request(), lockFor: .seconds(30)) else {
        Issue.record("the stale lock was not taken over")
        return
      }
      #expect(second.ownerToken == 2 && second.history == .maybeSent)

      // The first owner lost the key: each of its writes is refused and changes nothing.
      let late = StoredResponse(code: 0, message: Array("late".utf8), details: [])
      await #expect(throws: FencedOut(first.owner)) { try await store.finish(first.owner, response: late) }
      await #expect(throws: FencedOut(first.owner)) { try await store.release(first.owner) }
      #expect(try await store.extend(first.owner, lockFor: .seconds(30)) == false)
      #expect(try await store.answer(merchant: MerchantID("mer_a")!, key: "order-42") == nil)

      let winner = StoredResponse(code: 0, message: Array("winner".utf8), details: [])
      try await store.finish(second.owner, response: winner)
      #expect(try await store.answer(merchant: MerchantID("mer_a")!, key: "order-42") == winner)
      #expect(try await store.claim(Self.request(), lockFor: .seconds(30)) == .replay(winner))
      // Finished: nobody writes again, the winner included.
      await #expect(throws: FencedOut(second.owner)) { try await store.finish(second.owner, response: late) }
      #expect(try await store.claim(Self.request(), lockFor: .seconds(30)) == .replay(winner))
    }
  }

  @Test("Keys are 1–255 printable ASCII characters")
  func keyValidation() {
    #expect(IdempotencyRequest.isValidKey("order-42"))
    #expect(IdempotencyRequest.isValidKey(String(repeating: "k", count: 255)))
    #expect(!IdempotencyRequest.isValidKey(""))
    #expect(!IdempotencyRequest.isValidKey(String(repeating: "k", count: 256)))
    #expect(!IdempotencyRequest.isValidKey("tab\there"))
    #expect(!IdempotencyRequest.isValidKey("naïve"))
  }
}
