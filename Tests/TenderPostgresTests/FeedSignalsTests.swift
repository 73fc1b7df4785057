import Foundation
import Logging
import PostgresNIO
import TenderAuth
import TenderCore
@testable import TenderPostgres
import TenderTesting
import Testing

@Suite("Feed signals from a real PostgreSQL (LISTEN/NOTIFY)")
struct FeedSignalsTests {
  @Test(
    "A transaction that writes payment events names itself; a revocation, a disabled client and a disabled merchant name whose standing changed"
  )
  func signals() async throws {
    try await Self.listening { client, signals, logger, clientID in
      let announcer = PostgresEventAnnouncer(client: client, logger: logger)
      let announcing = Task { try await announcer.run() }
      defer { announcing.cancel() }
      let store = PostgresPaymentStore(client: client, logger: logger, announcer: announcer)
      let payment = PaymentStoreTests.newPayment("mer_a")
      let event = try await store.insert(payment)
      #expect(await signals.next() == .events(transaction: event.position.transaction))

      let auth = PostgresAuthStore(client: client, logger: logger)
      try await auth.revoke(tokenID: "tok_x", clientID: clientID, expireTime: Date() + 60, revokedBy: clientID)
      #expect(await signals.next() == .standing(.token("tok_x")))
      _ = try await auth.setStatus(clientID: clientID, status: .disabled)
      #expect(await signals.next() == .standing(.client(clientID)))
      try await client.query("UPDATE merchants SET status = 'disabled' WHERE merchant_id = 'mer_a'")
      #expect(await signals.next() == .standing(.merchant("mer_a")))
      // Only changes of standing are signalled: a client's unchanged status says nothing.
      _ = try await auth.setStatus(clientID: clientID, status: .disabled)
      try await auth.revoke(tokenID: "tok_y", clientID: clientID, expireTime: Date() + 60, revokedBy: clientID)
      #expect(await signals.next() == .standing(.token("tok_y")))
    }
  }

  @Test(
    "Payment events are announced once committed: a write that rolls back announces nothing, and what commits between two announcements is announced once, by its newest transaction"
  )
  func announcements() async throws {
    try await Self.listening { client, signals, logger, _ in
      // Reported before the announcer runs: announced together, once, by the newest.
      let announcer = PostgresEventAnnouncer(client: client, logger: logger)
      for transaction in [Int64(7), 9, 8] { announcer.committed(transaction: transaction) }
      let announcing = Task { try await announcer.run() }
      defer { announcing.cancel() }
      #expect(await signals.next() == .events(transaction: 9))

      let store = PostgresPaymentStore(client: client, logger: logger, announcer: announcer)
      let payment = PaymentStoreTests.newPayment("mer_a")
      let first = try await store.insert(payment)
      #expect(await signals.next() == .events(transaction: first.position.transaction))
      // A call that wrote events and then failed (rolled back) announces nothing.
      struct RolledBack: Error {}
      await #expect(throws: RolledBack.self) {
        try await WrittenEvents.announcing(to: announcer) {
          WrittenEvents.record(transaction: first.position.transaction + 1_000_000)
          throw RolledBack()
        }
      }
      let second = try await store.insert(PaymentStoreTests.newPayment("mer_a"))
      #expect(await signals.next() == .events(transaction: second.position.transaction))
      // Without an announcer, a store announces nothing (and the triggers of old are gone).
      let third = try await PostgresPaymentStore(client: client, logger: logger).insert(
        PaymentStoreTests.newPayment("mer_a"))
      let fourth = try await store.insert(PaymentStoreTests.newPayment("mer_a"))
      #expect(third.position.transaction < fourth.position.transaction)
      #expect(await signals.next() == .events(transaction: fourth.position.transaction))
    }
  }

  /// Runs `body` with a client of a new database, whose merchant `mer_a` has an API client (its
  /// id is passed on), and the feed signals that database sends, the first (`resynchronize`)
  /// already taken.
  static func listening(
    _ body: (PostgresClient, inout AsyncStream<FeedSignal>.Iterator, Logger, String) async throws -> Void
  ) async throws {
    let url = try await TestPostgres.makeDatabase()
    let (clientID, _) = try await TestPostgres.makeClient(
      database: url, merchantID: "mer_a", scopes: ["payments:read"])
    let logger = Logger(label: "tender.test.signals")
    try await withPostgresClient(url) { client in
      let (received, continuation) = AsyncStream.makeStream(of: FeedSignal.self)
      let listener = Task {
        try await PostgresFeedSignals(client: client, logger: logger).listen { continuation.yield($0) }
      }
      defer { listener.cancel() }
      var signals = received.makeAsyncIterator()
      #expect(await signals.next() == .resynchronize)
      try await body(client, &signals, logger, clientID)
    }
  }
}
