public import GRPCCore
public import GRPCNIOTransportHTTP2
public import Logging
public import ServiceLifecycle
public import TenderRPC

/// Runs the gRPC server as a lifecycle `Service`. On graceful shutdown it reports NOT_SERVING and
/// ends health watches at once, waits the drain delay so balancers notice, then stops accepting
/// RPCs and lets the in-flight ones finish.
public struct GRPCServerService: Service {
  private let server: GRPCServer<HTTP2ServerTransport.Posix>
  private let board: HealthStatusBoard
  private let drainDelay: Duration
  private let logger: Logger
  private let beforeServing: @Sendable () async throws -> Void
  private let onListening: @Sendable (_ host: String, _ port: Int) -> Void

  public init(
    server: GRPCServer<HTTP2ServerTransport.Posix>,
    board: HealthStatusBoard,
    drainDelay: Duration,
    logger: Logger,
    beforeServing: @escaping @Sendable () async throws -> Void = {},
    onListening: @escaping @Sendable (_ host: String, _ port: Int) -> Void
  ) {
    self.server = server
    self.board = board
    self.drainDelay = drainDelay
    self.logger = logger
    self.beforeServing = beforeServing
    self.onListening = onListening
  }

  public func run() async throws {
    let server = self.server
    do {
      try await self.beforeServing()
    } catch {
      // PostgresNIO's own description hides the server's message; the reflection has it.
      self.logger.critical("could not prepare to serve", metadata: ["error": "\(String(reflecting: error))"])
      throw error
    }
    try await withThrowingDiscardingTaskGroup { group in
      group.addTask {
        try await server.serve()
      }
      group.addTask {
        let address = try await server.transport.listeningAddress
        if let ipv4 = address.ipv4 {
          self.logger.notice("gRPC listening", metadata: ["address": "\(ipv4.host):\(ipv4.port)"])
          self.onListening(ipv4.host, ipv4.port)
        } else if let ipv6 = address.ipv6 {
          self.logger.notice("gRPC listening", metadata: ["address": "[\(ipv6.host)]:\(ipv6.port)"])
          self.onListening(ipv6.host, ipv6.port)
        }
      }
      group.addTask {
        try await gracefulShutdown()
        self.logger.notice("draining: health reports NOT_SERVING", metadata: ["drain_delay": "\(self.drainDelay)"])
        self.board.shutDown()
        try await Task.sleep(for: self.drainDelay)
        self.logger.notice("draining: refusing new RPCs, finishing in-flight ones")
        server.beginGracefulShutdown()
      }
    }
    self.logger.notice("gRPC server stopped")
  }
}
