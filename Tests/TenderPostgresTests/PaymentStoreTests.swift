import Foundation
import Logging
import PostgresNIO
import TenderCore
import TenderTesting
import Testing

@testable import TenderPostgres

@Suite("Payment store against a real PostgreSQL")
struct PaymentStoreTests {
  static let eur = Currency(code: "EUR")!
  let logger = Logger(label: "tender.test.payments")

  func withStore(
    merchants: [String] = ["mer_a", "mer_b"], _ body: (PostgresPaymentStore, PostgresClient) async throws -> Void
  ) async throws {
    let url = try await TestPostgres.makeDatabase()
    try await withPostgresClient(url) { client in
      for merchant in merchants {
        try await client.query("INSERT INTO merchants (merchant_id, display_name) VALUES (\(merchant), \(merchant))")
      }
      try await body(PostgresPaymentStore(client: client, logger: self.logger), client)
    }
  }

  static func newPayment(
    _ merchant: String, amount: Int64 = 100, method: CaptureMethod = .manual, customer: String = "",
    at time: Date = Date()
  ) -> PaymentRecord {
    PaymentRecord(
      id: .random(),
      merchantID: MerchantID(merchant)!,
      ledger: PaymentLedger(amount: Money(minorUnits: amount, currency: eur), captureMethod: method),
      paymentMethod: "pm_card_visa",
      customerReference: customer,
      description: "",
      metadata: ["order": "42"],
      providerPaymentID: nil,
      createTime: time,
      updateTime: time
    )
  }

  /// Waits until every transaction up to `position`'s has finished, so the feed shows it: other
  /// databases' transactions on the same server (parallel tests) hold the feed back for a moment.
  static func settle(_ store: PostgresPaymentStore, past position: PaymentEvent) async throws {
    try await self.settle(store, past: position.position)
  }

  static func settle(_ store: PostgresPaymentStore, past position: EventPosition) async throws {
    let deadline = ContinuousClock.now + .seconds(30)
    while try await store.currentPosition().transaction < position.transaction, ContinuousClock.now < deadline {
      try await Task.sleep(for: .milliseconds(10))
    }
  }

  /// A payment authorized for capture (manual) or captured (automatic).
  func authorized(
    _ store: PostgresPaymentStore, _ merchant: String, amount: Int64 = 100, method: CaptureMethod = .manual
  ) async throws -> PaymentRecord {
    let payment = Self.newPayment(merchant, amount: amount, method: method)
    _ = try await store.insert(payment)
    let updated = try await store.update(payment.id, merchant: payment.merchantID) { record in
      try record.ledger.providerAuthorized()
      record.providerPaymentID = "pi_test"
    }
    return try #require(updated).0
  }

