public import Foundation
public import GRPCCore
public import GRPCInProcessTransport
public import Logging
import TenderAuth
import TenderRPC
public import TenderCore
public import TenderServer
import ServiceLifecycle

/// The server `tender serve` runs — the same `TenderApplication.build`, interceptors and RPC
/// services — over grpc-swift's in-process transport, on in-memory ports: RPC behaviour
/// (validation, scopes, idempotency, paging, errors) tested without sockets, TLS, PostgreSQL,
/// Redis or the simulator, in milliseconds. The PostgreSQL suites and the end-to-end tests
/// (`TestServer`) cover the real parts.
public struct InProcessServer: Sendable {
  public let application: TenderApplication
  public let database: InMemoryDatabase
  public let provider: InMemoryProvider
  public let clock: TestClock
  private let transport: InProcessTransport

  /// Starts a server, runs `body`, then drains the server and waits for it to stop.
  /// - Parameters:
  ///   - configure: adjusts the flags before they are resolved.
  ///   - tune: adjusts the resolved configuration.
  public static func with<Result: Sendable>(
    configure: (inout [Setting: String]) -> Void = { _ in },
    tune: (inout ServerConfiguration) -> Void = { _ in },
    _ body: (InProcessServer) async throws -> Result
  ) async throws -> Result {
    var flags: [Setting: String] = [
      .grpcAddress: "127.0.0.1:0",
      .httpAddress: "127.0.0.1:0",
      .insecure: "true",
      // Parsed, never dialled: the ports are in memory.
      .databaseURL: "postgres://tender@127.0.0.1:1/unused",
      .redisURL: "redis://127.0.0.1:1",
      .keyEncryptionKey: TestServer.keyEncryptionKey,
      .providerAPIKey: "sk_test_tender",
      .providerAttempts: "1",
      .idempotencyLock: "60s",
      .completerInterval: "1h",
      .healthProbeInterval: "1h",
      .logLevel: ProcessInfo.processInfo.environment["TENDER_TEST_LOG_LEVEL"] ?? "warning",
    ]
    configure(&flags)
    var configuration = try await ServerConfiguration.resolve(flags: flags, environment: [:])
    if flags[.clientSecretCost] == nil { configuration.secretHashing = TestServer.secretHashing }
    tune(&configuration)
    var logger = Logger(label: "tender.test.in-process")
    logger.logLevel = configuration.logLevel

    let clock = TestClock()
    let database = InMemoryDatabase(clock: clock)
    let stores = InMemoryStores(database: database)
    let provider = InMemoryProvider()
    let ports = TenderPorts(
      payments: stores, calls: stores, refunds: stores, idempotency: stores, settlement: stores, webhooks: nil,
      auth: InMemoryAuthStore(database: database), standingCache: nil, limiter: InMemoryRateLimiter(clock: clock),
      provider: provider, now: { database.recordTime() }, signals: database.signals
    )
    let transport = InProcessTransport()
    let (listening, continuation) = AsyncStream.makeStream(of: Void.self)
    let application = try TenderApplication.build(
      configuration: configuration,
      logger: logger,
      ports: ports,
      listener: .inProcess(transport),
      gracefulShutdownSignals: [],
      onListening: { _, _ in continuation.finish() }
    )
    let server = InProcessServer(
      application: application, database: database, provider: provider, clock: clock, transport: transport)
    return try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask {
        defer { continuation.finish() }
        try await application.serviceGroup.run()
      }
      for await _ in listening {}
      // Readiness has no dependency to probe here: SERVING after the monitor's first round.
      for await status in application.board.watch("") where status == .serving { break }
      return try await application.drained(after: server, &group, body)
    }
  }

  /// Runs `body` with a client of this server; the client is shut down afterwards.
  public func withClient<Result: Sendable>(
    _ body: (GRPCClient<InProcessTransport.Client>) async throws -> Result
  ) async throws -> Result {
    try await withGRPCClient(transport: self.transport.client) { client in
      try await body(client)
    }
  }
}

extension InProcessServer: ServerUnderTest {}
