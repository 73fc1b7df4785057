public import GRPCCore
public import TenderAPI
import SwiftProtobuf

/// The standard `grpc.health.v1.Health` service, reading the shared status board.
public struct HealthService: Grpc_Health_V1_Health.SimpleServiceProtocol {
  private let board: HealthStatusBoard

  public init(board: HealthStatusBoard) {
    self.board = board
  }

  public func check(
    request: Grpc_Health_V1_HealthCheckRequest,
    context: ServerContext
  ) async throws -> Grpc_Health_V1_HealthCheckResponse {
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
    for await status in self.board.watch(request.service) {
      try await response.write(.with { $0.status = status.map(Self.wire) ?? .serviceUnknown })
    }
  }

  private static func wire(_ status: HealthStatusBoard.Status) -> Grpc_Health_V1_HealthCheckResponse.ServingStatus {
    switch status {
    case .serving: return .serving
    case .notServing: return .notServing
    }
  }
}
