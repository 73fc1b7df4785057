import Crypto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import GRPCProtobuf
import SwiftProtobuf
@testable import TenderAuth
import TenderCore
import TenderServer
import TenderTesting

/// Signs tokens of any shape with a signing key it installed as the server's active key, so tests
/// can present tokens the server would never issue (wrong claims, headers, algorithms).
struct TokenForge {
  let key: Curve25519.Signing.PrivateKey
  let keyID: String
  let issuer = "tender"
  let audience = "tender-api"

  /// Installs a new key (sealed like the server's own) and makes it active.
  static func install(on server: TestServer) async throws -> TokenForge {
    let key = Curve25519.Signing.PrivateKey()
    let keyID = Identifiers.make(prefix: "key", length: 16)
    let kek = try KeyEncryptionKey(base64: Secret(TestServer.keyEncryptionKey))
    try await server.application.authStore.rotate(
      to: SigningKeyRecord(
        keyID: keyID,
        algorithm: "EdDSA",
        publicKey: Array(key.publicKey.rawRepresentation),
        sealedPrivateKey: try kek.seal(Array(key.rawRepresentation), keyID: keyID),
        state: .active,
        createTime: Date(),
        retireTime: nil
      )
    )
    return TokenForge(key: key, keyID: keyID)
  }

  /// Standard claims of a token for `clientID`, valid now.
  func claims(clientID: String, merchantID: String = TestServer.merchantID, scope: String) -> [String: Any] {
    let now = Int(Date().timeIntervalSince1970)
    return [
      "iss": self.issuer, "aud": self.audience, "sub": clientID, "client_id": clientID, "merchant_id": merchantID,
      "scope": scope, "jti": Identifiers.make(prefix: "tok"), "iat": now, "nbf": now, "exp": now + 600,
    ]
  }

  func header(alg: String = "EdDSA", typ: String? = "at+jwt", kid: String?? = .some(nil)) -> [String: Any] {
    var header: [String: Any] = ["alg": alg]
    if let typ { header["typ"] = typ }
    switch kid {
    case .none: break
    case .some(.none): header["kid"] = self.keyID
    case .some(.some(let value)): header["kid"] = value
    }
    return header
  }

  /// A compact JWT signed with the forge's Ed25519 key.
  func sign(header: [String: Any], claims: [String: Any]) throws -> String {
    let input = try Self.encode(header) + "." + Self.encode(claims)
    let signature = try self.key.signature(for: Array(input.utf8))
    return input + "." + Base64URL.encode(Array(signature))
  }

  /// A JWT "signed" with HMAC-SHA256 keyed by the public key: the classic algorithm confusion.
  func hmacWithPublicKey(claims: [String: Any]) throws -> String {
    let input = try Self.encode(self.header(alg: "HS256")) + "." + Self.encode(claims)
    let mac = HMAC<SHA256>.authenticationCode(
      for: Array(input.utf8), using: SymmetricKey(data: self.key.publicKey.rawRepresentation))
    return input + "." + Base64URL.encode(Array(mac))
  }

  static func encode(_ object: [String: Any]) throws -> String {
    Base64URL.encode(Array(try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])))
  }
}

/// Sends an empty request message (valid for every proto3 request) to any method, by name.
struct AnyMethodCaller<Transport: ClientTransport> {
  let client: GRPCClient<Transport>

  /// The status the call ended with (`.ok` when it succeeded), and its ErrorInfo reason.
  func call(_ policy: MethodPolicyName, metadata: Metadata) async -> (code: RPCError.Code?, reason: String?) {
    let descriptor = MethodDescriptor(fullyQualifiedService: policy.service, method: policy.method)
    let request = ClientRequest(message: Google_Protobuf_Empty(), metadata: metadata)
    // Bounded only against a hang: a loaded machine may take seconds over a call that answers at
    // once. A watch is done once its headers arrive (accepted) or its status does (refused).
    var options = CallOptions.defaults
    options.timeout = .seconds(60)
    do {
      switch policy.kind {
      case .serverStreaming:
        try await self.client.serverStreaming(
          request: request,
          descriptor: descriptor,
          serializer: ProtobufSerializer<Google_Protobuf_Empty>(),
          deserializer: ProtobufDeserializer<Google_Protobuf_Empty>(),
          options: options
        ) { response in
          if case .failure(let error) = response.accepted { throw error }
        }
      default:
        _ = try await self.client.unary(
          request: request,
          descriptor: descriptor,
          serializer: ProtobufSerializer<Google_Protobuf_Empty>(),
          deserializer: ProtobufDeserializer<Google_Protobuf_Empty>(),
          options: options
        ) { response in
          _ = try response.message
        }
      }
      return (nil, nil)
    } catch let error as RPCError {
      return (error.code, try? error.unpackGoogleRPCStatus()?.details.compactMap(\.errorInfo).first?.reason)
    } catch {
      return (.unknown, nil)
    }
  }
}

/// The parts of a policy-table row a call needs.
struct MethodPolicyName: Sendable, CustomStringConvertible {
  enum Kind: Sendable { case unary, serverStreaming }
  let service: String
  let method: String
  let kind: Kind
  var description: String { "\(self.service)/\(self.method)" }
}

extension RPCError {
  /// The `ErrorInfo` reason of a Tender error.
  var reason: String? {
    try? self.unpackGoogleRPCStatus()?.details.compactMap(\.errorInfo).first?.reason
  }

  /// The field a Tender error names (`ErrorInfo` metadata).
  var field: String? {
    try? self.unpackGoogleRPCStatus()?.details.compactMap(\.errorInfo).first?.metadata["field"]
  }
}
