import Foundation
import GRPCCore
import GRPCInProcessTransport
import GRPCProtobuf
import SwiftProtobuf
import TenderAPI
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
      let admin = try await server.token(scopes: ["admin"])
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
            }, metadata: keyed("nomerchant"))
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
      let admin = try await server.token(scopes: ["admin"])
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
}
