import Foundation
import GRPCCore
import GRPCInProcessTransport
import GRPCNIOTransportHTTP2
import GRPCProtobuf
import SwiftProtobuf
import TenderAPI
import TenderServer
import TenderTesting
import Testing

/// Unknown methods and reflection on the in-process server; the message-size limit over TLS, where
/// the transport enforces it.
@Suite("RPC behaviour")
struct ServingTests {
  @Test("A method the server does not have answers UNIMPLEMENTED, not UNKNOWN and not a crash")
  func unknownMethod() async throws {
    try await InProcessServer.with { server in
      let token = try await server.token(scopes: ["refunds:read"])
      try await server.withClient { client in
        let error = await #expect(throws: RPCError.self) {
          try await client.unary(
            request: ClientRequest(message: Google_Protobuf_Empty(), metadata: TestServer.bearer(token)),
            descriptor: MethodDescriptor(
              fullyQualifiedService: "tender.refunds.v1.RefundService", method: "DeleteRefund"),
            serializer: ProtobufSerializer<Google_Protobuf_Empty>(),
            deserializer: ProtobufDeserializer<Google_Protobuf_Empty>(),
            options: .defaults
          ) { response in _ = try response.message }
        }
        #expect(error?.code == .unimplemented)
        // The server is still healthy afterwards.
        let after = try await Grpc_Health_V1_Health.Client(wrapping: client).check(.init())
        #expect(after.status == .serving)
      }
    }
  }

  @Test("A request over 4 MiB gets RESOURCE_EXHAUSTED and the same connection keeps serving")
  func oversizedRequest() async throws {
    try await TestServer.with(rpc: .tls) { server in
      try await server.withClient { client in
        let health = Grpc_Health_V1_Health.Client(wrapping: client)
        let large = String(repeating: "x", count: 4 * 1024 * 1024 + 1)
        let error = await #expect(throws: RPCError.self) {
          try await health.check(.with { $0.service = large })
        }
        #expect(error?.code == .resourceExhausted)
        // Just under the limit is served: a check of the whole server whose message also carries
        // an unknown field of 4 MiB less 16 bytes in all (kept as bytes, not read as text).
        let payload = 4 * 1024 * 1024 - 16 - 5
        var justUnder: [UInt8] = [0x12]  // field 2, length-delimited: unknown to HealthCheckRequest
        var length = payload
        while length >= 0x80 {
          justUnder.append(UInt8(length & 0x7F) | 0x80)
          length >>= 7
        }
        justUnder.append(UInt8(length))
        #expect(justUnder.count == 5)
        justUnder += [UInt8](repeating: 0x79, count: payload)
        let under = try await client.unary(
          request: ClientRequest(message: justUnder),
          descriptor: Grpc_Health_V1_Health.Method.Check.descriptor,
          serializer: RawMessageBytes(),
          deserializer: ProtobufDeserializer<Grpc_Health_V1_HealthCheckResponse>(),
          options: .defaults
        ) { try $0.message }
        #expect(under.status == .serving)
        let after = try await health.check(.init())
        #expect(after.status == .serving)
        // Only the stream was refused: every call above went over the one connection.
        #expect(server.application.connections.accepted == 1)
      }
    }
  }

  @Test("Server reflection lists every service and serves the file that declares a symbol")
  func reflection() async throws {
    try await InProcessServer.with { server in
      try await server.withClient { client in
        let reflection = Grpc_Reflection_V1_ServerReflection.Client(wrapping: client)
        let requests: [Grpc_Reflection_V1_ServerReflectionRequest] = [
          .with { $0.listServices = "" },
          .with { $0.fileContainingSymbol = "tender.payments.v1.PaymentService.CreatePayment" },
          .with { $0.fileContainingSymbol = "tender.nope.v1.Missing" },
        ]
        let responses = try await reflection.serverReflectionInfo(
          requestProducer: { writer in try await writer.write(contentsOf: requests) }
        ) { response in
          var collected: [Grpc_Reflection_V1_ServerReflectionResponse] = []
          for try await message in response.messages { collected.append(message) }
          return collected
        }
        #expect(responses.count == 3)
        let names = responses[0].listServicesResponse.service.map(\.name)
        #expect(Set(names) == Set(TenderApplication.serviceNames))

        let files = try responses[1].fileDescriptorResponse.fileDescriptorProto.map {
          try Google_Protobuf_FileDescriptorProto(serializedBytes: $0)
        }
        #expect(files.last?.name == "tender/payments/v1/payment_service.proto")
        // Imports come along so a client can build the whole descriptor.
        #expect(files.contains { $0.name == "tender/type/v1/money.proto" })
        #expect(files.contains { $0.name == "google/protobuf/timestamp.proto" })

        #expect(responses[2].errorResponse.errorCode == Int32(RPCError.Code.notFound.rawValue))
      }
    }
  }

  @Test("Reflection v1alpha answers as v1 does, for clients that only speak it (grpcurl 1.8, grpcio-reflection)")
  func reflectionV1Alpha() async throws {
    try await InProcessServer.with { server in
      try await server.withClient { client in
        let reflection = Grpc_Reflection_V1alpha_ServerReflection.Client(wrapping: client)
        let requests: [Grpc_Reflection_V1alpha_ServerReflectionRequest] = [
          .with { $0.listServices = "" },
          .with { $0.fileContainingSymbol = "tender.refunds.v1.RefundService" },
          .with { $0.fileByFilename = "tender/nope.proto" },
        ]
        let responses = try await reflection.serverReflectionInfo(
          requestProducer: { writer in try await writer.write(contentsOf: requests) }
        ) { response in
          var collected: [Grpc_Reflection_V1alpha_ServerReflectionResponse] = []
          for try await message in response.messages { collected.append(message) }
          return collected
        }
        #expect(responses.count == 3)
        let names = responses.first?.listServicesResponse.service.map(\.name) ?? []
        #expect(Set(names) == Set(TenderApplication.serviceNames))
        #expect(names.contains("grpc.reflection.v1alpha.ServerReflection"))
        #expect(responses.first?.originalRequest.listServices == "")
        let files = try (responses.dropFirst().first?.fileDescriptorResponse.fileDescriptorProto ?? []).map {
          try Google_Protobuf_FileDescriptorProto(serializedBytes: $0)
        }
        #expect(files.last?.name == "tender/refunds/v1/refund_service.proto")
        #expect(responses.last?.errorResponse.errorCode == Int32(RPCError.Code.notFound.rawValue))
      }
    }
  }
}