  @Test("A payment reads back as written, and is not found for another merchant")
  func roundTrip() async throws {
    try await self.withStore { store, _ in
      let payment = Self.newPayment("mer_a", customer: "cus_1")
      let event = try await store.insert(payment)
      #expect(event.position > .start && event.type == .paymentCreated && event.toStatus == .processing)
      let read = try #require(try await store.payment(payment.id, merchant: payment.merchantID))
      #expect(
        read.id == payment.id && read.ledger == payment.ledger && read.metadata == ["order": "42"]
          && read.customerReference == "cus_1")
      #expect(abs(read.createTime.timeIntervalSince(payment.createTime)) < 0.001)
      #expect(try await store.payment(payment.id, merchant: MerchantID("mer_b")!) == nil)
      let foreign = try await store.update(payment.id, merchant: MerchantID("mer_b")!) { record in
        try record.ledger.providerAuthorized()
      }
      #expect(foreign == nil)
      #expect(try await store.payment(payment.id, merchant: payment.merchantID)?.ledger.status == .processing)
    }
  }

  @Test("Reads read together: each its own payment, none of another merchant's, none that does not exist")
  func readsTogether() async throws {
    try await self.withStore { store, client in
      var payments: [PaymentRecord] = []
      for index in 0..<10 {
        let payment = Self.newPayment(index % 2 == 0 ? "mer_a" : "mer_b", amount: 100 + Int64(index))
        _ = try await store.insert(payment)
        payments.append(payment)
      }
      let missing = PaymentID.random()
      var requests: [PostgresPaymentStore.PaymentByID] = []
      var expected: [PaymentRecord?] = []
      for payment in payments {
        let other = MerchantID(payment.merchantID.rawValue == "mer_a" ? "mer_b" : "mer_a")!
        requests += [
          .init(id: payment.id, merchant: payment.merchantID), .init(id: payment.id, merchant: other),
          .init(id: payment.id, merchant: payment.merchantID),
        ]
        expected += [payment, nil, payment]
      }
      requests.append(.init(id: missing, merchant: MerchantID("mer_a")!))
      expected.append(nil)
      // As one statement (the batch path), and through the store with every read at once.
      let together = try await PostgresPaymentStore.read(requests, client: client, logger: self.logger)
      let concurrent = try await withThrowingTaskGroup(of: (Int, PaymentRecord?).self) { group in
        for (index, request) in requests.enumerated() {
          group.addTask { (index, try await store.payment(request.id, merchant: request.merchant)) }
        }
        var answers = [PaymentRecord?](repeating: nil, count: requests.count)
        for try await (index, answer) in group { answers[index] = answer }
        return answers
      }
      #expect(together.count == requests.count)
      for (index, answer) in together.enumerated() {
        let read = try answer.get()
        #expect(read?.id == expected[index]?.id && read?.merchantID == expected[index]?.merchantID)
        #expect(read?.ledger == expected[index]?.ledger)
        #expect(concurrent[index]?.id == expected[index]?.id && concurrent[index]?.ledger == expected[index]?.ledger)
      }
    }
  }

  @Test("A refused change writes nothing: no status change, no event")
  func refusedChange() async throws {
    try await self.withStore { store, _ in
      let payment = Self.newPayment("mer_a")
      let created = try await store.insert(payment)
      await #expect(throws: DomainError.self) {
        _ = try await store.update(payment.id, merchant: payment.merchantID) { record in try record.ledger.capture(10) }
      }
      #expect(try await store.payment(payment.id, merchant: payment.merchantID)?.ledger.status == .processing)
      try await Self.settle(store, past: created)
      #expect(try await store.events(merchant: payment.merchantID, after: .start, limit: 10).count == 1)
    }
  }

  @Test("Capture racing cancel: exactly one wins, and the event log shows only legal transitions")
  func captureRacingCancel() async throws {
    try await self.withStore { store, client in
      for _ in 0..<10 {
        let payment = try await self.authorized(store, "mer_a")
        async let capture: Bool =
          (try? await store.update(payment.id, merchant: payment.merchantID) { try $0.ledger.capture(nil) }) != nil
        async let cancel: Bool =
          (try? await store.update(payment.id, merchant: payment.merchantID) { try $0.ledger.cancel() }) != nil
        let outcomes = await [capture, cancel]
        #expect(outcomes.filter { $0 }.count == 1)
        let final = try #require(try await store.payment(payment.id, merchant: payment.merchantID))
        #expect(final.ledger.status == (outcomes[0] ? .succeeded : .canceled))
      }
      // Every write above had a transaction id below this one's.
      let now = try await client.query("SELECT pg_current_xact_id()::text::bigint").decode(Int64.self).reduce(0) {
        max($0, $1)
      }
      try await Self.settle(store, past: EventPosition(transaction: now, id: 0))
      let events = try await store.events(merchant: MerchantID("mer_a")!, after: .start, limit: 1000)
      // Created, authorized, then captured or canceled: three per payment.
      #expect(events.count == 30)
      for event in events where event.type != .paymentCreated {
        let from = try #require(event.fromStatus)
        let to = try #require(event.toStatus)
        #expect(from.canMove(to: to), "\(from) → \(to)")
      }
    }
  }

  @Test("Double-refund race: two concurrent 60s on a captured 100 → one; many random refunds never exceed the capture")
  func refundRace() async throws {
    try await self.withStore { store, client in
      let payment = try await self.authorized(store, "mer_a", amount: 100, method: .automatic)
      let sixty = Money(minorUnits: 60, currency: Self.eur)
      async let first: Bool =
        (try? await store.update(payment.id, merchant: payment.merchantID) { try $0.ledger.reserveRefund(sixty) })
        != nil
      async let second: Bool =
        (try? await store.update(payment.id, merchant: payment.merchantID) { try $0.ledger.reserveRefund(sixty) })
        != nil
      #expect(await [first, second].filter { $0 }.count == 1)

      let big = try await self.authorized(store, "mer_a", amount: 10_000, method: .automatic)
      let granted = try await withThrowingTaskGroup(of: Int64.self) { group in
        for _ in 0..<60 {
          let amount = Int64.random(in: 1...700)
          group.addTask {
            let refund = Money(minorUnits: amount, currency: Self.eur)
            return (try? await store.update(big.id, merchant: big.merchantID) { try $0.ledger.reserveRefund(refund) })
              != nil ? amount : 0
          }
        }
        return try await group.reduce(0, +)
      }
      let stored = try #require(try await store.payment(big.id, merchant: big.merchantID))
      #expect(stored.ledger.refundedMinorUnits == granted)
      #expect(granted <= 10_000)
      // And in SQL, for every payment.
      let violations = try await client.query("SELECT count(*) FROM payments WHERE refunded_minor > captured_minor")
        .decode(Int.self).reduce(0, +)
      #expect(violations == 0)
    }
  }

  @Test("Keyset pagination returns every payment exactly once while new ones are inserted")
  func paginationUnderInserts() async throws {
    try await self.withStore { store, _ in
      let merchant = MerchantID("mer_a")!
      var originals = Set<PaymentID>()
      // Several payments per timestamp, so ties are broken by id.
      let base = Date(timeIntervalSince1970: 1_790_000_000)
      let payments = (0..<230).map { index in Self.newPayment("mer_a", at: base.addingTimeInterval(Double(index / 3))) }
      // Inserted eight at a time (their order does not matter: the listing orders them).
      for batch in stride(from: 0, to: payments.count, by: 8) {
        try await withThrowingTaskGroup(of: Void.self) { group in
          for payment in payments[batch..<min(batch + 8, payments.count)] {
            group.addTask { _ = try await store.insert(payment) }
          }
          try await group.waitForAll()
        }
      }
      originals = Set(payments.map(\.id))
      _ = try await store.insert(Self.newPayment("mer_b", at: base))
      var seen: [PaymentID] = []
      var cursor: PageCursor?
      var pages = 0
      repeat {
        let page = try await store.list(merchant: merchant, filter: PaymentFilter(), pageSize: 50, after: cursor)
        seen += page.items.map(\.id)
        cursor = page.next
        pages += 1
        // Newer payments arrive between pages; they sort before the cursor and do not disturb it.
        _ = try await store.insert(Self.newPayment("mer_a"))
      } while cursor != nil
      let fromOriginal = seen.filter { originals.contains($0) }
      #expect(fromOriginal.count == 230)
      #expect(Set(fromOriginal).count == 230)
      #expect(Set(seen).count == seen.count)
      #expect(pages == 5)
    }
  }

  @Test("Filters: status, customer reference, creation time")
  func filters() async throws {
    try await self.withStore { store, _ in
      let merchant = MerchantID("mer_a")!
      let early = Date(timeIntervalSince1970: 1_790_000_000)
      _ = try await store.insert(Self.newPayment("mer_a", customer: "cus_1", at: early))
      _ = try await store.insert(Self.newPayment("mer_a", customer: "cus_2", at: early.addingTimeInterval(10)))
      _ = try await self.authorized(store, "mer_a")
      let processing = try await store.list(
        merchant: merchant, filter: PaymentFilter(statuses: [.processing]), pageSize: 10, after: nil)
      #expect(processing.items.count == 2)
      let byCustomer = try await store.list(
        merchant: merchant, filter: PaymentFilter(customerReference: "cus_2"), pageSize: 10, after: nil)
      #expect(byCustomer.items.map(\.customerReference) == ["cus_2"])
      let window = try await store.list(
        merchant: merchant, filter: PaymentFilter(createdFrom: early, createdBefore: early.addingTimeInterval(5)),
        pageSize: 10, after: nil)
      #expect(window.items.map(\.customerReference) == ["cus_1"])
    }
  }

  @Test(
    "A reader following the feed during 40 concurrent writes for two merchants sees each of its merchant's events once, in order"
  )
  func eventFeedUnderConcurrency() async throws {
    try await self.withStore { store, _ in
      let merchant = MerchantID("mer_a")!
      let start = try await store.currentPosition()
      async let followed: [PaymentEvent] = {
        var seen: [PaymentEvent] = []
        var after = start
        let deadline = ContinuousClock.now + .seconds(30)
        while seen.count < 20 && ContinuousClock.now < deadline {
          let batch = try await store.events(merchant: merchant, after: after, limit: 7)
          seen += batch
          after = batch.last?.position ?? after
          if batch.isEmpty { try await Task.sleep(for: .milliseconds(5)) }
        }
        return seen
      }()
      try await withThrowingTaskGroup(of: Void.self) { group in
        for index in 0..<40 {
          group.addTask { _ = try await store.insert(Self.newPayment(index % 2 == 0 ? "mer_a" : "mer_b")) }
        }
        try await group.waitForAll()
      }
      let seen = try await followed
      #expect(seen.count == 20)
      #expect(Set(seen.map(\.paymentID)).count == 20)
      #expect(zip(seen, seen.dropFirst()).allSatisfy { $0.position < $1.position })
      #expect(seen.allSatisfy { $0.merchantID == merchant })
      // Read again from scratch, and resumed after the 15th: the same events, the same order.
      #expect(try await store.events(merchant: merchant, after: start, limit: 100) == seen)
      #expect(try await store.events(merchant: merchant, after: seen[14].position, limit: 100) == Array(seen[15...]))
    }
  }

  @Test("An event of a transaction still open holds back later events until it commits, so a reader never skips it")
  func openTransactionHoldsTheFeed() async throws {
    try await self.withStore { store, client in
      let merchant = MerchantID("mer_a")!
      let start = try await store.currentPosition()
      let (opened, openedSignal) = AsyncStream.makeStream(of: Void.self)
      let (release, releaseSignal) = AsyncStream.makeStream(of: Void.self)
      let early = Self.newPayment("mer_a")
      // A writer that takes its transaction id first and commits last.
      let slowWriter = Task {
        try await client.withTransaction(logger: self.logger) { connection in
          try await connection.query(
            "INSERT INTO payments (payment_id, merchant_id, status, capture_method, currency, amount_minor, payment_method) VALUES (\(early.id.rawValue), 'mer_a', 'processing', 'manual', 'EUR', 100, 'pm_card_visa')",
            logger: self.logger
          )
          try await connection.query(
            "INSERT INTO payment_events (merchant_id, payment_id, type, to_status, amount_minor) VALUES ('mer_a', \(early.id.rawValue), 'payment_created', 'processing', 100)",
            logger: self.logger
          )
          openedSignal.yield()
          for await _ in release { break }
        }
      }
      for await _ in opened { break }
      // A later writer commits first.
      let late = try await store.insert(Self.newPayment("mer_a"))
      #expect(try await store.events(merchant: merchant, after: start, limit: 10).isEmpty)
      releaseSignal.yield()
      try await slowWriter.value
      try await Self.settle(store, past: late)
      let events = try await store.events(merchant: merchant, after: start, limit: 10)
      #expect(events.map(\.paymentID) == [early.id, late.paymentID])
    }
  }
}
