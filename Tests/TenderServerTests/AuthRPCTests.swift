import Foundation
import GRPCCore
import GRPCInProcessTransport
import GRPCProtobuf
import SwiftProtobuf
import TenderAPI
import TenderAuth
import TenderCore
import TenderServer
import TenderTesting
import Testing

/// Auth RPC behaviour — the scope matrix of the policy table, client administration — over the
/// in-process transport on in-memory ports; AuthTests keeps tokens and keys on the real parts.
@Suite("Auth RPCs in process: scopes, client administration")
struct AuthRPCTests {
  @Test("Scope matrix from the policy table: without the method's scope PERMISSION_DENIED, with it not")
  func scopeMatrix() async throws {
    let protected = MethodPolicies.all.filter { !$0.isPublic }
    let scopes = Set(protected.compactMap(\.requiredScope))
    #expect(protected.count >= 13)
    try await InProcessServer.with { server in
      try await server.withClient { grpc in
        let caller = AnyMethodCaller(client: grpc)
        for policy in protected {
          let required = try #require(policy.requiredScope, "\(policy.fullName) declares no scope")
          let name = MethodPolicyName(
            service: policy.service, method: policy.method,
            kind: policy.kind == .serverStreaming ? .serverStreaming : .unary)
          let without = try await server.token(scopes: Array(scopes.subtracting([required])).sorted())
          let denied = await caller.call(name, metadata: TestServer.bearer(without))
          #expect(denied.code == .permissionDenied, "\(name) without \(required)")
          #expect(denied.reason == "SCOPE_MISSING", "\(name)")

          let with = try await server.token(scopes: [required])
          let allowed = await caller.call(name, metadata: TestServer.bearer(with))
          #expect(
            allowed.code != .permissionDenied && allowed.code != .unauthenticated,
            "\(name) with \(required): \(String(describing: allowed.code))")
        }
        // Public methods need no token.
        for policy in MethodPolicies.all where policy.isPublic && policy.kind == .unary {
          let result = await caller.call(
            MethodPolicyName(service: policy.service, method: policy.method, kind: .unary), metadata: [:])
          #expect(result.code != .unauthenticated, "\(policy.fullName)")
        }
      }
    }
  }

  @Test("Client administration: CreateClient needs admin, names the bad field, and the new secret works once rotated")
  func clientAdministration() async throws {
    try await InProcessServer.with { server in
      let admin = try await server.token(scopes: ["admin", "payments:read"])
      let platform = try await server.token(scopes: ["admin", "platform", "payments:read"], merchantID: "mer_ops")
      try await server.withClient { grpc in
        let auth = Tender_Auth_V1_AuthService.Client(wrapping: grpc)
        func keyed(_ key: String) -> Metadata { PaymentsTests.metadata(admin, key: key) }
        let badScope = await #expect(throws: RPCError.self) {
          try await auth.createClient(
            .with {
              $0.merchantID = TestServer.merchantID
              $0.scopes = ["payments:read", "Bad Scope"]
            }, metadata: keyed("bad"))
        }
        #expect(badScope?.code == .invalidArgument)
        #expect(
          try badScope?.unpackGoogleRPCStatus()?.details.compactMap(\.errorInfo).first?.metadata["field"] == "scopes[1]"
        )
        let noMerchant = await #expect(throws: RPCError.self) {
          try await auth.createClient(
            .with {
              $0.merchantID = "mer_nosuchmerchant"
              $0.scopes = ["payments:read"]
            }, metadata: PaymentsTests.metadata(platform, key: "nomerchant"))
        }
        #expect(noMerchant?.code == .failedPrecondition)
        #expect(noMerchant?.reason == "MERCHANT_NOT_FOUND")

        let request = Tender_Auth_V1_CreateClientRequest.with {
          $0.merchantID = TestServer.merchantID
          $0.scopes = ["payments:read"]
          $0.displayName = "checkout"
        }
        let created = try await auth.createClient(request, metadata: keyed("create"))
        #expect(created.client.status == .active)
        #expect(created.clientSecret.hasPrefix("tsk_"))
        _ = try await auth.issueToken(
          .with {
            $0.clientID = created.client.clientID
            $0.clientSecret = created.clientSecret
          })

        // A retry gets the same client and the same secret, from a sealed stored answer.
        let replayed = try await auth.createClient(request, metadata: keyed("create"))
        #expect(replayed == created)

        let rotated = try await auth.rotateClientSecret(
          .with { $0.clientID = created.client.clientID }, metadata: keyed("rotate"))
        #expect(rotated.client.hasRotateTime)
        let old = await #expect(throws: RPCError.self) {
          try await auth.issueToken(
            .with {
              $0.clientID = created.client.clientID
              $0.clientSecret = created.clientSecret
            })
        }
        #expect(old?.code == .unauthenticated)
        _ = try await auth.issueToken(
          .with {
            $0.clientID = created.client.clientID
            $0.clientSecret = rotated.clientSecret
          })

        let notGranted = await #expect(throws: RPCError.self) {
          try await auth.issueToken(
            .with {
              $0.clientID = created.client.clientID
              $0.clientSecret = rotated.clientSecret
              $0.scopes = ["payments:write"]
            })
        }
        #expect(notGranted?.code == .permissionDenied)
        #expect(notGranted?.reason == "SCOPE_NOT_GRANTED")
      }
    }
  }

  @Test(
    "Keyed client administration: no key is refused; a secret is stored only sealed; a reused key or a missing client are answers of their own"
  )
  func keyedClientAdministration() async throws {
    try await InProcessServer.with { server in
      let admin = try await server.token(scopes: ["admin", "refunds:read", "refunds:write"])
      try await server.withClient { grpc in
        let auth = Tender_Auth_V1_AuthService.Client(wrapping: grpc)
        func keyed(_ key: String) -> Metadata { PaymentsTests.metadata(admin, key: key) }
        let request = Tender_Auth_V1_CreateClientRequest.with {
          $0.merchantID = TestServer.merchantID
          $0.scopes = ["refunds:read"]
        }
        let keyless = await #expect(throws: RPCError.self) {
          try await auth.createClient(request, metadata: TestServer.bearer(admin))
        }
        #expect(keyless?.code == .invalidArgument && keyless?.reason == "IDEMPOTENCY_KEY_MISSING")

        let created = try await auth.createClient(request, metadata: keyed("c1"))
        let reused = await #expect(throws: RPCError.self) {
          try await auth.createClient(
            .with {
              $0.merchantID = TestServer.merchantID
              $0.scopes = ["refunds:write"]
            }, metadata: keyed("c1"))
        }
        #expect(reused?.reason == "IDEMPOTENCY_KEY_REUSED")
        let rotated = try await auth.rotateClientSecret(
          .with { $0.clientID = created.client.clientID }, metadata: keyed("r1"))
        let rotatedAgain = try await auth.rotateClientSecret(
          .with { $0.clientID = created.client.clientID }, metadata: keyed("r1"))
        #expect(rotatedAgain.clientSecret == rotated.clientSecret)
        // The replayed secret is the one in force: one rotation happened, not two.
        _ = try await auth.issueToken(
          .with {
            $0.clientID = created.client.clientID
            $0.clientSecret = rotated.clientSecret
          })

        let missing = await #expect(throws: RPCError.self) {
          try await auth.rotateClientSecret(.with { $0.clientID = "cli_nosuchclient" }, metadata: keyed("r2"))
        }
        #expect(missing?.code == .notFound && missing?.reason == "CLIENT_NOT_FOUND")
        let invalid = await #expect(throws: RPCError.self) {
          try await auth.rotateClientSecret(.with { $0.clientID = "nope" }, metadata: keyed("r3"))
        }
        #expect(invalid?.code == .invalidArgument && invalid?.reason == "FIELD_INVALID")

        // Neither secret is anywhere in the idempotency records: only sealed bytes.
        let stored = await server.database.storedAnswers().mapValues(\.message)
        #expect(Set(stored.keys) == ["c1", "r1", "r2"])
        for bytes in stored.values {
          #expect(!String(decoding: bytes, as: UTF8.self).contains("tsk_"))
        }
      }
    }
  }

  @Test(
    "Administration stays within a merchant: admin of one merchant cannot create, rotate, revoke or introspect another's; platform can; no RPC grants platform or an unheld scope"
  )
  func administrationStaysWithinAMerchant() async throws {
    try await InProcessServer.with { server in
      let admin = try await server.token(scopes: ["admin", "tokens:revoke", "tokens:introspect", "payments:read"])
      let platform = try await server.token(
        scopes: ["admin", "platform", "tokens:revoke", "tokens:introspect", "payments:read"], merchantID: "mer_ops")
      let victim = try await server.makeClient(scopes: ["payments:read"], merchantID: "mer_other")
      let victimToken = try await server.application.authority.issue(
        clientID: victim.clientID, secret: Secret(victim.secret), requestedScopes: []
      ).token.value
      let ownPlatformClient = try await server.makeClient(scopes: ["admin", "platform"])
      try await server.withClient { grpc in
        let auth = Tender_Auth_V1_AuthService.Client(wrapping: grpc)
        func create(
          _ token: String, merchant: String, scopes: [String], key: String
        ) async throws -> Tender_Auth_V1_CreateClientResponse {
          try await auth.createClient(
            .with {
              $0.merchantID = merchant
              $0.scopes = scopes
            }, metadata: PaymentsTests.metadata(token, key: key))
        }
        func refusal(_ body: () async throws -> Void) async -> (RPCError?, String?) {
          let error = await #expect(throws: RPCError.self) { try await body() }
          let status = try? error?.unpackGoogleRPCStatus()
          return (error, status?.details.compactMap(\.errorInfo).first?.metadata["field"])
        }
        let clientsBefore = await server.database.clientCount()

        let otherMerchant = await refusal {
          _ = try await create(admin, merchant: "mer_other", scopes: ["payments:read"], key: "x1")
        }
        #expect(otherMerchant.0?.code == .permissionDenied && otherMerchant.0?.reason == "OTHER_MERCHANT")
        #expect(otherMerchant.1 == "merchant_id")
        // Refused the same whether or not the merchant exists: nothing is revealed.
        let noSuchMerchant = await refusal {
          _ = try await create(admin, merchant: "mer_nosuch", scopes: ["payments:read"], key: "x2")
        }
        #expect(noSuchMerchant.0?.reason == "OTHER_MERCHANT")
        let unheld = await refusal {
          _ = try await create(
            admin, merchant: TestServer.merchantID, scopes: ["payments:read", "payments:write"], key: "x3")
        }
        #expect(unheld.0?.code == .permissionDenied && unheld.0?.reason == "SCOPE_NOT_GRANTABLE")
        #expect(unheld.1 == "scopes[1]")
        let platformByAdmin = await refusal {
          _ = try await create(admin, merchant: TestServer.merchantID, scopes: ["platform"], key: "x4")
        }
        #expect(platformByAdmin.0?.reason == "SCOPE_NOT_GRANTABLE" && platformByAdmin.1 == "scopes[0]")
        let platformByPlatform = await refusal {
          _ = try await create(platform, merchant: "mer_ops", scopes: ["platform"], key: "x5")
        }
        #expect(platformByPlatform.0?.reason == "SCOPE_NOT_GRANTABLE")
        #expect(await server.database.clientCount() == clientsBefore)

        // Another merchant's client, and a platform client of the admin's own merchant, are not
        // found to a merchant admin; the victim's secret still works.
        for (index, target) in [victim.clientID, ownPlatformClient.clientID].enumerated() {
          let rotation = await refusal {
            _ = try await auth.rotateClientSecret(
              .with { $0.clientID = target }, metadata: PaymentsTests.metadata(admin, key: "rot\(index)"))
          }
          #expect(rotation.0?.code == .notFound && rotation.0?.reason == "CLIENT_NOT_FOUND", "\(target)")
        }
        _ = try await auth.issueToken(
          .with {
            $0.clientID = victim.clientID
            $0.clientSecret = victim.secret
          })

        let introspected = try await auth.introspectToken(
          .with { $0.token = victimToken }, metadata: TestServer.bearer(admin))
        #expect(!introspected.active)
        let revocation = await refusal {
          _ = try await auth.revokeToken(.with { $0.token = victimToken }, metadata: TestServer.bearer(admin))
        }
        #expect(revocation.0?.code == .permissionDenied && revocation.0?.reason == "NOT_TOKEN_OWNER")
        let stillActive = try await auth.introspectToken(
          .with { $0.token = victimToken }, metadata: TestServer.bearer(platform))
        #expect(stillActive.active && stillActive.merchantID == "mer_other")

        // The platform scope reaches every merchant.
        let made = try await create(platform, merchant: "mer_other", scopes: ["payments:read"], key: "p1")
        #expect(made.client.merchantID == "mer_other")
        let rotated = try await auth.rotateClientSecret(
          .with { $0.clientID = victim.clientID }, metadata: PaymentsTests.metadata(platform, key: "p2"))
        #expect(rotated.client.merchantID == "mer_other")
        _ = try await auth.revokeToken(.with { $0.token = victimToken }, metadata: TestServer.bearer(platform))
        let revoked = try await auth.introspectToken(
          .with { $0.token = victimToken }, metadata: TestServer.bearer(platform))
        #expect(!revoked.active)
      }
    }
  }
}
