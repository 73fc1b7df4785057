public import GRPCCore
public import TenderAPI
import SwiftProtobuf
import Synchronization

/// The standard `grpc.health.v1.Health` service, reading the shared status board.
///
/// It answers without a token (balancers probe it), so what one caller can hold is bounded: a
/// service name of at most `maximumServiceNameBytes`, at most `watchesPerConnection` open Watch
/// streams per connection and `watchesPerProcess` in all. A cancelled watch leaves nothing behind.
public struct HealthService: Grpc_Health_V1_Health.SimpleServiceProtocol {
  /// The longest service name asked about, in UTF-8 bytes (gRPC's fully qualified names are far
  /// shorter).
  public static let maximumServiceNameBytes = 256

  private let board: HealthStatusBoard
  private let watches: OpenStreams

  public init(board: HealthStatusBoard, watchesPerConnection: Int = 16, watchesPerProcess: Int = 4096) {
    self.board = board
    self.watches = OpenStreams(perOwner: watchesPerConnection, perProcess: watchesPerProcess)
  }

  public func check(
    request: Grpc_Health_V1_HealthCheckRequest,
    context: ServerContext
  ) async throws -> Grpc_Health_V1_HealthCheckResponse {
    try Self.validate(request)
    guard let status = self.board.status(of: request.service) else {
      throw APIError.status(
        .notFound, reason: "SERVICE_UNKNOWN", message: "unknown service", metadata: ["field": "service"])
    }
    return .with { $0.status = Self.wire(status) }
  }

  public func watch(
    request: Grpc_Health_V1_HealthCheckRequest,
    response: RPCWriter<Grpc_Health_V1_HealthCheckResponse>,
    context: ServerContext
  ) async throws {
    try Self.validate(request)
    // The peer names the connection (its address and port).
    let connection = context.remotePeer
    if let exceeded = self.watches.open(owner: connection) {
      throw exceeded.refusal(reason: "TOO_MANY_WATCHES", streams: "health watches", owner: "connection")
    }
    defer { self.watches.close(owner: connection) }
    let watch = self.board.startWatch(request.service)
    // A cancelled RPC (the client reset the stream, or its deadline passed) does not cancel this
    // task: the watch is ended instead, so the stream is not held until the next status change.
    try await withRPCCancellationHandler {
      for await status in watch.stream {
        try await response.write(.with { $0.status = status.map(Self.wire) ?? .serviceUnknown })
      }
    } onCancelRPC: {
      watch.end()
    }
  }

  private static func validate(_ request: Grpc_Health_V1_HealthCheckRequest) throws {
    guard request.service.utf8.count <= Self.maximumServiceNameBytes else {
      throw APIError.invalidArgument(
        field: "service", reason: "SERVICE_NAME_TOO_LONG",
        message: "service names are at most \(Self.maximumServiceNameBytes) bytes")
    }
  }

  private static func wire(_ status: HealthStatusBoard.Status) -> Grpc_Health_V1_HealthCheckResponse.ServingStatus {
    switch status {
    case .serving: return .serving
    case .notServing: return .notServing
    }
  }
}
