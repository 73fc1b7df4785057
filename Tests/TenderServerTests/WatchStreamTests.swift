import Foundation
import GRPCCore
import GRPCInProcessTransport
import GRPCProtobuf
import TenderAPI
import SwiftProtobuf
import TenderAuth
import TenderCore
import TenderServer
import TenderTesting
import Testing

/// WatchPayments streams share one reader of the event feed and end when their token does; over
/// the in-process transport on in-memory ports (the feed's PostgreSQL signals have tests of their
/// own, and PaymentsTests watches over the real parts).
@Suite("WatchPayments streams: one shared feed, and no stream outlives its token")
struct WatchStreamTests {
  typealias Payments = Tender_Payments_V1_PaymentService.Client<InProcessTransport.Client>
  typealias Event = Tender_Payments_V1_WatchPaymentsResponse

  /// An open stream: its events as they arrive, and how it ended.
  struct Watch {
    let events: AsyncStream<Event>
    let task: Task<Void, any Error>

    /// The error the stream ended with (nil: it ended cleanly).
    func ending() async -> RPCError? {
      do {
        try await self.task.value
        return nil
      } catch {
        return error as? RPCError
      }
    }
  }

  /// Opens a stream; returns once the server has taken its starting position.
  static func watch(_ payments: Payments, token: String) async -> Watch {
    let (events, continuation) = AsyncStream.makeStream(of: Event.self)
    let (started, startedContinuation) = AsyncStream.makeStream(of: Void.self)
    var options = CallOptions.defaults
    // Bounded, so a stream that never ends fails its test instead of hanging it.
    options.timeout = .seconds(30)
    let task = Task {
      defer {
        continuation.finish()
        startedContinuation.finish()
      }
      try await payments.watchPayments(.init(), metadata: TestServer.bearer(token), options: options) { response in
        startedContinuation.finish()
        for try await message in response.messages { continuation.yield(message) }
      }
    }
    for await _ in started {}
    return Watch(events: events, task: task)
  }

  static func pay(_ payments: Payments, token: String, key: String) async throws -> String {
    try await payments.createPayment(
      PaymentsTests.request(), metadata: PaymentsTests.metadata(token, key: key)
    ).payment.paymentID
  }

  /// Waits until the stream delivers an event of `paymentID`.
  static func sees(_ watch: Watch, _ paymentID: String) async -> Bool {
    for await event in watch.events where event.paymentID == paymentID { return true }
    return false
  }

  @Test(
    "Idle streams do not poll: 20 open streams read the events at most once in a second, and one payment reaches all of them through a few shared reads"
  )
  func sharedFeed() async throws {
    try await InProcessServer.with { server in
      let token = try await server.token(scopes: ["payments:read", "payments:write"])
      try await server.withClient { grpc in
        let payments = Payments(wrapping: grpc)
        var watches: [Watch] = []
        for _ in 0..<20 { watches.append(await Self.watch(payments, token: token)) }
        // Every stream is subscribed once it has seen a payment made after it opened.
        let first = try await Self.pay(payments, token: token, key: "p1")
        for watch in watches { #expect(await Self.sees(watch, first)) }

        let idleStart = await server.database.eventReads
        try await Task.sleep(for: .seconds(1))
        let idleReads = await server.database.eventReads - idleStart
        // One poll per stream every 250 ms would be 80.
        #expect(idleReads <= 1, "\(idleReads) reads while idle")

        let before = await server.database.eventReads
        let second = try await Self.pay(payments, token: token, key: "p2")
        for watch in watches { #expect(await Self.sees(watch, second)) }
        let reads = await server.database.eventReads - before
        #expect(reads < 10, "\(reads) reads for 20 streams")
        for watch in watches { watch.task.cancel() }
      }
    }
  }

  @Test("A stream ends with UNAUTHENTICATED TOKEN_EXPIRED when its token expires")
  func endsAtExpiry() async throws {
    try await InProcessServer.with(tune: { $0.tokenLifetime = .seconds(2) }) { server in
      let token = try await server.token(scopes: ["payments:read"])
      try await server.withClient { grpc in
        let watch = await Self.watch(Payments(wrapping: grpc), token: token)
        let ended = await watch.ending()
        #expect(ended?.code == .unauthenticated && ended?.reason == "TOKEN_EXPIRED")
      }
    }
  }

  @Test(
    "Revoking a token ends its streams (TOKEN_REVOKED), disabling a client ends the rest of its streams (CLIENT_DISABLED); other streams go on"
  )
  func endsOnRevocationAndDisable() async throws {
    try await InProcessServer.with { server in
      let client = try await server.makeClient(scopes: ["payments:read", "payments:write", "tokens:revoke"])
      func token() async throws -> String {
        try await server.application.authority.issue(
          clientID: client.clientID, secret: Secret(client.secret), requestedScopes: []
        ).token.value
      }
      let (revokedToken, keptToken) = (try await token(), try await token())
      let otherToken = try await server.token(scopes: ["payments:read", "payments:write"])
      try await server.withClient { grpc in
        let payments = Payments(wrapping: grpc)
        let auth = Tender_Auth_V1_AuthService.Client(wrapping: grpc)
        let revoked = await Self.watch(payments, token: revokedToken)
        let kept = await Self.watch(payments, token: keptToken)
        let other = await Self.watch(payments, token: otherToken)

        _ = try await auth.revokeToken(.with { $0.token = revokedToken }, metadata: TestServer.bearer(revokedToken))
        let revokedEnd = await revoked.ending()
        #expect(revokedEnd?.code == .unauthenticated && revokedEnd?.reason == "TOKEN_REVOKED")
        let afterRevocation = try await Self.pay(payments, token: otherToken, key: "r1")
        #expect(await Self.sees(kept, afterRevocation))
        #expect(await Self.sees(other, afterRevocation))

        _ = try await server.application.authority.setStatus(clientID: client.clientID, .disabled)
        let keptEnd = await kept.ending()
        #expect(keptEnd?.code == .unauthenticated && keptEnd?.reason == "CLIENT_DISABLED")
        let afterDisable = try await Self.pay(payments, token: otherToken, key: "r2")
        #expect(await Self.sees(other, afterDisable))
        other.task.cancel()
      }
    }
  }
}
