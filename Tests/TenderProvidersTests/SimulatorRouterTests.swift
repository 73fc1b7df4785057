import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import TenderProviderSim
import Testing

/// The simulator's routes through Hummingbird's router test framework (no socket, no gate): the
/// Stripe subset Tender's connector relies on, and the `/_sim` controls tests use.
@Suite("Provider simulator routes")
struct SimulatorRouterTests {
  static func simulator() -> ProviderSimulator {
    ProviderSimulator(configuration: .init(apiKey: "sk_test_router"), logger: Logger(label: "tender.test.sim"))
  }

  static func headers(key: String?, apiKey: String = "sk_test_router") -> HTTPFields {
    var headers: HTTPFields = [.authorization: "Bearer \(apiKey)", .contentType: "application/x-www-form-urlencoded"]
    if let key { headers[HTTPField.Name("Idempotency-Key")!] = key }
    return headers
  }

  static func intentForm(_ amount: Int, method: String = "pm_card_visa", capture: String = "manual") -> ByteBuffer {
    ByteBuffer(
      string:
        "amount=\(amount)&currency=eur&payment_method=\(method)&capture_method=\(capture)&confirm=true&metadata%5Btender_payment_id%5D=pay_router"
    )
  }

  static func json(_ response: TestResponse) -> [String: Any] {
    (try? JSONSerialization.jsonObject(with: Data(response.body.readableBytesView))) as? [String: Any] ?? [:]
  }

  @Test("Without the API key: 401, recorded, nothing created")
  func apiKey() async throws {
    let simulator = Self.simulator()
    try await Application(router: simulator.router()).test(.router) { client in
      try await client.execute(
        uri: "/v1/payment_intents", method: .post, headers: Self.headers(key: "k", apiKey: "sk_wrong"),
        body: Self.intentForm(100)
      ) { response in
        #expect(response.status == .unauthorized)
        let error = Self.json(response)["error"] as? [String: Any]
        #expect(error?["code"] as? String == "api_key_invalid")
      }
    }
    #expect(await simulator.requests().map(\.outcome) == ["unauthorized"])
    #expect(await simulator.books().0.isEmpty)
  }

  @Test("Authorize, replay under the key, capture, refund: the books follow; a replay is marked")
  func lifecycle() async throws {
    let simulator = Self.simulator()
    try await Application(router: simulator.router()).test(.router) { client in
      let id = try await client.execute(
        uri: "/v1/payment_intents", method: .post, headers: Self.headers(key: "create-1"), body: Self.intentForm(1000)
      ) { response in
        #expect(response.status == .ok)
        let body = Self.json(response)
        #expect(body["status"] as? String == "requires_capture")
        #expect((body["amount_capturable"] as? NSNumber)?.intValue == 1000)
        return try #require(body["id"] as? String)
      }
      try await client.execute(
        uri: "/v1/payment_intents", method: .post, headers: Self.headers(key: "create-1"), body: Self.intentForm(1000)
      ) { response in
        #expect(Self.json(response)["id"] as? String == id)
        #expect(response.headers[HTTPField.Name("Idempotent-Replayed")!] == "true")
      }
      try await client.execute(
        uri: "/v1/payment_intents/\(id)/capture", method: .post, headers: Self.headers(key: "capture-1"),
        body: ByteBuffer(string: "amount_to_capture=600")
      ) { response in
        let body = Self.json(response)
        #expect(body["status"] as? String == "succeeded")
        #expect((body["amount_received"] as? NSNumber)?.intValue == 600)
      }
      try await client.execute(
        uri: "/v1/refunds", method: .post, headers: Self.headers(key: "refund-1"),
        body: ByteBuffer(string: "payment_intent=\(id)&amount=250")
      ) { response in
        #expect(response.status == .ok)
        #expect(Self.json(response)["status"] as? String == "succeeded")
      }
      try await client.execute(uri: "/v1/payment_intents/\(id)", method: .get, headers: Self.headers(key: nil)) {
        response in
        #expect(Self.json(response)["status"] as? String == "succeeded")
      }
    }
    let intent = try #require(await simulator.intent(tenderPaymentID: "pay_router"))
    #expect(intent.status == "succeeded" && intent.amountReceived == 600 && intent.refunded == 250)
    #expect(await simulator.books().0.count == 1)
  }

  @Test("A declined card answers 402 with the decline code and leaves a failed intent")
  func decline() async throws {
    let simulator = Self.simulator()
    try await Application(router: simulator.router()).test(.router) { client in
      try await client.execute(
        uri: "/v1/payment_intents", method: .post, headers: Self.headers(key: "d1"),
        body: Self.intentForm(500, method: "pm_card_chargeDeclinedInsufficientFunds")
      ) { response in
        #expect(response.status.code == 402)
        let error = Self.json(response)["error"] as? [String: Any]
        #expect(error?["code"] as? String == "card_declined")
        #expect(error?["decline_code"] as? String == "insufficient_funds")
      }
    }
    #expect(await simulator.requests().map(\.outcome) == ["declined"])
  }

  @Test("An armed fault answers once, then the simulator is itself again; a malformed fault is refused")
  func faults() async throws {
    let simulator = Self.simulator()
    try await Application(router: simulator.router()).test(.router) { client in
      try await client.execute(
        uri: "/_sim/faults", method: .post,
        body: ByteBuffer(string: #"{"kind":"answer","status":503,"operation":"create_payment","times":1}"#)
      ) {
        #expect($0.status == .noContent)
      }
      try await client.execute(
        uri: "/_sim/faults", method: .post, body: ByteBuffer(string: #"{"kind":"answer","times":0}"#)
      ) { #expect($0.status == .badRequest) }
      try await client.execute(
        uri: "/v1/payment_intents", method: .post, headers: Self.headers(key: "f1"), body: Self.intentForm(100)
      ) {
        #expect($0.status == .serviceUnavailable)
      }
      try await client.execute(
        uri: "/v1/payment_intents", method: .post, headers: Self.headers(key: "f1"), body: Self.intentForm(100)
      ) {
        #expect($0.status == .ok)
      }
      try await client.execute(uri: "/_sim/requests", method: .get) { response in
        let logged =
          (try? JSONSerialization.jsonObject(with: Data(response.body.readableBytesView))) as? [[String: Any]] ?? []
        #expect(logged.compactMap { $0["outcome"] as? String } == ["fault", "created"])
      }
    }
  }
}
