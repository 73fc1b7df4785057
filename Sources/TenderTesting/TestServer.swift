public import Foundation
public import GRPCCore
import GRPCInProcessTransport
public import GRPCNIOTransportHTTP2
public import Logging
public import PostgresNIO
import ServiceLifecycle
public import TenderAuth
public import TenderProviderSim
import TenderCore
import TenderRPC
public import TenderServer
public import TenderDevSupport
public import Tracing
import Synchronization

/// Certificates for one test run: a CA, a server certificate for localhost, and a client
/// certificate for mutual TLS, all made at run time and written to a temporary folder.
public struct TestCertificates: Sendable {
  public let directory: URL
  public let authority: DevCertificateAuthority
  public let server: DevCertificateAuthority.Issued
  public let client: DevCertificateAuthority.Issued

  public var caPath: String { self.directory.appendingPathComponent("ca.pem").path }
  public var serverCertificatePath: String { self.directory.appendingPathComponent("server.pem").path }
  public var serverKeyPath: String { self.directory.appendingPathComponent("server-key.pem").path }

  /// Folders made by this process, removed when it exits (whoever made them).
  private static let made: Mutex<[URL]> = {
    atexit {
      for directory in TestCertificates.made.withLock({ $0 }) { try? FileManager.default.removeItem(at: directory) }
    }
    return Mutex([])
  }()

  public static func make() throws -> TestCertificates {
    let directory = URL(fileURLWithPath: NSTemporaryDirectory())
      .appendingPathComponent("tender-test-tls-\(UUID().uuidString)", isDirectory: true)
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    Self.made.withLock { $0.append(directory) }
    let authority = try DevCertificateAuthority()
    let certificates = TestCertificates(
      directory: directory,
      authority: authority,
      server: try authority.issueServerCertificate(),
      client: try authority.issueClientCertificate(commonName: "test-client")
    )
    try authority.certificatePEM.write(toFile: certificates.caPath, atomically: true, encoding: .utf8)
    try certificates.server.certificatePEM.write(
      toFile: certificates.serverCertificatePath, atomically: true, encoding: .utf8)
    try certificates.server.privateKeyPEM.write(toFile: certificates.serverKeyPath, atomically: true, encoding: .utf8)
    return certificates
  }
}

/// A Tender server running in this process on its production ports: a real PostgreSQL database
/// of its own, the shared test Redis and a provider simulator of its own. Its HTTP bridge listens
/// on an ephemeral loopback port with real TLS; its RPCs arrive over grpc-swift's in-process
/// transport, or (the end-to-end tests, `rpc: .tls`) over HTTP/2 and TLS on a loopback port.
public struct TestServer: Sendable {
  /// The key-encryption key of every test server (tests never share their databases).
  public static let keyEncryptionKey = "dGVuZGVyLXRlc3Qta2V5LWVuY3J5cHRpb24ta2V5ISE="
  /// The scrypt cost of the client secrets test servers make, unless a test sets
  /// `clientSecretCost`: 2^4 rounds instead of production's 2^14 (and below the setting's floor of
  /// 2^10, which is there for operators). Hashing and checking run the same code, only cheaper.
  public static let secretHashing = ClientSecretHasher.Parameters(logRounds: 4, blockSize: 8, parallelism: 1)
  /// The Stripe webhook secret of every test server and its simulator.
  public static let webhookSecret = "whsec_tender_test"
  /// Address of the gRPC listener (`rpc: .tls`; "in-process" and 0 otherwise).
  public let host: String
  public let port: Int
  /// Port of the HTTP bridge (same TLS as gRPC).
  public let httpPort: Int
  public let certificates: TestCertificates
  public let databaseURL: String
  public let application: TenderApplication
  /// The namespace of this server's Redis keys.
  public let redisKeyPrefix: String
  /// The provider simulator this server talks to.
  public let simulator: ProviderSimulator
  /// The client side of the in-process transport (`rpc: .inProcess`); nil over TLS.
  private let inProcessClient: InProcessTransport.Client?

  /// How RPCs reach this server.
  public var rpc: RPCTransport { self.inProcessClient == nil ? .tls : .inProcess }

  /// How RPCs reach a test server.
  public enum RPCTransport: Sendable {
    /// grpc-swift's in-process transport: the same server, interceptors and services, no socket.
    case inProcess
    /// HTTP/2 over TLS on an ephemeral loopback port, as `tender serve` listens.
    case tls
  }

  /// How the server's background rounds (the completer, the reconciler, due webhooks, the
  /// readiness probe) run.
  public enum Rounds: Sendable {
    /// Only when the test runs them (`completeRound()`, `applyWebhooks()`), so each is awaited and
    /// no idle server polls its database; readiness is probed once, when the server listens.
    case onDemand
    /// Every 200 ms, as a server does on its own.
    case periodic
  }

