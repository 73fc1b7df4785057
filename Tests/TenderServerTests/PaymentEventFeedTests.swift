import Foundation
import Logging
import TenderCore
import TenderRPC
import TenderTesting
import Testing

@Suite("Payment event feed: one reader, subscribers that fall behind")
struct PaymentEventFeedTests {
  static func payment(_ merchant: MerchantID) throws -> PaymentRecord {
    let now = Date()
    return PaymentRecord(
      id: .random(), merchantID: merchant,
      ledger: PaymentLedger(
        amount: try Money.validated(minorUnits: 100, currencyCode: "USD", field: "amount"), captureMethod: .automatic),
      paymentMethod: "pm_card_visa", customerReference: "", description: "", metadata: [:], providerPaymentID: nil,
      createTime: now, updateTime: now)
  }

  @Test(
    "A subscriber that stops reading is dropped once its buffer is full and finds the rest in the store from where it stood; the others get every event"
  )
  func slowSubscriberFallsBehind() async throws {
    let database = InMemoryDatabase()
    let stores = InMemoryStores(database: database)
    let feed = PaymentEventFeed(
      store: stores, signals: database.signals, bufferLimit: 2, logger: Logger(label: "tender.test.feed"))
    let merchant = MerchantID(unchecked: "mer_test")
    try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask { try await feed.run() }
      let slow = try await feed.subscribe(merchant: merchant, clientID: "cli_slow", tokenID: "tok_slow")
      let fast = try await feed.subscribe(merchant: merchant, clientID: "cli_fast", tokenID: "tok_fast")
      #expect(feed.subscriberCount == 2)
      var fastMessages = fast.messages.makeAsyncIterator()
      var created: [PaymentID] = []
      var seen: [PaymentID] = []
      // Each payment is its own read of the feed: the next one is made once the fast subscriber has it.
      for _ in 0..<5 {
        let payment = try Self.payment(merchant)
        _ = try await stores.insert(payment, step: nil)
        created.append(payment.id)
        while !seen.contains(payment.id) {
          let message = try #require(await fastMessages.next(), "the fast subscriber's messages ended")
          if case .events(let delivered) = message { seen += delivered.map(\.event.paymentID) }
        }
      }
      #expect(seen == created)
      #expect(slow.end == .fellBehind)
      #expect(fast.end == nil)
      #expect(feed.subscriberCount == 1)
      // What reached the slow subscriber is the start, in order; the store has everything after
      // its position, which is what a stream reads before subscribing again.
      var kept: [PaymentID] = []
      for await message in slow.messages {
        if case .events(let delivered) = message { kept += delivered.map(\.event.paymentID) }
      }
      #expect(kept.count < created.count)
      #expect(kept == Array(created.prefix(kept.count)))
      let backlog = try await stores.events(merchant: merchant, after: slow.position, limit: 100)
      #expect(backlog.map(\.paymentID) == created)
      group.cancelAll()
    }
  }
}
