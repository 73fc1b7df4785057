import Crypto
import Foundation
import GRPCCore
import Logging
import Metrics
import SwiftProtobuf
import TenderAPI
import TenderCore
import TenderOperations
@testable import TenderRPC
import TenderServer
import TenderTesting
import Testing

/// IssueToken's per-client bucket, called with the peers of different addresses (the in-process
/// transport and loopback give every caller the same one).
@Suite("IssueToken lockout")
struct IssueTokenLockoutTests {
  @Test(
    "Wrong secrets from one address never lock the client out from another; right secrets are never counted"
  )
  func noLockout() async throws {
    try await InProcessServer.with { server in
      let (clientID, secret) = try await server.makeClient(scopes: ["payments:read"])
      let stores = InMemoryStores(database: server.database)
      let auth = AuthRPCService(
        authority: server.application.authority,
        registry: server.application.clients,
        gate: RateLimitGate(
          limiter: InMemoryRateLimiter(clock: server.clock), failureMode: .closed, metrics: NOOPMetricsHandler.instance,
          logger: Logger(label: "tender.test")),
        issuePerClient: RateLimitPolicy(capacity: 3, refillPerSecond: 1.0 / 60),
        runner: KeyedOperationRunner(
          idempotency: stores, calls: stores, lock: .seconds(60), logger: Logger(label: "tender.test")),
        responseKey: SymmetricKey(size: .bits256)
      )
      func issue(_ secret: String, from peer: String) async -> RPCError.Code? {
        do {
          _ = try await auth.issueToken(
            .with {
              $0.clientID = clientID
              $0.clientSecret = secret
            }, peer: peer)
          return nil
        } catch let error as RPCError {
          return error.code
        } catch let error as any RPCErrorConvertible {
          return error.rpcErrorCode
        } catch {
          return .unknown
        }
      }
      // An attacker who read the client id from a token guesses from its own address.
      var attacker: [RPCError.Code?] = []
      for _ in 0..<5 { attacker.append(await issue("tsk_guess", from: "ipv4:203.0.113.9:40001")) }
      #expect(
        attacker == [.unauthenticated, .unauthenticated, .unauthenticated, .resourceExhausted, .resourceExhausted])
      // Another connection of the same address shares its bucket.
      #expect(await issue("tsk_guess", from: "ipv4:203.0.113.9:40002") == .resourceExhausted)
      // The client itself, from its own address, is not held back, however often it asks.
      for _ in 0..<6 { #expect(await issue(secret, from: "ipv4:198.51.100.7:50000") == nil) }
      // Its own mistakes count for its address alone, and its right secret still works after two.
      #expect(await issue("tsk_typo", from: "ipv4:198.51.100.7:50000") == .unauthenticated)
      #expect(await issue("tsk_typo", from: "ipv4:198.51.100.7:50000") == .unauthenticated)
      #expect(await issue(secret, from: "ipv4:198.51.100.7:50000") == nil)
    }
  }
}