  /// Starts a server, runs `body`, then drains the server and waits for it to stop.
  /// - Parameters:
  ///   - configure: adjusts the flags before they are resolved (e.g. to turn on mTLS).
  ///   - rpc: how RPCs reach the server.
  ///   - rounds: whether background rounds run by themselves.
  public static func with<Result: Sendable>(
    rpc: RPCTransport = .inProcess,
    configure: (inout [Setting: String], TestCertificates) -> Void = { _, _ in },
    rounds: Rounds = .onDemand,
    waitUntilServing: Bool = true,
    webhooks: Bool = true,
    logger: Logger? = nil,
    tracer: any Tracer = NoOpTracer(),
    tune: (inout ServerConfiguration) -> Void = { _ in },
    _ body: (TestServer) async throws -> Result
  ) async throws -> Result {
    let certificates = try TestCertificates.make()
    let databaseURL = try await TestPostgres.makeDatabase()
    // A provider simulator of this server's own, so each test sees only its own provider calls.
    return try await ProviderSimulator.runInBackground(
      // pm_card_slow answers well after the connector has given up (2 attempts of 2 s), even on a loaded machine.
      configuration: .init(apiKey: "sk_test_tender", slowDelay: .seconds(8), asyncDelay: .seconds(1)),
      logger: Logger(label: "tender.test.sim")
    ) { simulator, simulatorPort in
      var flags: [Setting: String] = [
        .grpcAddress: "127.0.0.1:0",
        .httpAddress: "127.0.0.1:0",
        .tlsCert: certificates.serverCertificatePath,
        .tlsKey: certificates.serverKeyPath,
        .databaseURL: databaseURL,
        .migrate: "true",
        // Generous timeouts: a test run loads both cores, which production Redis never sees.
        .redisURL: try await TestRedis.sharedServer().url + "?command_timeout=2s&connect_timeout=2s",
        // Test servers share one Redis; each keeps its own buckets.
        .redisKeyPrefix: "tender-test-\(UUID().uuidString.prefix(8)):",
        .keyEncryptionKey: TestServer.keyEncryptionKey,
        .providerURL: "http://127.0.0.1:\(simulatorPort)",
        .providerAPIKey: "sk_test_tender",
        // 2 s per attempt: the whole suite loads both cores, which production never sees.
        .providerTimeout: "2s",
        // A whole provider call takes at most 2 × 2 s + 200 ms here, so interrupted operations can
        // be taken over after 5 s (60 s in production); they are looked for often.
        .providerAttempts: "2",
        .providerMaxBackoff: "200ms",
        .idempotencyLock: "5s",
        .completerInterval: rounds == .periodic ? "200ms" : "1h",
        // The simulator sends Stripe-signed webhooks to this server's bridge.
        .webhookSecrets: "stripe=\(TestServer.webhookSecret)",
        // The reconciler asks about open payments and refunds after 300 ms (60 s in production).
        .settlementCheckAfter: "300ms",
        .settlementGiveUpAfter: "60s",
        .healthProbeInterval: rounds == .periodic ? "200ms" : "1h",
        .logLevel: ProcessInfo.processInfo.environment["TENDER_TEST_LOG_LEVEL"] ?? "warning",
      ]
      configure(&flags, certificates)
      var configuration = try await ServerConfiguration.resolve(flags: flags, environment: [:])
      if flags[.clientSecretCost] == nil { configuration.secretHashing = TestServer.secretHashing }
      tune(&configuration)
      let logger =
        logger
        ?? {
          var logger = Logger(label: "tender.test")
          logger.logLevel = configuration.logLevel
          return logger
        }()

      let inProcess = rpc == .inProcess ? InProcessTransport() : nil
      let (addresses, continuation) = AsyncStream.makeStream(of: (String, Int).self)
      let (bridgePorts, bridgeContinuation) = AsyncStream.makeStream(of: Int.self)
      let application = try TenderApplication.build(
        configuration: configuration,
        logger: logger,
        tracer: tracer,
        listener: inProcess.map { .inProcess($0) } ?? .network,
        gracefulShutdownSignals: [],
        onListening: { host, port in
          continuation.yield((host, port))
          continuation.finish()
        },
        onBridgeListening: { port in
          bridgeContinuation.yield(port)
          bridgeContinuation.finish()
        }
      )

      return try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask {
          // If the server stops before it listens, the wait below ends instead of hanging.
          defer {
            continuation.finish()
            bridgeContinuation.finish()
          }
          try await application.serviceGroup.run()
        }
        defer { try? FileManager.default.removeItem(at: certificates.directory) }
        var iterator = addresses.makeAsyncIterator()
        guard let (host, port) = await iterator.next() else {
          try await group.waitForAll()
          throw TestServerError.didNotListen
        }
        var bridgeIterator = bridgePorts.makeAsyncIterator()
        guard let httpPort = await bridgeIterator.next() else {
          try await group.waitForAll()
          throw TestServerError.didNotListen
        }
        if webhooks {
          simulator.sendWebhooks(
            to: "https://127.0.0.1:\(httpPort)/webhooks/stripe", secret: TestServer.webhookSecret,
            trustRoots: Array(certificates.authority.certificatePEM.utf8)
          )
        } else {
          simulator.deliverWebhooks(WebhookDelivery(enabled: false))
        }
        let server = TestServer(
          host: host, port: port, httpPort: httpPort, certificates: certificates, databaseURL: databaseURL,
          application: application, redisKeyPrefix: configuration.redisKeyPrefix, simulator: simulator,
          inProcessClient: inProcess?.client)
        if waitUntilServing {
          // The board's own watch: the first SERVING; a minute without one is a failure.
          let board = application.board
          let serving = await withTaskGroup(of: Bool.self) { wait in
            wait.addTask {
              for await status in board.watch("") where status == .serving { return true }
              return false
            }
            wait.addTask {
              try? await Task.sleep(for: .seconds(60))
              return false
            }
            let first = await wait.next() ?? false
            wait.cancelAll()
            return first
          }
          guard serving else { throw TestServerError.neverServing }
        }
        return try await application.drained(after: server, &group, body)
      }
    }
  }

  /// Starts a server whose database URL points at a closed port, so its dependency probe fails.
  public static func withUnreachableDatabase<Result: Sendable>(
    _ body: (TestServer) async throws -> Result
  ) async throws -> Result {
    let closedPort = try LocalPostgres.freePort()
    return try await Self.with(
      configure: { flags, _ in
        flags[.databaseURL] = "postgres://postgres@127.0.0.1:\(closedPort)/tender?sslmode=disable"
        flags[.migrate] = "false"
      },
      waitUntilServing: false,
      body
    )
  }

  /// A gRPC client transport to this server over TLS (`rpc: .tls`), trusting the test CA unless
  /// told otherwise.
  public func clientTransport(
    trustRoots: TLSConfig.TrustRootsSource? = nil,
    clientCertificate: DevCertificateAuthority.Issued? = nil,
    plaintext: Bool = false
  ) throws -> HTTP2ClientTransport.Posix {
    var config = HTTP2ClientTransport.Posix.Config.defaults
    config.backoff.initial = .milliseconds(50)
    config.backoff.max = .milliseconds(200)
    config.connection.maxIdleTime = nil
    let roots =
      trustRoots ?? .certificates([.bytes(Array(self.certificates.authority.certificatePEM.utf8), format: .pem)])
    let security: HTTP2ClientTransport.Posix.TransportSecurity
    if plaintext {
      security = .plaintext
    } else if let clientCertificate {
      security = .mTLS(
        certificateChain: [.bytes(Array(clientCertificate.certificatePEM.utf8), format: .pem)],
        privateKey: .bytes(Array(clientCertificate.privateKeyPEM.utf8), format: .pem)
      ) { tls in
        tls.trustRoots = roots
      }
    } else {
      security = .tls { tls in
        tls.trustRoots = roots
      }
    }
    return try HTTP2ClientTransport.Posix(
      target: .ipv4(host: self.host, port: self.port),
      transportSecurity: security,
      config: config
    )
  }

  /// Runs `body` with the server's own connection pool to its database (a test's SQL opens no
  /// connection of its own).
  public func withPostgres<Result: Sendable>(_ body: (PostgresClient) async throws -> Result) async throws -> Result {
    guard let postgres = self.application.postgres else { throw TestServerError.noDatabase }
    return try await body(postgres)
  }

  /// Runs one completer round (interrupted operations whose lock expired, then the reconciler)
  /// and returns how many it finished.
  @discardableResult
  public func completeRound() async throws -> Int {
    try await self.application.rounds.complete()
  }

  /// Lets the completer take over the idempotency key `key` as it would once the key's lock ran
  /// out, without waiting for that: moves the lock into the past and runs a completer round,
  /// until `condition` (SQL over the key's row, e.g. `recovery_point = 'finished'`) holds. A
  /// heartbeat of a call still in flight may renew the lock in between; so does a round that
  /// takes the key and finds the provider still working, hence the repetition.
  public func completeAfterLockExpiry(
    key: String, until condition: String, timeout: Duration = .seconds(30)
  ) async throws {
    let deadline = ContinuousClock.now + timeout
    let keyLiteral = "'" + key.replacingOccurrences(of: "'", with: "''") + "'"
    try await self.withPostgres { postgres in
      while ContinuousClock.now < deadline {
        let reached = try await postgres.query(
          PostgresQuery(
            unsafeSQL:
              "SELECT count(*)::bigint FROM idempotency_keys WHERE idempotency_key = \(keyLiteral) AND (\(condition))"
          )
        ).decode(Int64.self).reduce(0, +)
        if reached == 1 { return }
        try await Self.expireLock(key: key, postgres)
        try await self.completeRound()
        try await Task.sleep(for: .milliseconds(50))
      }
      throw TestServerError.keyNeverReached(key: key, condition: condition)
    }
  }

  /// Ends the lock on the idempotency key `key` now, as if its length had passed (unless the key
  /// is finished): its owner's next write is fenced out once another call takes the key over.
  public func expireLock(key: String) async throws {
    try await self.withPostgres { try await Self.expireLock(key: key, $0) }
  }

  private static func expireLock(key: String, _ postgres: PostgresClient) async throws {
    try await postgres.query(
      """
      UPDATE idempotency_keys SET locked_until = now() - interval '1 second'
      WHERE idempotency_key = \(key) AND recovery_point <> 'finished'
      """)
  }

  /// Applies the stored webhooks that are due; returns how many were applied.
  @discardableResult
  public func applyWebhooks() async throws -> Int {
    try await self.application.rounds.applyWebhooks()
  }

  /// Runs `body` with a client of this server, over its in-process transport or over TLS as the
  /// server was started; the client is shut down afterwards.
  public func withClient<Result: Sendable>(
    _ body: (GRPCClient<TestClientTransport>) async throws -> Result
  ) async throws -> Result {
    let transport =
      if let client = self.inProcessClient { TestClientTransport(client) } else {
        TestClientTransport(try self.clientTransport())
      }
    return try await withGRPCClient(transport: transport) { client in
      try await body(client)
    }
  }

  /// Runs `body` with a gRPC client over HTTP/2 (`rpc: .tls`), with the given trust and client
  /// certificate, or in plaintext; the client is shut down afterwards.
  public func withTLSClient<Result: Sendable>(
    trustRoots: TLSConfig.TrustRootsSource? = nil,
    clientCertificate: DevCertificateAuthority.Issued? = nil,
    plaintext: Bool = false,
    _ body: (GRPCClient<HTTP2ClientTransport.Posix>) async throws -> Result
  ) async throws -> Result {
    let transport = try self.clientTransport(
      trustRoots: trustRoots, clientCertificate: clientCertificate, plaintext: plaintext)
    return try await withGRPCClient(transport: transport) { client in
      try await body(client)
    }
  }
}

