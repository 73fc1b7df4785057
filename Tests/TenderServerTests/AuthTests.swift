import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import GRPCProtobuf
import Logging
import PostgresNIO
import Prometheus
import SwiftProtobuf
import TenderAPI
@testable import TenderAuth
import TenderCore
import TenderServer
import TenderTesting
import Testing

@Suite("Authentication and authorization")
struct AuthTests {
  static func getPayment(_ client: GRPCClient<TestClientTransport>, token: String?) async -> RPCError? {
    let payments = Tender_Payments_V1_PaymentService.Client(wrapping: client)
    do {
      _ = try await payments.getPayment(.with { $0.paymentID = "pay_1" }, metadata: token.map(TestServer.bearer) ?? [:])
      return nil
    } catch let error as RPCError {
      return error
    } catch {
      return RPCError(code: .unknown, message: "\(error)")
    }
  }

  @Test("JWT matrix: every defect is UNAUTHENTICATED with its reason logged and counted; a valid token passes")
  func jwtMatrix() async throws {
    let logs = RecordingLogHandler.Store()
    try await TestServer.with(logger: logs.logger(level: .info)) { server in
      let client = try await server.makeClient(scopes: ["payments:read"])
      let disabled = try await server.makeClient(scopes: ["payments:read"])
      _ = try await server.application.authority.setStatus(clientID: disabled.clientID, .disabled)
      let forge = try await TokenForge.install(on: server)
      let good = forge.claims(clientID: client.clientID, scope: "payments:read")
      func with(_ changes: [String: Any]) -> [String: Any] { good.merging(changes) { $1 } }
      let now = Int(Date().timeIntervalSince1970)
      try await server.application.authStore.revoke(
        tokenID: "tok_revokedbytest", clientID: client.clientID, expireTime: Date() + 600, revokedBy: "test")

      let valid = try forge.sign(header: forge.header(), claims: good)
      var signature = Array(valid.split(separator: ".")[2])
      signature[20] = signature[20] == "A" ? "B" : "A"
      let tampered = valid.split(separator: ".")[0...1].joined(separator: ".") + "." + String(signature)
      let cases: [(name: String, token: String?, reason: String, errorReason: String)] = [
        ("no token", nil, "missing_token", "TOKEN_MISSING"),
        ("not a JWT", "not-a-jwt", "malformed_token", "TOKEN_INVALID"),
        ("tampered signature", tampered, "bad_signature", "TOKEN_INVALID"),
        (
          "alg none", try TokenForge.encode(forge.header(alg: "none")) + "." + TokenForge.encode(good) + ".",
          "algorithm_not_allowed", "TOKEN_INVALID"
        ),
        (
          "HS256 keyed with the public key", try forge.hmacWithPublicKey(claims: good), "algorithm_not_allowed",
          "TOKEN_INVALID"
        ),
        (
          "ES256 header", try forge.sign(header: forge.header(alg: "ES256"), claims: good), "algorithm_not_allowed",
          "TOKEN_INVALID"
        ),
        (
          "unknown kid", try forge.sign(header: forge.header(kid: "key_notaknownkey00"), claims: good), "unknown_key",
          "TOKEN_INVALID"
        ),
        ("no kid", try forge.sign(header: forge.header(kid: .none), claims: good), "unknown_key", "TOKEN_INVALID"),
        (
          "expired",
          try forge.sign(header: forge.header(), claims: with(["exp": now - 120, "iat": now - 900, "nbf": now - 900])),
          "expired", "TOKEN_EXPIRED"
        ),
        (
          "not yet valid", try forge.sign(header: forge.header(), claims: with(["nbf": now + 300])), "not_yet_valid",
          "TOKEN_INVALID"
        ),
        (
          "wrong issuer", try forge.sign(header: forge.header(), claims: with(["iss": "someone-else"])), "wrong_issuer",
          "TOKEN_INVALID"
        ),
        (
          "wrong audience", try forge.sign(header: forge.header(), claims: with(["aud": "another-api"])),
          "wrong_audience", "TOKEN_INVALID"
        ),
        ("wrong typ", try forge.sign(header: forge.header(typ: "JWT"), claims: good), "wrong_type", "TOKEN_INVALID"),
        (
          "revoked jti", try forge.sign(header: forge.header(), claims: with(["jti": "tok_revokedbytest"])), "revoked",
          "TOKEN_REVOKED"
        ),
        (
          "disabled client",
          try forge.sign(
            header: forge.header(), claims: forge.claims(clientID: disabled.clientID, scope: "payments:read")),
          "client_disabled", "CLIENT_DISABLED"
        ),
      ]

      try await server.withClient { grpc in
        // The control: the same forge signs a token the server accepts.
        #expect(await Self.getPayment(grpc, token: valid)?.code == .notFound)
        // So does a token the server issued itself (leeway: small skew is tolerated).
        let issued = try await server.token(scopes: ["payments:read"])
        #expect(await Self.getPayment(grpc, token: issued)?.code == .notFound)
        let skewed = try forge.sign(header: forge.header(), claims: with(["nbf": now + 10, "iat": now + 10]))
        #expect(await Self.getPayment(grpc, token: skewed)?.code == .notFound)

        for test in cases {
          let error = await Self.getPayment(grpc, token: test.token)
          #expect(error?.code == .unauthenticated, "\(test.name)")
          #expect(error?.reason == test.errorReason, "\(test.name)")
        }
      }

      let metrics = server.application.metrics.emitToString()
      var expected: [String: Double] = [:]
      for test in cases { expected[test.reason, default: 0] += 1 }
      for (reason, count) in expected {
        #expect(MetricsTests.value(metrics, "tender_auth_failures_total", ["reason": reason]) == count, "\(reason)")
      }
    }
    let refused = logs.all.filter { $0.message == "rpc" && $0.metadata["rpc.code"] == "UNAUTHENTICATED" }
    #expect(
      refused.compactMap { $0.metadata["auth.failure"] }.sorted() == [
        "algorithm_not_allowed", "algorithm_not_allowed", "algorithm_not_allowed", "bad_signature", "client_disabled",
        "expired",
        "malformed_token", "missing_token", "not_yet_valid", "revoked", "unknown_key", "unknown_key", "wrong_audience",
        "wrong_issuer", "wrong_type",
      ])
  }

  @Test("Key rotation: a retired key's tokens verify until they expire, a removed key's never again; the JWKS follows")
  func keyRotation() async throws {
    try await TestServer.with(rpc: .tls) { server in
      let before = try await server.token(scopes: ["payments:read"])
      let oldKey = try Self.keyID(of: before)
      let newKey = try await server.application.authority.keys.rotate()
      let after = try await server.token(scopes: ["payments:read"])
      #expect(try Self.keyID(of: after) == newKey)
      #expect(newKey != oldKey)

      try await server.withClient { grpc in
        #expect(await Self.getPayment(grpc, token: before)?.code == .notFound)
        #expect(await Self.getPayment(grpc, token: after)?.code == .notFound)
      }
      #expect(try await Self.jwksKeyIDs(server) == [newKey, oldKey])

      #expect(try await server.application.authority.keys.remove(keyID: oldKey))
      try await server.withClient { grpc in
        let error = await Self.getPayment(grpc, token: before)
        #expect(error?.code == .unauthenticated)
        #expect(error?.reason == "TOKEN_INVALID")
        #expect(await Self.getPayment(grpc, token: after)?.code == .notFound)
      }
      #expect(try await Self.jwksKeyIDs(server) == [newKey])
      let metrics = server.application.metrics.emitToString()
      #expect(MetricsTests.value(metrics, "tender_auth_failures_total", ["reason": "unknown_key"]) == 1)
    }
  }

  static func keyID(of token: String) throws -> String {
    let header = Data(try #require(Base64URL.decode(token.split(separator: ".")[0])))
    let object = try #require(try JSONSerialization.jsonObject(with: header) as? [String: Any])
    return try #require(object["kid"] as? String)
  }

  static func jwksKeyIDs(_ server: TestServer) async throws -> [String] {
    let response = try await Curl.get(
      "https://localhost:\(server.httpPort)/.well-known/jwks.json", caPath: server.certificates.caPath)
    #expect(response.status == 200)
    let object = try #require(try JSONSerialization.jsonObject(with: Data(response.body.utf8)) as? [String: Any])
    let keys = try #require(object["keys"] as? [[String: String]])
    for key in keys {
      #expect(key["kty"] == "OKP" && key["crv"] == "Ed25519" && key["alg"] == "EdDSA" && key["use"] == "sig")
      #expect(key["d"] == nil)
    }
    return keys.compactMap { $0["kid"] }
  }

  @Test(
    "Client secrets: a wrong secret and an unknown client get the same error for the same work; the secret is never stored or logged"
  )
  func secrets() async throws {
    let logs = RecordingLogHandler.Store()
    // 19 attempts from one address: lift the IssueToken limit out of the way. A cost other than
    // the test servers' shows the setting reaches the stored hash.
    try await TestServer.with(
      configure: { flags, _ in
        flags[.issueTokenRateLimit] = "100/s,burst=100"
        flags[.clientSecretCost] = "11"
      },
      logger: logs.logger(level: .trace)
    ) { server in
      let client = try await server.makeClient(scopes: ["payments:read"])
      try await server.withClient { grpc in
        let auth = Tender_Auth_V1_AuthService.Client(wrapping: grpc)
        func attempt(_ id: String, _ secret: String) async -> (RPCError?, Duration) {
          let start = ContinuousClock.now
          do {
            _ = try await auth.issueToken(
              .with {
                $0.clientID = id
                $0.clientSecret = secret
              })
            return (nil, ContinuousClock.now - start)
          } catch {
            return (error as? RPCError, ContinuousClock.now - start)
          }
        }
        var wrongWork: [Int] = []
        var unknownWork: [Int] = []
        let hasher = server.application.secretHasher
        for round in 0..<9 {
          var before = hasher.derivations
          let (wrongError, _) = await attempt(client.clientID, "tsk_wrongsecret\(round)")
          wrongWork.append(hasher.derivations - before)
          before = hasher.derivations
          let (unknownError, _) = await attempt("cli_doesnotexist\(round)", "tsk_wrongsecret\(round)")
          unknownWork.append(hasher.derivations - before)
          #expect(wrongError?.code == .unauthenticated)
          #expect(unknownError?.code == .unauthenticated)
          #expect(wrongError?.reason == "INVALID_CLIENT")
          #expect(unknownError?.reason == "INVALID_CLIENT")
          #expect(wrongError?.message == unknownError?.message)
        }
        // The same work on both paths, so the same time: one scrypt derivation per attempt (the
        // test server runs alone in its hasher, so the counts are exact). Without the decoy an
        // unknown client would cost none. Counted rather than timed: a loaded machine blurs times.
        #expect(wrongWork == Array(repeating: 1, count: 9))
        #expect(unknownWork == Array(repeating: 1, count: 9))

        let (okError, _) = await attempt(client.clientID, client.secret)
        #expect(okError == nil)
      }
      let stored = try await server.withPostgres { postgres in
        var text = ""
        let rows = try await postgres.query(
          "SELECT row_to_json(c)::text FROM api_clients c", logger: Logger(label: "test"))
        for try await row in rows.decode(String.self) { text += row }
        return text
      }
      #expect(stored.contains(client.clientID))
      #expect(stored.contains("$scrypt$ln=11,r=8,p=1$"))
      #expect(!stored.contains(client.secret))
      #expect(!stored.contains(String(client.secret.dropFirst(4))))
      for record in logs.all {
        let text = record.message + " " + record.metadata.values.joined(separator: " ")
        #expect(!text.contains(client.secret))
        #expect(!text.contains("tsk_wrongsecret"))
      }
    }
  }

  @Test("Revocation by the token's own client is immediate; another client of the same merchant may not revoke it")
  func revocation() async throws {
    try await TestServer.with { server in
      let owner = try await server.token(scopes: ["tokens:revoke", "payments:read"])
      let other = try await server.token(scopes: ["tokens:revoke"])
      try await server.withClient { grpc in
        let auth = Tender_Auth_V1_AuthService.Client(wrapping: grpc)
        let refused = await #expect(throws: RPCError.self) {
          try await auth.revokeToken(.with { $0.token = owner }, metadata: TestServer.bearer(other))
        }
        #expect(refused?.code == .permissionDenied)
        #expect(refused?.reason == "NOT_TOKEN_OWNER")
        #expect(await Self.getPayment(grpc, token: owner)?.code == .notFound)

        let revoked = try await auth.revokeToken(.with { $0.token = owner }, metadata: TestServer.bearer(owner))
        #expect(revoked.tokenID.hasPrefix("tok_"))
        let after = await Self.getPayment(grpc, token: owner)
        #expect(after?.code == .unauthenticated)
        #expect(after?.reason == "TOKEN_REVOKED")

        let invalid = await #expect(throws: RPCError.self) {
          try await auth.revokeToken(.with { $0.token = "garbage" }, metadata: TestServer.bearer(other))
        }
        #expect(invalid?.code == .invalidArgument)
        let details = try invalid?.unpackGoogleRPCStatus()?.details.compactMap(\.errorInfo).first
        #expect(details?.metadata["field"] == "token")
      }
    }
  }

}
