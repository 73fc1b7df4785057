import Foundation
import Logging
import PostgresNIO
import TenderCore
@testable import TenderPostgres
import TenderTesting
import Testing

/// New keyed payments written in batches (group commit): each request of a batch gets exactly
/// what it would have got alone, and a batch writes nothing of the requests it refuses.
@Suite("New keyed payments written together, against a real PostgreSQL")
struct PaymentWriteBatchTests {
  let logger = Logger(label: "tender.test.batches")
  static let method = "/tender.payments.v1.PaymentService/CreatePayment"

  func withClient(_ body: (PostgresClient) async throws -> Void) async throws {
    let url = try await TestPostgres.makeDatabase()
    try await withPostgresClient(url) { client in
      try await client.query("INSERT INTO merchants (merchant_id, display_name) VALUES ('mer_a', 'A'), ('mer_b', 'B')")
      try await body(client)
    }
  }

  static func draft(_ amount: Int64, merchant: String = "mer_a", customer: String = "") -> PaymentRecord {
    let time = PostgresTime.now()
    return PaymentRecord(
      id: .random(), merchantID: MerchantID(merchant)!,
      ledger: PaymentLedger(
        amount: Money(minorUnits: amount, currency: Currency(code: "EUR")!), captureMethod: .automatic),
      paymentMethod: "pm_card_visa", customerReference: customer, description: "order \(amount)",
      metadata: ["order": "\(amount)"], providerPaymentID: nil, createTime: time, updateTime: time)
  }

  static func claim(_ payment: PaymentRecord, key: String) -> PostgresPaymentStore.InsertClaiming {
    PostgresPaymentStore.InsertClaiming(
      payment: payment,
      request: IdempotencyRequest(
        merchant: payment.merchantID, key: key, method: Self.method, fingerprint: Array(repeating: 9, count: 32)),
      lockMilliseconds: 30_000, providerKey: "tender_\(key)")
  }

  func footprint(_ client: PostgresClient) async throws -> [Int64] {
    let rows = try await client.query(
      """
      SELECT (SELECT count(*) FROM idempotency_keys), (SELECT count(*) FROM payments), (SELECT count(*) FROM provider_requests),
        (SELECT count(*) FROM payment_events)
      """)
    for try await (keys, payments, calls, events) in rows.decode((Int64, Int64, Int64, Int64).self) {
      return [keys, payments, calls, events]
    }
    return []
  }