/// A Tender server a test runs (over TLS, or in process): API clients and tokens are made
/// through its own registry and authority.
public protocol ServerUnderTest: Sendable {
  var application: TenderApplication { get }
}

extension ServerUnderTest {
  /// Creates a client (and its merchant); returns its id and secret.
  public func makeClient(
    scopes: [String], merchantID: String = TestServer.merchantID
  ) async throws -> (clientID: String, secret: String) {
    try await self.application.authStore.ensureMerchant(id: merchantID, displayName: "Test merchant")
    let (record, secret) = try await self.application.clients.create(
      merchantID: merchantID, scopes: scopes, displayName: "test")
    return (record.clientID, secret.value)
  }

  /// An access token of a new client holding `scopes`.
  public func token(scopes: [String], merchantID: String = TestServer.merchantID) async throws -> String {
    let client = try await self.makeClient(scopes: scopes, merchantID: merchantID)
    return try await self.application.authority.issue(
      clientID: client.clientID, secret: Secret(client.secret), requestedScopes: []
    ).token.value
  }
}

extension TestServer: ServerUnderTest {
  /// A merchant every test server can use.
  public static let merchantID = "mer_test"

  /// Metadata carrying `token` as a bearer token.
  public static func bearer(_ token: String) -> Metadata {
    ["authorization": "Bearer \(token)"]
  }
}

public enum TestServerError: Error {
  case didNotListen
  case neverServing
  case noDatabase
  case keyNeverReached(key: String, condition: String)
}

extension TenderApplication {
  /// Runs `body` on the running server, then drains the server (in `group`) and waits for it to
  /// stop, whether `body` returned or threw.
  func drained<Server: Sendable, Result: Sendable>(
    after server: Server, _ group: inout ThrowingTaskGroup<Void, any Error>, _ body: (Server) async throws -> Result
  ) async throws -> Result {
    do {
      let result = try await body(server)
      await self.serviceGroup.triggerGracefulShutdown()
      try await group.waitForAll()
      return result
    } catch {
      await self.serviceGroup.triggerGracefulShutdown()
      try? await group.waitForAll()
      throw error
    }
  }
}
