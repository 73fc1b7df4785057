public import GRPCCore
public import Logging
public import ServiceLifecycle
public import TenderRPC

/// Runs the gRPC server as a lifecycle `Service`. On graceful shutdown it reports NOT_SERVING and
/// ends health watches at once, waits the drain delay so balancers notice, then stops accepting
/// RPCs and lets the in-flight ones finish.
public struct GRPCServerService<Transport: ServerTransport>: Service {
  private let server: GRPCServer<Transport>
  private let board: HealthStatusBoard
  private let drainDelay: Duration
  private let logger: Logger
  private let beforeServing: @Sendable () async throws -> Void
  private let onListening: @Sendable (_ host: String, _ port: Int) -> Void
  private let address: @Sendable () async throws -> (host: String, port: Int, text: String)

  /// - Parameter address: where the server listens, once it does (host, port, as logged).
  public init(
    server: GRPCServer<Transport>,
    board: HealthStatusBoard,
    drainDelay: Duration,
    logger: Logger,
    beforeServing: @escaping @Sendable () async throws -> Void = {},
    address: @escaping @Sendable () async throws -> (host: String, port: Int, text: String),
    onListening: @escaping @Sendable (_ host: String, _ port: Int) -> Void
  ) {
    self.address = address
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
        let (host, port, text) = try await self.address()
        self.logger.notice("gRPC listening", metadata: ["address": "\(text)"])
        self.onListening(host, port)
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