  @Test("A batch claims each free key with its payment, call and event, in one transaction; a taken key writes nothing")
  func claims() async throws {
    try await self.withClient { client in
      let taken = Self.draft(100)
      let alone = try await PostgresPaymentStore.insertClaiming(
        [Self.claim(taken, key: "k0")], client: client, logger: self.logger
      ).map { try $0.get() }
      #expect(alone.count == 1 && alone[0] != nil)

      let drafts = [
        Self.draft(200), Self.draft(300), Self.draft(400, merchant: "mer_b", customer: "cus_9"), Self.draft(500),
      ]
      // The last request reuses a key this batch claims first, and the fourth a key already taken.
      let requests = [
        Self.claim(drafts[0], key: "k2"), Self.claim(drafts[1], key: "k1"), Self.claim(drafts[2], key: "k1"),
        Self.claim(Self.draft(600), key: "k0"), Self.claim(drafts[3], key: "k2"),
      ]
      let answers = try await PostgresPaymentStore.insertClaiming(requests, client: client, logger: self.logger)
        .map { try $0.get() }
      #expect(answers.count == 5)
      #expect(answers[1] != nil && answers[2] != nil && answers[3] == nil)
      // Of the two requests of key k2 exactly one claimed it.
      #expect((answers[0] == nil) != (answers[4] == nil))
      #expect(try await self.footprint(client) == [4, 4, 4, 4])

      let claimed = answers.compactMap { $0 }
      #expect(Set(claimed.map(\.0)).count == 1, "one transaction for the whole batch")
      #expect(Set(claimed.map(\.3)).count == 3, "a call's record for each")

      // Each key names its own payment and is owned at `payment_created` by token 1.
      let winner = answers[0] != nil ? drafts[0] : drafts[3]
      let keys = try await client.query(
        "SELECT merchant_id, idempotency_key, payment_id, recovery_point, owner_token FROM idempotency_keys ORDER BY 1, 2"
      ).decode((String, String, String, String, Int64).self).reduce(into: []) { $0.append($1) }
      #expect(keys.map(\.2) == [taken.id.rawValue, drafts[1].id.rawValue, winner.id.rawValue, drafts[2].id.rawValue])
      #expect(keys.map(\.1) == ["k0", "k1", "k2", "k1"] && keys.map(\.0) == ["mer_a", "mer_a", "mer_a", "mer_b"])
      #expect(keys.allSatisfy { $0.3 == "payment_created" && $0.4 == 1 })

      let store = PostgresPaymentStore(client: client, logger: self.logger)
      let stored = try #require(try await store.payment(drafts[2].id, merchant: drafts[2].merchantID))
      #expect(stored.ledger.status == .processing && stored.ledger.amount.minorUnits == 400)
      #expect(
        stored.customerReference == "cus_9" && stored.description == "order 400" && stored.metadata == ["order": "400"])
      #expect(stored.createTime == drafts[2].createTime)

      let calls = try await client.query(
        "SELECT payment_id, provider_idempotency_key, outcome, amount_minor FROM provider_requests ORDER BY request_id"
      ).decode((String, String, String, Int64).self).reduce(into: []) { $0.append($1) }
      let byPayment = Dictionary(uniqueKeysWithValues: calls.map { ($0.0, $0) })
      #expect(byPayment[drafts[2].id.rawValue]?.1 == "tender_k1" && byPayment[drafts[2].id.rawValue]?.3 == 400)
      #expect(calls.allSatisfy { $0.2 == "unknown" })
    }
  }

  @Test(
    "A batch finishes each payment whose key is still its owner's, with its event and answer; the others stay as they were"
  )
  func finishes() async throws {
    try await self.withClient { client in
      let drafts = [Self.draft(100), Self.draft(200), Self.draft(300)]
      let claims = drafts.enumerated().map { Self.claim($1, key: "f\($0)") }
      let rows = try await PostgresPaymentStore.insertClaiming(claims, client: client, logger: self.logger)
        .map { try $0.get() }
      let requestIDs = try rows.map { try #require($0).3 }
      let before = try await self.footprint(client)

      var succeeded = drafts[0]
      try succeeded.ledger.providerAuthorized()
      succeeded.providerPaymentID = "pi_1"
      var declined = drafts[1]
      try declined.ledger.providerFailed(.cardDeclined)
      var stolen = drafts[2]
      try stolen.ledger.providerAuthorized()
      let finishes = [
        PostgresPaymentStore.FinishProcessing(
          payment: succeeded, owner: KeyOwner(merchant: succeeded.merchantID, key: "f0", token: 1),
          response: StoredResponse(code: 0, message: [1], details: []),
          call: ProviderCallEnd(requestID: requestIDs[0], outcome: .succeeded)),
        PostgresPaymentStore.FinishProcessing(
          payment: declined, owner: KeyOwner(merchant: declined.merchantID, key: "f1", token: 1),
          response: StoredResponse(code: 9, message: [2], details: [3]),
          call: ProviderCallEnd(requestID: requestIDs[1], outcome: .declined)),
        // Another owner's token: this key was taken over.
        PostgresPaymentStore.FinishProcessing(
          payment: stolen, owner: KeyOwner(merchant: stolen.merchantID, key: "f2", token: 2),
          response: StoredResponse(code: 0, message: [4], details: []),
          call: ProviderCallEnd(requestID: requestIDs[2], outcome: .succeeded)),
      ]
      let answers = try await PostgresPaymentStore.finishProcessing(finishes, client: client, logger: self.logger)
        .map { try $0.get() }
      #expect(answers.map(\.written) == [true, true, false])
      #expect(answers[0].eventTransaction != nil && answers[0].eventTransaction == answers[1].eventTransaction)
      #expect(answers[2].eventTransaction == nil)

      let store = PostgresPaymentStore(client: client, logger: self.logger)
      let first = try #require(try await store.payment(drafts[0].id, merchant: drafts[0].merchantID))
      #expect(
        first.ledger.status == .succeeded && first.ledger.capturedMinorUnits == 100 && first.providerPaymentID == "pi_1"
      )
      let second = try #require(try await store.payment(drafts[1].id, merchant: drafts[1].merchantID))
      #expect(
        second.ledger.status == .failed && second.ledger.failureReason == .cardDeclined
          && second.providerPaymentID == nil)
      let third = try #require(try await store.payment(drafts[2].id, merchant: drafts[2].merchantID))
      #expect(third.ledger.status == .processing)

      let keys = try await client.query(
        "SELECT idempotency_key, recovery_point, response_code, response_details FROM idempotency_keys ORDER BY 1"
      ).decode((String, String, Int32?, ByteBuffer?).self).reduce(into: []) { $0.append($1) }
      #expect(keys.map(\.1) == ["finished", "finished", "payment_created"])
      #expect(keys.map(\.2) == [0, 9, nil] && keys[1].3.map { Array($0.readableBytesView) } == [3])
      let outcomes = try await client.query("SELECT outcome FROM provider_requests ORDER BY request_id")
        .decode(String.self).reduce(into: []) { $0.append($1) }
      #expect(outcomes == ["succeeded", "declined", "unknown"])
      let events = try await client.query(
        "SELECT payment_id, type, amount_minor FROM payment_events WHERE type <> 'payment_created'"
      ).decode((String, String, Int64?).self).reduce(into: [:]) { $0[$1.0] = ($1.1, $1.2) }
      #expect(events.count == 2)
      #expect(events[drafts[0].id.rawValue]?.0 == "payment_succeeded" && events[drafts[0].id.rawValue]?.1 == 100)
      #expect(events[drafts[1].id.rawValue]?.0 == "payment_failed" && events[drafts[1].id.rawValue]?.1 == nil)
      #expect(try await self.footprint(client) == [before[0], before[1], before[2], before[3] + 2])
    }
  }

  @Test("A request the database refuses fails alone: the other requests of its batch are written")
  func refusedRequestFailsAlone() async throws {
    try await self.withClient { client in
      // A merchant that does not exist: its rows break the foreign keys, and the whole statement
      // with them.
      let requests = [
        Self.claim(Self.draft(100), key: "r1"), Self.claim(Self.draft(200, merchant: "mer_zz"), key: "r2"),
        Self.claim(Self.draft(300), key: "r3"),
      ]
      let answers = try await PostgresPaymentStore.insertClaiming(requests, client: client, logger: self.logger)
      #expect(answers.count == 3)
      #expect((try? answers[0].get()) != nil && (try? answers[2].get()) != nil)
      #expect(throws: PSQLError.self) { try answers[1].get() }
      #expect(try await self.footprint(client) == [2, 2, 2, 2])

      let rows = try [answers[0], answers[2]].map { try #require(try $0.get()) }
      let finishes = [0, 2].enumerated().map { position, index in
        var final = requests[index].payment
        try! final.ledger.providerAuthorized()
        // The second one's answer breaks a constraint added for this test.
        return PostgresPaymentStore.FinishProcessing(
          payment: final, owner: KeyOwner(merchant: final.merchantID, key: requests[index].request.key, token: 1),
          response: StoredResponse(code: position == 0 ? 0 : -1, message: [], details: []),
          call: ProviderCallEnd(requestID: rows[position].3, outcome: .succeeded))
      }
      try await client.query(
        "ALTER TABLE idempotency_keys ADD CONSTRAINT test_codes CHECK (response_code IS NULL OR response_code >= 0)")
      let finished = try await PostgresPaymentStore.finishProcessing(finishes, client: client, logger: self.logger)
      #expect((try? finished[0].get())?.written == true)
      #expect(throws: PSQLError.self) { try finished[1].get() }
      let statuses = try await client.query("SELECT status FROM payments ORDER BY amount_minor")
        .decode(String.self).reduce(into: []) { $0.append($1) }
      #expect(statuses == ["succeeded", "processing"])
    }
  }

  @Test("Concurrent new payments through the store: each claims its own key and finishes its own payment")
  func concurrentThroughTheStore() async throws {
    try await self.withClient { client in
      let store = PostgresPaymentStore(client: client, logger: self.logger)
      let count = 48
      let written = try await withThrowingTaskGroup(of: Bool.self) { group in
        for index in 0..<count {
          group.addTask {
            let draft = Self.draft(Int64(100 + index))
            let request = IdempotencyRequest(
              merchant: draft.merchantID, key: "c\(index % 40)", method: Self.method,
              fingerprint: Array(repeating: 9, count: 32))
            let call = ProviderCall(
              merchant: draft.merchantID, payment: draft.id, operation: .createPayment, providerKey: "tender_c\(index)",
              amountMinorUnits: draft.ledger.amount.minorUnits)
            guard
              let (_, requestID) = try await store.insertClaiming(
                draft, request: request, lockFor: .seconds(30), call: call)
            else { return false }
            var final = draft
            try final.ledger.providerAuthorized()
            return try await store.finishProcessing(
              final, owner: KeyOwner(merchant: draft.merchantID, key: request.key, token: 1),
              response: StoredResponse(code: 0, message: [UInt8(index)], details: []),
              call: ProviderCallEnd(requestID: requestID, outcome: .succeeded))
          }
        }
        return try await group.reduce(into: [Bool]()) { $0.append($1) }
      }
      // Forty keys, eight of them asked for twice: forty payments, each finished once.
      #expect(written.filter { $0 }.count == 40)
      #expect(try await self.footprint(client) == [40, 40, 40, 80])
      let open = try await client.query(
        "SELECT count(*) FROM payments WHERE status <> 'succeeded'"
      ).decode(Int64.self).reduce(0, +)
      #expect(open == 0)
    }
  }
}
