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
  private let watches: WatchCount

  public init(board: HealthStatusBoard, watchesPerConnection: Int = 16, watchesPerProcess: Int = 4096) {
    self.board = board
    self.watches = WatchCount(perConnection: watchesPerConnection, perProcess: watchesPerProcess)
  }

  public func check(
    request: Grpc_Health_V1_HealthCheckRequest,
    context: ServerContext
  ) async throws -> Grpc_Health_V1_HealthCheckResponse {
    try Self.validate(request)
    guard let status = self.board.status(of: request.service) else {
      throw RPCError(code: .notFound, message: "unknown service")
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
    if let exceeded = self.watches.open(connection: connection) {
      throw APIError.status(
        .resourceExhausted, reason: "TOO_MANY_WATCHES",
        message: "too many open health watches \(exceeded.description); close one first",
        metadata: ["limit": exceeded.rawValue])
    }
    defer { self.watches.close(connection: connection) }
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

/// Open Watch streams, per connection and in all.
private final class WatchCount: Sendable {
  enum Limit: String {
    case perConnection = "per_connection"
    case perProcess = "per_process"

    var description: String {
      switch self {
      case .perConnection: "on this connection"
      case .perProcess: "on this server"
      }
    }
  }

  private let perConnection: Int
  private let perProcess: Int
  private let counts = Mutex<(byConnection: [String: Int], total: Int)>(([:], 0))

  init(perConnection: Int, perProcess: Int) {
    self.perConnection = perConnection
    self.perProcess = perProcess
  }

  /// Counts a new stream on `connection`; the limit it would exceed instead, if any.
  func open(connection: String) -> Limit? {
    self.counts.withLock { counts in
      if counts.total >= self.perProcess { return .perProcess }
      if counts.byConnection[connection, default: 0] >= self.perConnection { return .perConnection }
      counts.byConnection[connection, default: 0] += 1
      counts.total += 1
      return nil
    }
  }

  func close(connection: String) {
    self.counts.withLock { counts in
      counts.total -= 1
      let left = counts.byConnection[connection, default: 1] - 1
      counts.byConnection[connection] = left > 0 ? left : nil
    }
  }
}
