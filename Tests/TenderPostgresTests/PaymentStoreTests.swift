import Foundation
import Logging
import PostgresNIO
import TenderCore
import TenderPostgres
import TenderTesting
import Testing

@Suite("Payment store against a real PostgreSQL")
struct PaymentStoreTests {
  static let eur = Currency(code: "EUR")!
  let logger = Logger(label: "tender.test.payments")

  func withStore(merchants: [String] = ["mer_a", "mer_b"], _ body: (PostgresPaymentStore, PostgresClient) async throws -> Void) async throws {
    let url = try TestPostgres.makeDatabase()
    try await withPostgresClient(url) { client in
      try await Migrator(client: client, logger: self.logger).migrate()
      for merchant in merchants {
        try await client.query("INSERT INTO merchants (merchant_id, display_name) VALUES (\(merchant), \(merchant))")
      }
      try await body(PostgresPaymentStore(client: client, logger: self.logger), client)
    }
  }

  static func newPayment(_ merchant: String, amount: Int64 = 100, method: CaptureMethod = .manual, customer: String = "", at time: Date = Date()) -> PaymentRecord {
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

  /// A payment authorized for capture (manual) or captured (automatic).
  func authorized(_ store: PostgresPaymentStore, _ merchant: String, amount: Int64 = 100, method: CaptureMethod = .manual) async throws -> PaymentRecord {
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
      #expect(event.sequence == 1 && event.type == .paymentCreated && event.toStatus == .processing)
      let read = try #require(try await store.payment(payment.id, merchant: payment.merchantID))
      #expect(read.id == payment.id && read.ledger == payment.ledger && read.metadata == ["order": "42"] && read.customerReference == "cus_1")
      #expect(abs(read.createTime.timeIntervalSince(payment.createTime)) < 0.001)
      #expect(try await store.payment(payment.id, merchant: MerchantID("mer_b")!) == nil)
      let foreign = try await store.update(payment.id, merchant: MerchantID("mer_b")!) { record in try record.ledger.providerAuthorized() }
      #expect(foreign == nil)
      #expect(try await store.payment(payment.id, merchant: payment.merchantID)?.ledger.status == .processing)
    }
  }

  @Test("A refused change writes nothing: no status change, no event")
  func refusedChange() async throws {
    try await self.withStore { store, _ in
      let payment = Self.newPayment("mer_a")
      _ = try await store.insert(payment)
      await #expect(throws: DomainError.self) {
        _ = try await store.update(payment.id, merchant: payment.merchantID) { record in try record.ledger.capture(10) }
      }
      #expect(try await store.payment(payment.id, merchant: payment.merchantID)?.ledger.status == .processing)
      #expect(try await store.events(merchant: payment.merchantID, after: 0, limit: 10).count == 1)
    }
  }

  @Test("Capture racing cancel: exactly one wins, and the event log shows only legal transitions")
  func captureRacingCancel() async throws {
    try await self.withStore { store, _ in
      for _ in 0..<10 {
        let payment = try await self.authorized(store, "mer_a")
        async let capture: Bool = (try? await store.update(payment.id, merchant: payment.merchantID) { try $0.ledger.capture(nil) }) != nil
        async let cancel: Bool = (try? await store.update(payment.id, merchant: payment.merchantID) { try $0.ledger.cancel() }) != nil
        let outcomes = await [capture, cancel]
        #expect(outcomes.filter { $0 }.count == 1)
        let final = try #require(try await store.payment(payment.id, merchant: payment.merchantID))
        #expect(final.ledger.status == (outcomes[0] ? .succeeded : .canceled))
      }
      let events = try await store.events(merchant: MerchantID("mer_a")!, after: 0, limit: 1000)
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
      async let first: Bool = (try? await store.update(payment.id, merchant: payment.merchantID) { try $0.ledger.reserveRefund(sixty) }) != nil
      async let second: Bool = (try? await store.update(payment.id, merchant: payment.merchantID) { try $0.ledger.reserveRefund(sixty) }) != nil
      #expect(await [first, second].filter { $0 }.count == 1)

      let big = try await self.authorized(store, "mer_a", amount: 10_000, method: .automatic)
      let granted = try await withThrowingTaskGroup(of: Int64.self) { group in
        for _ in 0..<60 {
          let amount = Int64.random(in: 1...700)
          group.addTask {
            let refund = Money(minorUnits: amount, currency: Self.eur)
            return (try? await store.update(big.id, merchant: big.merchantID) { try $0.ledger.reserveRefund(refund) }) != nil ? amount : 0
          }
        }
        return try await group.reduce(0, +)
      }
      let stored = try #require(try await store.payment(big.id, merchant: big.merchantID))
      #expect(stored.ledger.refundedMinorUnits == granted)
      #expect(granted <= 10_000)
      // And in SQL, for every payment.
      let violations = try await client.query("SELECT count(*) FROM payments WHERE refunded_minor > captured_minor").decode(Int.self).reduce(0, +)
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
      for index in 0..<230 {
        let payment = Self.newPayment("mer_a", at: base.addingTimeInterval(Double(index / 3)))
        _ = try await store.insert(payment)
        originals.insert(payment.id)
      }
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
      let processing = try await store.list(merchant: merchant, filter: PaymentFilter(statuses: [.processing]), pageSize: 10, after: nil)
      #expect(processing.items.count == 2)
      let byCustomer = try await store.list(merchant: merchant, filter: PaymentFilter(customerReference: "cus_2"), pageSize: 10, after: nil)
      #expect(byCustomer.items.map(\.customerReference) == ["cus_2"])
      let window = try await store.list(merchant: merchant, filter: PaymentFilter(createdFrom: early, createdBefore: early.addingTimeInterval(5)), pageSize: 10, after: nil)
      #expect(window.items.map(\.customerReference) == ["cus_1"])
    }
  }

  @Test("Each merchant's events are numbered without gaps, in commit order, even under concurrency")
  func eventSequence() async throws {
    try await self.withStore { store, _ in
      try await withThrowingTaskGroup(of: Void.self) { group in
        for index in 0..<40 {
          group.addTask { _ = try await store.insert(Self.newPayment(index % 2 == 0 ? "mer_a" : "mer_b")) }
        }
        try await group.waitForAll()
      }
      for merchant in ["mer_a", "mer_b"] {
        let events = try await store.events(merchant: MerchantID(merchant)!, after: 0, limit: 100)
        #expect(events.map(\.sequence) == Array(1...20))
        #expect(events.allSatisfy { $0.merchantID.rawValue == merchant })
        let resumed = try await store.events(merchant: MerchantID(merchant)!, after: 15, limit: 100)
        #expect(resumed.map(\.sequence) == Array(16...20))
      }
    }
  }
}
