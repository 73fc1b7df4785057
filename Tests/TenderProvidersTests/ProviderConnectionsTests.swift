import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import TenderCore
import TenderProviders
import Testing

/// How many calls the connector has at the provider at once, against a real HTTP/1.1 server
/// that answers no call until a given number of them are in flight together.
@Suite("Provider connections")
struct ProviderConnectionsTests {
  /// Holds every arrival until `count` have arrived, then lets them all go; one still held after
  /// `patience` gives up (so a connector with too few connections fails rather than hangs).
  actor Barrier {
    let count: Int
    let patience: Duration
    private var waiting: [Int: CheckedContinuation<Bool, Never>] = [:]
    private(set) var arrived = 0

    init(count: Int, patience: Duration) {
      self.count = count
      self.patience = patience
    }

    /// Whether `count` calls were here together.
    func arrive() async -> Bool {
      self.arrived += 1
      let id = self.arrived
      guard self.arrived < self.count else {
        for waiter in self.waiting.values { waiter.resume(returning: true) }
        self.waiting = [:]
        return true
      }
      let patience = self.patience
      return await withCheckedContinuation { continuation in
        self.waiting[id] = continuation
        Task {
          try? await Task.sleep(for: patience)
          await self.giveUp(id)
        }
      }
    }

    private func giveUp(_ id: Int) {
      self.waiting.removeValue(forKey: id)?.resume(returning: false)
    }
  }

  @Test(
    "Concurrent calls each get a connection of their own, up to provider-connections: 16 are at the provider at once",
    .timeLimit(.minutes(1)))
  func callsInFlightTogether() async throws {
    let calls = 16
    let barrier = Barrier(count: calls, patience: .seconds(10))
    let router = Router()
    router.post("/v1/payment_intents") { _, _ -> Response in
      guard await barrier.arrive() else { return Response(status: .serviceUnavailable) }
      return Response(
        status: .ok, headers: [.contentType: "application/json"],
        body: ResponseBody(byteBuffer: ByteBuffer(string: #"{"id":"pi_1","status":"succeeded","amount_received":100}"#))
      )
    }
    let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)))
    try await app.test(.live) { client in
      let port = try #require(client.port)
      let configuration = StripeConfiguration(
        baseURL: "http://127.0.0.1:\(port)", apiKey: Secret("sk_test_tender"), requestTimeout: .seconds(20),
        maximumAttempts: 1, maximumConnections: calls)
      let connector = StripeConnector(configuration: configuration, logger: Logger(label: "tender.test.stripe"))
      let statuses = await withTaskGroup(of: ProviderPayment.Status?.self) { group in
        for call in 0..<calls {
          group.addTask {
            try? await connector.createPayment(
              StripeConnectorTests.request("pm_card_visa", capture: .automatic), idempotencyKey: "together-\(call)"
            ).status
          }
        }
        var statuses: [ProviderPayment.Status?] = []
        for await status in group { statuses.append(status) }
        return statuses
      }
      try await connector.shutdown()
      // With fewer connections the calls reach the server in turns: none finds the others there,
      // and each is answered 503 after the barrier's patience (the connector's one attempt fails).
      #expect(statuses.count == calls)
      #expect(statuses.allSatisfy { $0 == .succeeded(capturedMinorUnits: 100) })
    }
  }

  @Test("Connections default to 64 and are at least 1")
  func limits() {
    #expect(StripeConfiguration(baseURL: "http://127.0.0.1:1", apiKey: Secret("k")).maximumConnections == 64)
    #expect(
      StripeConfiguration(baseURL: "http://127.0.0.1:1", apiKey: Secret("k"), maximumConnections: 0)
        .maximumConnections == 1)
  }
}
