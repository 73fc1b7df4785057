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
  static func getPayment(_ client: GRPCClient<HTTP2ClientTransport.Posix>, token: String?) async -> RPCError? {
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
      try await server.application.authStore.revoke(tokenID: "tok_revokedbytest", clientID: client.clientID, expireTime: Date() + 600, revokedBy: "test")

      let valid = try forge.sign(header: forge.header(), claims: good)
      var signature = Array(valid.split(separator: ".")[2])
      signature[20] = signature[20] == "A" ? "B" : "A"
      let tampered = valid.split(separator: ".")[0...1].joined(separator: ".") + "." + String(signature)
      let cases: [(name: String, token: String?, reason: String, errorReason: String)] = [
        ("no token", nil, "missing_token", "TOKEN_MISSING"),
        ("not a JWT", "not-a-jwt", "malformed_token", "TOKEN_INVALID"),
        ("tampered signature", tampered, "bad_signature", "TOKEN_INVALID"),
        ("alg none", try TokenForge.encode(forge.header(alg: "none")) + "." + TokenForge.encode(good) + ".", "algorithm_not_allowed", "TOKEN_INVALID"),
        ("HS256 keyed with the public key", try forge.hmacWithPublicKey(claims: good), "algorithm_not_allowed", "TOKEN_INVALID"),
        ("ES256 header", try forge.sign(header: forge.header(alg: "ES256"), claims: good), "algorithm_not_allowed", "TOKEN_INVALID"),
        ("unknown kid", try forge.sign(header: forge.header(kid: "key_notaknownkey00"), claims: good), "unknown_key", "TOKEN_INVALID"),
        ("no kid", try forge.sign(header: forge.header(kid: .none), claims: good), "unknown_key", "TOKEN_INVALID"),
        ("expired", try forge.sign(header: forge.header(), claims: with(["exp": now - 120, "iat": now - 900, "nbf": now - 900])), "expired", "TOKEN_EXPIRED"),
        ("not yet valid", try forge.sign(header: forge.header(), claims: with(["nbf": now + 300])), "not_yet_valid", "TOKEN_INVALID"),
        ("wrong issuer", try forge.sign(header: forge.header(), claims: with(["iss": "someone-else"])), "wrong_issuer", "TOKEN_INVALID"),
        ("wrong audience", try forge.sign(header: forge.header(), claims: with(["aud": "another-api"])), "wrong_audience", "TOKEN_INVALID"),
        ("wrong typ", try forge.sign(header: forge.header(typ: "JWT"), claims: good), "wrong_type", "TOKEN_INVALID"),
        ("revoked jti", try forge.sign(header: forge.header(), claims: with(["jti": "tok_revokedbytest"])), "revoked", "TOKEN_REVOKED"),
        (
          "disabled client", try forge.sign(header: forge.header(), claims: forge.claims(clientID: disabled.clientID, scope: "payments:read")),
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
    #expect(refused.compactMap { $0.metadata["auth.failure"] }.sorted() == [
      "algorithm_not_allowed", "algorithm_not_allowed", "algorithm_not_allowed", "bad_signature", "client_disabled", "expired",
      "malformed_token", "missing_token", "not_yet_valid", "revoked", "unknown_key", "unknown_key", "wrong_audience",
      "wrong_issuer", "wrong_type",
    ])
  }

  @Test("Key rotation: a retired key's tokens verify until they expire, a removed key's never again; the JWKS follows")
  func keyRotation() async throws {
    try await TestServer.with { server in
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
    let response = try await Curl.get("https://localhost:\(server.httpPort)/.well-known/jwks.json", caPath: server.certificates.caPath)
    #expect(response.status == 200)
    let object = try #require(try JSONSerialization.jsonObject(with: Data(response.body.utf8)) as? [String: Any])
    let keys = try #require(object["keys"] as? [[String: String]])
    for key in keys {
      #expect(key["kty"] == "OKP" && key["crv"] == "Ed25519" && key["alg"] == "EdDSA" && key["use"] == "sig")
      #expect(key["d"] == nil)
    }
    return keys.compactMap { $0["kid"] }
  }

  @Test("Scope matrix from the policy table: without the method's scope PERMISSION_DENIED, with it not")
  func scopeMatrix() async throws {
    let protected = MethodPolicies.all.filter { !$0.isPublic }
    let scopes = Set(protected.compactMap(\.requiredScope))
    #expect(protected.count >= 13)
    try await TestServer.with { server in
      try await server.withClient { grpc in
        let caller = AnyMethodCaller(client: grpc)
        for policy in protected {
          let required = try #require(policy.requiredScope, "\(policy.fullName) declares no scope")
          let name = MethodPolicyName(service: policy.service, method: policy.method, kind: policy.kind == .serverStreaming ? .serverStreaming : .unary)
          let without = try await server.token(scopes: Array(scopes.subtracting([required])).sorted())
          let denied = await caller.call(name, metadata: TestServer.bearer(without))
          #expect(denied.code == .permissionDenied, "\(name) without \(required)")
          #expect(denied.reason == "SCOPE_MISSING", "\(name)")

          let with = try await server.token(scopes: [required])
          let allowed = await caller.call(name, metadata: TestServer.bearer(with))
          #expect(allowed.code != .permissionDenied && allowed.code != .unauthenticated, "\(name) with \(required): \(String(describing: allowed.code))")
        }
        // Public methods need no token.
        for policy in MethodPolicies.all where policy.isPublic && policy.kind == .unary {
          let result = await caller.call(MethodPolicyName(service: policy.service, method: policy.method, kind: .unary), metadata: [:])
          #expect(result.code != .unauthenticated, "\(policy.fullName)")
        }
      }
    }
  }

  @Test("Client secrets: a wrong secret and an unknown client get the same error in about the same time; the secret is never stored or logged")
  func secrets() async throws {
    let logs = RecordingLogHandler.Store()
    // 19 attempts from one address: lift the IssueToken limit out of the way.
    try await TestServer.with(configure: { flags, _ in flags[.issueTokenRateLimit] = "100/s,burst=100" }, logger: logs.logger(level: .trace)) { server in
      let client = try await server.makeClient(scopes: ["payments:read"])
      try await server.withClient { grpc in
        let auth = Tender_Auth_V1_AuthService.Client(wrapping: grpc)
        func attempt(_ id: String, _ secret: String) async -> (RPCError?, Duration) {
          let start = ContinuousClock.now
          do {
            _ = try await auth.issueToken(.with { $0.clientID = id; $0.clientSecret = secret })
            return (nil, ContinuousClock.now - start)
          } catch {
            return (error as? RPCError, ContinuousClock.now - start)
          }
        }
        var wrong: [Duration] = []
        var unknown: [Duration] = []
        var wrongWork: [Int] = []
        var unknownWork: [Int] = []
        let hasher = server.application.secretHasher
        for round in 0..<9 {
          var before = hasher.derivations
          let (wrongError, wrongTime) = await attempt(client.clientID, "tsk_wrongsecret\(round)")
          wrongWork.append(hasher.derivations - before)
          before = hasher.derivations
          let (unknownError, unknownTime) = await attempt("cli_doesnotexist\(round)", "tsk_wrongsecret\(round)")
          unknownWork.append(hasher.derivations - before)
          #expect(wrongError?.code == .unauthenticated)
          #expect(unknownError?.code == .unauthenticated)
          #expect(wrongError?.reason == "INVALID_CLIENT")
          #expect(unknownError?.reason == "INVALID_CLIENT")
          #expect(wrongError?.message == unknownError?.message)
          wrong.append(wrongTime)
          unknown.append(unknownTime)
        }
        // The same work on both paths: one scrypt derivation per attempt (the test server runs
        // alone in its hasher, so the counts are exact).
        #expect(wrongWork == Array(repeating: 1, count: 9))
        #expect(unknownWork == Array(repeating: 1, count: 9))
        // And about the same time. Without the decoy an unknown client would answer in well
        // under a tenth of the time; the bound is loose because other tests share the cores.
        let wrongMedian = wrong.sorted()[4]
        let unknownMedian = unknown.sorted()[4]
        #expect(unknownMedian > wrongMedian / 3 && unknownMedian < wrongMedian * 3, "wrong secret \(wrongMedian), unknown client \(unknownMedian)")

        let (okError, _) = await attempt(client.clientID, client.secret)
        #expect(okError == nil)
      }
      let stored = try await withPostgresClient(server.databaseURL) { postgres in
        var text = ""
        let rows = try await postgres.query("SELECT row_to_json(c)::text FROM api_clients c", logger: Logger(label: "test"))
        for try await row in rows.decode(String.self) { text += row }
        return text
      }
      #expect(stored.contains(client.clientID))
      #expect(stored.contains("$scrypt$ln=14,r=8,p=1$"))
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

  @Test("Client administration: CreateClient needs admin, names the bad field, and the new secret works once rotated")
  func clientAdministration() async throws {
    try await TestServer.with { server in
      let admin = try await server.token(scopes: ["admin"])
      try await server.withClient { grpc in
        let auth = Tender_Auth_V1_AuthService.Client(wrapping: grpc)
        func keyed(_ key: String) -> Metadata { PaymentsTests.metadata(admin, key: key) }
        let badScope = await #expect(throws: RPCError.self) {
          try await auth.createClient(.with { $0.merchantID = TestServer.merchantID; $0.scopes = ["payments:read", "Bad Scope"] }, metadata: keyed("bad"))
        }
        #expect(badScope?.code == .invalidArgument)
        #expect(try badScope?.unpackGoogleRPCStatus()?.details.compactMap(\.errorInfo).first?.metadata["field"] == "scopes[1]")
        let noMerchant = await #expect(throws: RPCError.self) {
          try await auth.createClient(.with { $0.merchantID = "mer_nosuchmerchant"; $0.scopes = ["payments:read"] }, metadata: keyed("nomerchant"))
        }
        #expect(noMerchant?.code == .failedPrecondition)
        #expect(noMerchant?.reason == "MERCHANT_NOT_FOUND")

        let request = Tender_Auth_V1_CreateClientRequest.with { $0.merchantID = TestServer.merchantID; $0.scopes = ["payments:read"]; $0.displayName = "checkout" }
        let created = try await auth.createClient(request, metadata: keyed("create"))
        #expect(created.client.status == .active)
        #expect(created.clientSecret.hasPrefix("tsk_"))
        _ = try await auth.issueToken(.with { $0.clientID = created.client.clientID; $0.clientSecret = created.clientSecret })

        // A retry gets the same client and the same secret, from a sealed stored answer.
        let replayed = try await auth.createClient(request, metadata: keyed("create"))
        #expect(replayed == created)

        let rotated = try await auth.rotateClientSecret(.with { $0.clientID = created.client.clientID }, metadata: keyed("rotate"))
        #expect(rotated.client.hasRotateTime)
        let old = await #expect(throws: RPCError.self) {
          try await auth.issueToken(.with { $0.clientID = created.client.clientID; $0.clientSecret = created.clientSecret })
        }
        #expect(old?.code == .unauthenticated)
        _ = try await auth.issueToken(.with { $0.clientID = created.client.clientID; $0.clientSecret = rotated.clientSecret })

        let notGranted = await #expect(throws: RPCError.self) {
          try await auth.issueToken(.with { $0.clientID = created.client.clientID; $0.clientSecret = rotated.clientSecret; $0.scopes = ["payments:write"] })
        }
        #expect(notGranted?.code == .permissionDenied)
        #expect(notGranted?.reason == "SCOPE_NOT_GRANTED")
      }
    }
  }

  @Test("Keyed client administration: no key is refused; a secret is stored only sealed; a reused key or a missing client are answers of their own")
  func keyedClientAdministration() async throws {
    try await TestServer.with { server in
      let admin = try await server.token(scopes: ["admin"])
      try await server.withClient { grpc in
        let auth = Tender_Auth_V1_AuthService.Client(wrapping: grpc)
        func keyed(_ key: String) -> Metadata { PaymentsTests.metadata(admin, key: key) }
        let request = Tender_Auth_V1_CreateClientRequest.with { $0.merchantID = TestServer.merchantID; $0.scopes = ["refunds:read"] }
        let keyless = await #expect(throws: RPCError.self) {
          try await auth.createClient(request, metadata: TestServer.bearer(admin))
        }
        #expect(keyless?.code == .invalidArgument && keyless?.reason == "IDEMPOTENCY_KEY_MISSING")

        let created = try await auth.createClient(request, metadata: keyed("c1"))
        let reused = await #expect(throws: RPCError.self) {
          try await auth.createClient(.with { $0.merchantID = TestServer.merchantID; $0.scopes = ["refunds:write"] }, metadata: keyed("c1"))
        }
        #expect(reused?.reason == "IDEMPOTENCY_KEY_REUSED")
        let rotated = try await auth.rotateClientSecret(.with { $0.clientID = created.client.clientID }, metadata: keyed("r1"))
        let rotatedAgain = try await auth.rotateClientSecret(.with { $0.clientID = created.client.clientID }, metadata: keyed("r1"))
        #expect(rotatedAgain.clientSecret == rotated.clientSecret)
        // The replayed secret is the one in force: one rotation happened, not two.
        _ = try await auth.issueToken(.with { $0.clientID = created.client.clientID; $0.clientSecret = rotated.clientSecret })

        let missing = await #expect(throws: RPCError.self) {
          try await auth.rotateClientSecret(.with { $0.clientID = "cli_nosuchclient" }, metadata: keyed("r2"))
        }
        #expect(missing?.code == .notFound && missing?.reason == "CLIENT_NOT_FOUND")
        let invalid = await #expect(throws: RPCError.self) {
          try await auth.rotateClientSecret(.with { $0.clientID = "nope" }, metadata: keyed("r3"))
        }
        #expect(invalid?.code == .invalidArgument && invalid?.reason == "FIELD_INVALID")

        // Neither secret is anywhere in the idempotency records: only sealed bytes.
        let stored = try await withPostgresClient(server.databaseURL) { client in
          try await client.query("SELECT idempotency_key, response_message FROM idempotency_keys ORDER BY idempotency_key").decode((String, ByteBuffer).self)
            .reduce(into: [String: [UInt8]]()) { $0[$1.0] = Array(buffer: $1.1) }
        }
        #expect(Set(stored.keys) == ["c1", "r1", "r2"])
        for bytes in stored.values {
          #expect(!String(decoding: bytes, as: UTF8.self).contains("tsk_"))
        }
      }
    }
  }
}
