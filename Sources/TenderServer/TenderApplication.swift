import Foundation
import GRPCCore
public import GRPCInProcessTransport
public import Logging
import NIOCore
import NIOPosix
import NIOCertificateReloading
import NIOSSL
import CoreMetrics
import OTel
import TenderBridge
import Synchronization
public import PostgresNIO
public import Prometheus
public import ServiceLifecycle
import TenderAPI
public import TenderAuth
import TenderCore
import TenderOperations
import TenderPostgres
import TenderProviders
public import TenderRPC
import TenderRedis
import TenderTransport
public import Tracing
public import UnixSignals

/// The composition root: builds every long-lived part of a Tender server into one `ServiceGroup`.
/// `tender serve`, `tender dev` and the tests all start the server through here.
public struct TenderApplication: Sendable {
  /// Run this; it returns once the server has drained and stopped.
  public let serviceGroup: ServiceGroup
  /// The health status the server reports.
  public let board: HealthStatusBoard
  /// The database pool, for callers that need it beside the server (tests); nil on other ports.
  public let postgres: PostgresClient?
  /// Counts of the listener's connections.
  public let connections: ConnectionCounter
  /// The server's metrics, in Prometheus exposition format via `emitToString()`.
  public let metrics: PrometheusCollectorRegistry
  /// Access tokens: issuing, verifying, revoking.
  public let authority: TokenAuthority
  /// API clients: creating, rotating secrets.
  public let clients: ClientRegistry
  /// The durable auth state (clients, keys, revocations).
  public let authStore: any AuthStore
  /// Hashes and checks client secrets.
  public let secretHasher: ClientSecretHasher
  /// The background rounds, each run now and awaited (the server also runs them every
  /// `completerInterval`).
  public let rounds: BackgroundRounds

  /// Fully qualified names of the services registered on the gRPC server.
  public static let serviceNames: [String] = [
    Grpc_Health_V1_Health.descriptor.fullyQualifiedService,
    Grpc_Reflection_V1_ServerReflection.descriptor.fullyQualifiedService,
    Grpc_Reflection_V1alpha_ServerReflection.descriptor.fullyQualifiedService,
    Tender_Auth_V1_AuthService.descriptor.fullyQualifiedService,
    Tender_Payments_V1_PaymentService.descriptor.fullyQualifiedService,
    Tender_Refunds_V1_RefundService.descriptor.fullyQualifiedService,
  ]

  /// Builds the server.
  /// - Parameters:
  ///   - gracefulShutdownSignals: signals that start a drain (SIGTERM, SIGINT for `tender`; none in tests).
  ///   - onListening: called once with the bound gRPC address (useful with port 0).
  ///   - onBridgeListening: called once with the bound port of the HTTP bridge.
  ///   - withoutInterceptors: serve with no interceptor at all — no auth, limits, logs, metrics
  ///     or traces. Only for measuring what the chain costs (`tender dev`'s hidden flag).
  ///   - tracer: receives the RPC and database spans. By default: exported over OTLP/gRPC when
  ///     `otlpEndpoint` is configured, a no-op otherwise.
  ///   - ports: what the server stores in and talks to; by default PostgreSQL, Redis and the
  ///     provider's API as configured.
  ///   - listener: where RPCs arrive: the configured TCP address with its TLS, or an in-process
  ///     transport (tests of RPC behaviour).
  public static func build(
    configuration: ServerConfiguration,
    logger: Logger,
    tracer: (any Tracer)? = nil,
    ports: TenderPorts? = nil,
    listener: Listener = .network,
    withoutInterceptors: Bool = false,
    gracefulShutdownSignals: [UnixSignal] = [.sigterm, .sigint],
    onListening: @escaping @Sendable (_ host: String, _ port: Int) -> Void = { _, _ in },
    onBridgeListening: @escaping @Sendable (_ port: Int) -> Void = { _ in }
  ) throws -> TenderApplication {
    let tracing = try Self.tracing(configuration, given: tracer, logger: logger)
    let metrics = PrometheusCollectorRegistry()
    var ports = ports ?? .production(configuration, tracer: tracing.tracer, logger: logger)
    var metricsFactory = PrometheusMetricsFactory(registry: metrics)
    metricsFactory.valueHistogramBuckets[PaymentMetrics.writeBatchRequests] = PaymentMetrics.writeBatchBuckets
    ports.provider = MeteredProvider(ports.provider, factory: metricsFactory)
    if let movements = ports.movements { PaymentMetrics.connect(movements, factory: metricsFactory) }
    if let batches = ports.writeBatches { PaymentMetrics.connect(batches, factory: metricsFactory) }
    let shared = Shared(
      configuration: configuration,
      ports: ports,
      metrics: metricsFactory,
      tracer: tracing.tracer,
      logger: logger
    )
    let auth = AuthParts(shared)
    let payments = PaymentParts(shared, authority: auth.authority)
    let webhooks = try WebhookParts(shared)

    let servedNames = serviceNames.filter { $0.hasPrefix("tender.") }
    let board = HealthStatusBoard(services: servedNames)
    let services: [any RegistrableRPCService] = [
      HealthService(board: board),
      try ReflectionService(services: serviceNames),
      try ReflectionServiceV1Alpha(services: serviceNames),
      AuthRPCService(
        authority: auth.authority,
        registry: auth.clients,
        gate: auth.gate,
        issuePerClient: configuration.issueTokenRateLimit,
        runner: payments.runner,
        responseKey: configuration.keyEncryptionKey.derivedKey(purpose: "idempotent responses")
      ),
      payments.paymentService,
      payments.refundService,
    ]
    let connections = ConnectionCounter()
    let interceptors = withoutInterceptors ? [] : Self.interceptors(shared, auth: auth, traceID: tracing.traceID)
    let migrate = configuration.migrateOnStart ? ports.migrate : nil
    // Readiness is probed, and signing keys loaded, only once the gRPC server listens (after
    // migrations in dev mode).
    let (listening, listeningContinuation) = AsyncStream.makeStream(of: Void.self)
    let (keysListening, keysListeningContinuation) = AsyncStream.makeStream(of: Void.self)
    let listened: @Sendable (String, Int) -> Void = { host, port in
      listeningContinuation.finish()
      keysListeningContinuation.finish()
      onListening(host, port)
    }
    let certificates =
      listener.isNetwork ? try ServerCertificates.reloader(configuration, metrics: metricsFactory, logger: logger) : nil
    let grpc: any Service
    switch listener {
    case .network:
      let transport = try makeTransport(configuration, connections: connections, certificates: certificates)
      grpc = GRPCServerService(
        server: GRPCServer(
          transport: CallerDeadlineTransport(transport), services: services, interceptorPipeline: interceptors),
        board: board,
        drainDelay: configuration.drainDelay,
        logger: logger,
        beforeServing: { try await migrate?() },
        address: {
          let address = try await transport.listeningAddress
          let host = address.ipAddress ?? configuration.host
          let port = address.port ?? configuration.port
          if case .v6 = address { return (host, port, "[\(host)]:\(port)") }
          return (host, port, "\(host):\(port)")
        },
        onListening: listened
      )
    case .inProcess(let transport):
      grpc = GRPCServerService(
        server: GRPCServer(
          transport: CallerDeadlineTransport(transport.server), services: services, interceptorPipeline: interceptors),
        board: board,
        drainDelay: configuration.drainDelay,
        logger: logger,
        beforeServing: { try await migrate?() },
        address: { ("in-process", 0, "in-process") },
        onListening: listened
      )
    }
    let keys = auth.keys
    let bridge = try Bridge.application(
      configuration: .init(
        host: configuration.httpHost, port: configuration.httpPort,
        tls: try bridgeTLS(configuration, certificates: certificates)),
      readiness: board,
      metrics: { metrics.emitToString() },
      metricsToken: configuration.metricsToken,
      jwks: {
        let keys = try await keys.jwks()
        let data = try JSONSerialization.data(withJSONObject: ["keys": keys], options: [.sortedKeys])
        return String(decoding: data, as: UTF8.self)
      },
      webhooks: webhooks.endpoint,
      logger: logger,
      onListening: { port in
        logger.notice("HTTP bridge listening", metadata: ["address": "\(configuration.httpHost):\(port)"])
        onBridgeListening(port)
      }
    )
    let monitor = ReadinessMonitor(
      probes: ports.probes,
      board: board,
      interval: configuration.healthProbeInterval,
      logger: logger,
      startWhen: { for await _ in listening {} },
      onChange: { [ready = Gauge(label: "tender_ready", factory: shared.metrics)] in ready.record($0 ? 1 : 0) }
    )
    // Started together; on shutdown stopped in reverse: the gRPC server drains first (the bridge
    // still answers /readyz with 503 meanwhile), the database pool closes last so in-flight RPCs
    // can still use it. The exporter starts first and stops last, so the spans of the final RPCs
    // are still sent. Background work finishing is not a reason to stop the server.
    var groupServices: [ServiceGroupConfiguration.ServiceConfiguration] =
      tracing.exporter.map { [.init(service: $0)] } ?? []
    groupServices += ports.services.map { .init(service: $0, successTerminationBehavior: .ignore) }
    groupServices += (auth.background + payments.background + webhooks.background).map {
      .init(service: $0, successTerminationBehavior: .ignore)
    }
    groupServices += certificates.map { [.init(service: $0, successTerminationBehavior: .ignore)] } ?? []
    groupServices += [
      .init(
        service: SigningKeyLoader(keys: keys, logger: logger, startWhen: { for await _ in keysListening {} }),
        successTerminationBehavior: .ignore),
      .init(service: monitor),
      .init(service: bridge),
      .init(
        service: grpc, successTerminationBehavior: .gracefullyShutdownGroup,
        failureTerminationBehavior: .gracefullyShutdownGroup),
    ]
    let group = ServiceGroup(
      configuration: .init(
        services: groupServices, gracefulShutdownSignals: gracefulShutdownSignals, cancellationSignals: [],
        logger: logger)
    )
    return TenderApplication(
      serviceGroup: group,
      board: board,
      postgres: ports.postgres,
      connections: connections,
      metrics: metrics,
      authority: auth.authority,
      clients: auth.clients,
      authStore: auth.store,
      secretHasher: auth.hasher,
      rounds: BackgroundRounds(complete: payments.completeRound, applyWebhooks: webhooks.round)
    )
  }

  /// One round of background work, run on demand. Each returns how many things it finished.
  public struct BackgroundRounds: Sendable {
    /// Finishes interrupted keyed operations whose lock expired, exactly once, then settles what
    /// the provider had not finished (the completer, then the reconciler).
    public let complete: @Sendable () async throws -> Int
    /// Applies the stored webhooks that are due (after a restart, or once the object they name
    /// exists); 0 without a webhook inbox.
    public let applyWebhooks: @Sendable () async throws -> Int
  }

  /// Where RPCs arrive.
  public enum Listener: Sendable {
    /// The configured address, with the configured TLS.
    case network
    /// An in-process transport: no socket, no TLS (tests of RPC behaviour).
    case inProcess(InProcessTransport)

    var isNetwork: Bool {
      if case .network = self { return true }
      return false
    }
  }

  /// What every part of the server is built from.
  struct Shared {
    let configuration: ServerConfiguration
    let ports: TenderPorts
    let metrics: PrometheusMetricsFactory
    let tracer: any Tracer
    let logger: Logger
  }

  /// Clients, access tokens, signing keys and the rate limiter.
  struct AuthParts {
    let store: any AuthStore
    let hasher: ClientSecretHasher
    let keys: KeyRing
    let authority: TokenAuthority
    let clients: ClientRegistry
    let gate: RateLimitGate
    let background: [any Service]

    init(_ shared: Shared) {
      let configuration = shared.configuration
      self.store = shared.ports.auth
      self.hasher = ClientSecretHasher(parameters: configuration.secretHashing)
      let standingCache = shared.ports.standingCache
      self.keys = KeyRing(
        store: self.store,
        encryptionKey: configuration.keyEncryptionKey,
        tokenLifetime: configuration.tokenLifetime,
        leeway: .seconds(30),
        refreshInterval: configuration.keyRefreshInterval,
        logger: shared.logger
      )
      self.authority = TokenAuthority(
        settings: TokenSettings(
          issuer: configuration.tokenIssuer, audience: configuration.tokenAudience,
          lifetime: configuration.tokenLifetime),
        keys: self.keys,
        store: self.store,
        cache: standingCache,
        hasher: self.hasher,
        logger: shared.logger
      )
      self.clients = ClientRegistry(store: self.store, hasher: self.hasher, cache: standingCache)
      self.gate = RateLimitGate(
        limiter: shared.ports.limiter,
        failureMode: configuration.rateLimitFailureMode == .open ? .open : .closed,
        metrics: shared.metrics,
        logger: shared.logger
      )
      self.background = [PeriodicTask.revocationJanitor(store: self.store, logger: shared.logger)]
    }
  }

  /// The provider connector, the keyed-operation runner, payments, refunds, the completer and
  /// the reconciler.
  struct PaymentParts {
    let runner: KeyedOperationRunner
    let paymentService: PaymentRPCService
    let refundService: RefundRPCService
    let completeRound: @Sendable () async throws -> Int
    let background: [any Service]

    init(_ shared: Shared, authority: TokenAuthority) {
      let (configuration, logger, ports) = (shared.configuration, shared.logger, shared.ports)
      let provider = ports.provider
      let paymentStore = ports.payments
      let refundStore = ports.refunds
      let idempotencyStore = ports.idempotency
      let pageTokens = PageTokens(key: configuration.keyEncryptionKey.derivedKey(purpose: "page tokens"))
      // One runner for every keyed operation, the completer's included.
      self.runner = KeyedOperationRunner(
        idempotency: idempotencyStore, calls: ports.calls, lock: configuration.idempotencyLock, logger: logger)
      let feed = PaymentEventFeed(store: paymentStore, signals: ports.signals, logger: logger)
      self.paymentService = PaymentRPCService(
        payments: paymentStore, runner: self.runner, provider: provider, pageTokens: pageTokens, now: ports.now,
        logger: logger, feed: feed, recheck: { await authority.recheck($0) })
      self.refundService = RefundRPCService(
        refunds: refundStore, payments: paymentStore, runner: self.runner, provider: provider, pageTokens: pageTokens,
        now: ports.now, logger: logger
      )
      let abandoned = ["payment", "refund"].reduce(into: [String: CoreMetrics.Counter]()) { counters, kind in
        counters[kind] = CoreMetrics.Counter(
          label: "tender_settlement_abandoned_total", dimensions: [("kind", kind)], factory: shared.metrics)
      }
      let settlement = Settlement(
        store: ports.settlement,
        payments: paymentStore,
        refunds: refundStore,
        provider: provider,
        policy: Settlement.Policy(
          checkAfter: configuration.settlementCheckAfter, giveUpAfter: configuration.settlementGiveUpAfter),
        onAbandoned: { kind in abandoned[kind]?.increment() },
        logger: logger
      )
      let (paymentService, refundService) = (self.paymentService, self.refundService)
      let settlementStore = ports.settlement
      let backlog = PaymentMetrics.settlementBacklog(factory: shared.metrics)
      let completeRound: @Sendable () async throws -> Int = {
        let resolved = try await paymentService.completeStale() + refundService.completeStale()
        if resolved > 0 {
          logger.info("completer took over interrupted operations", metadata: ["count": "\(resolved)"])
        }
        let settled = try await settlement.round()
        if settled > 0 {
          logger.info("reconciler settled open payments and refunds", metadata: ["count": "\(settled)"])
        }
        // The gauges only: a round whose work was done does not fail on them.
        if let reading = try? await settlementStore.backlog() { backlog(reading) }
        return resolved + settled
      }
      self.completeRound = completeRound
      self.background = [
        feed,
        PeriodicTask.idempotencyReaper(store: idempotencyStore, interval: configuration.reaperInterval, logger: logger),
        PeriodicTask(name: "completer", interval: configuration.completerInterval, logger: logger) {
          _ = try await completeRound()
        },
      ]
    }
  }

  /// Webhooks: verified and stored by the bridge's endpoint, applied by the webhook application.
  struct WebhookParts {
    let endpoint: WebhookEndpoint?
    let round: @Sendable () async throws -> Int
    let background: [any Service]

    init(_ shared: Shared) throws {
      let (configuration, logger, metrics) = (shared.configuration, shared.logger, shared.metrics)
      guard let inbox = shared.ports.webhooks else {
        (self.endpoint, self.round, self.background) = (nil, { 0 }, [])
        return
      }
      let (received, receivedContinuation) = AsyncStream.makeStream(
        of: WebhookEvent.self, bufferingPolicy: .bufferingNewest(10_000))
      let applyTimer = CoreMetrics.Timer(label: "tender_webhook_apply_seconds", factory: metrics)
      let applier = WebhookApplier(
        inbox: inbox,
        read: { event in StripeEvents.read(type: event.type, body: event.body) },
        policy: configuration.webhookRetry,
        onApplied: { waited in
          applyTimer.recordNanoseconds(waited.nanoseconds)
        },
        onParked: { provider in
          CoreMetrics.Counter(
            label: "tender_webhooks_parked_total", dimensions: [("provider", provider)], factory: metrics
          ).increment()
        },
        logger: logger
      )
      self.endpoint = try TenderApplication.webhookEndpoint(configuration, metricsFactory: metrics) { event in
        let stored = try await inbox.receive(event)
        if stored { receivedContinuation.yield(event) }
        return stored
      }
      let application = WebhookApplication(
        applier: applier, inbox: inbox, received: received, interval: configuration.completerInterval,
        waiting: Gauge(label: "tender_webhook_inbox_waiting", factory: metrics),
        parked: Gauge(label: "tender_webhook_inbox_parked", factory: metrics),
        logger: logger
      )
      self.round = { try await application.round() }
      self.background = [application]
    }
  }

  /// DESIGN §5, outermost first: tracing, metrics, logging, auth, rate limit. A call refused by
  /// auth or the limiter is still traced, counted and logged.
  static func interceptors(
    _ shared: Shared,
    auth: AuthParts,
    traceID: @escaping @Sendable (ServiceContext) -> String?
  ) -> [ConditionalInterceptor<any ServerInterceptor>] {
    let configuration = shared.configuration
    // Tender's own unary RPCs do I/O and get the default deadline; health and reflection answer
    // from memory and stay as cheap as possible for balancers probing them.
    let unary = Set(MethodPolicies.all.filter { $0.kind == .unary && $0.service.hasPrefix("tender.") }.map(\.fullName))
    return [
      .apply(makeTracingInterceptor(shared.tracer, traceID: traceID), to: .all),
      .apply(MetricsInterceptor(factory: shared.metrics), to: .all),
      .apply(RequestLoggingInterceptor(logger: shared.logger), to: .all),
      .apply(
        DefaultDeadlineInterceptor(deadline: configuration.defaultDeadline),
        to: .allMatching { unary.contains($0.fullyQualifiedMethod) }),
      .apply(
        AuthInterceptor(
          authority: auth.authority,
          admission: ClientAdmission(
            store: shared.ports.admission
              ?? SeparateCallAdmission(cache: shared.ports.standingCache, limiter: shared.ports.limiter),
            gate: auth.gate, policy: configuration.clientRateLimit),
          metrics: shared.metrics), to: .all),
      .apply(
        RateLimitInterceptor(
          gate: auth.gate, perClient: configuration.clientRateLimit,
          issueTokenPerPeer: configuration.issueTokenRateLimit), to: .all),
      .apply(RefusalMappingInterceptor(isUnavailable: PostgresFailures.isUnavailable), to: .all),
    ]
  }

  /// The tracer to use: the caller's, else OTLP/gRPC export when an endpoint is configured, else
  /// a no-op. Also how to read a span's trace id for log lines, and the exporter's service.
  static func tracing(
    _ configuration: ServerConfiguration,
    given: (any Tracer)?,
    logger: Logger
  ) throws -> (tracer: any Tracer, traceID: @Sendable (ServiceContext) -> String?, exporter: (any Service)?) {
    if let given {
      return (given, { _ in nil }, nil)
    }
    guard let endpoint = configuration.otlpEndpoint else {
      return (NoOpTracer(), { _ in nil }, nil)
    }
    var otel = OTel.Configuration.default
    otel.serviceName = "tender"
    otel.diagnosticLogger = .custom(logger)
    otel.diagnosticLogLevel = .warning
    otel.propagators = [.traceContext]
    otel.logs.enabled = false
    otel.metrics.enabled = false
    otel.traces.enabled = true
    otel.traces.exporter = .otlp
    otel.traces.otlpExporter.endpoint = endpoint
    otel.traces.otlpExporter.protocol = .grpc
    otel.traces.otlpExporter.timeout = .seconds(5)
    let backend = try OTel.makeTracingBackend(configuration: otel)
    return (backend.factory, { $0.otelTraceID }, backend.service)
  }

  private static func makeTracingInterceptor<T: Tracer>(
    _ tracer: T, traceID: @escaping @Sendable (ServiceContext) -> String?
  ) -> any ServerInterceptor {
    TracingInterceptor(tracer: tracer, traceID: traceID)
  }

  /// The webhook endpoint of the configured providers; nil when none is configured.
  static func webhookEndpoint(
    _ configuration: ServerConfiguration,
    metricsFactory: any MetricsFactory,
    receive: @escaping @Sendable (WebhookEvent) async throws -> Bool
  ) throws -> WebhookEndpoint? {
    guard !configuration.webhookSecrets.isEmpty else { return nil }
    var providers: [String: WebhookEndpoint.Provider] = [:]
    for (name, secrets) in configuration.webhookSecrets {
      if name == "stripe" {
        providers[name] = .init(scheme: .stripe, secrets: secrets.map { WebhookSecret.stripe($0.value) })
      } else {
        providers[name] = .init(scheme: .standard, secrets: secrets.compactMap { WebhookSecret.standard($0.value) })
      }
    }
    return WebhookEndpoint(
      providers: providers,
      tolerance: configuration.webhookTolerance,
      maxBodyBytes: configuration.webhookMaxBodyBytes,
      receive: receive,
      count: { provider, what, reason in
        var dimensions = [("provider", provider)]
        if let reason { dimensions.append(("reason", reason)) }
        CoreMetrics.Counter(label: "tender_webhooks_\(what)_total", dimensions: dimensions, factory: metricsFactory)
          .increment()
      }
    )
  }

  /// The bridge serves the gRPC listener's certificate; client certificates are not required there
  /// (providers and scrapers call it).
  static func bridgeTLS(
    _ configuration: ServerConfiguration, certificates: TimedCertificateReloader?
  ) throws -> TLSConfiguration? {
    guard case .tls(let chain, let key, _) = configuration.transport else { return nil }
    var tls = TLSConfiguration.makeServerConfiguration(
      certificateChain: try NIOSSLCertificate.fromPEMBytes(chain).map { .certificate($0) },
      privateKey: .privateKey(try NIOSSLPrivateKey(bytes: key.value, format: .pem))
    )
    if let certificates { tls.setCertificateReloader(certificates) }
    // On shutdown an idle keep-alive connection (a provider's webhook client, a scraper) is
    // closed with a TLS close_notify; a peer that never answers it is dropped after 1 s rather
    // than NIOSSL's 5 s, which every drain would otherwise wait out.
    tls.shutdownTimeout = .seconds(1)
    return tls
  }

  static func makeTransport(
    _ configuration: ServerConfiguration, connections: ConnectionCounter, certificates: TimedCertificateReloader?
  ) throws -> TenderServerTransport {
    var tls: TLSConfiguration?
    if case .tls(let chain, let key, let clientCA) = configuration.transport {
      var server = TLSConfiguration.makeServerConfiguration(
        certificateChain: try NIOSSLCertificate.fromPEMBytes(chain).map { .certificate($0) },
        privateKey: .privateKey(try NIOSSLPrivateKey(bytes: key.value, format: .pem))
      )
      server.minimumTLSVersion = .tlsv12
      server.applicationProtocols = ["h2"]
      if let clientCA {
        server.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(clientCA))
        server.certificateVerification = .noHostnameVerification
      }
      if let certificates { server.setCertificateReloader(certificates) }
      tls = server
    }
    var config = TenderServerTransport.Config(
      host: configuration.host == "localhost" ? "127.0.0.1" : configuration.host, port: configuration.port, tls: tls)
    config.maxConcurrentStreams = configuration.maxConcurrentStreams
    // A larger request message is refused from its length prefix with RESOURCE_EXHAUSTED.
    config.maxRequestMessageBytes = configuration.maxRequestMessageBytes
    config.keepaliveTime = TimeAmount(configuration.keepaliveTime)
    config.keepaliveTimeout = TimeAmount(configuration.keepaliveTimeout)
    config.minClientPingInterval = TimeAmount(configuration.minClientPingInterval)
    config.allowPingsWithoutCalls = true
    config.maxConnectionIdle = TimeAmount(configuration.maxConnectionIdle)
    config.maxConnectionAge = TimeAmount(configuration.maxConnectionAge)
    config.maxConnectionAgeGrace = TimeAmount(configuration.maxConnectionAgeGrace)
    config.onAcceptConnection = { connections.record() }
    return try TenderServerTransport(config: config)
  }
}

/// Counts the TCP connections the gRPC listener has accepted.
public final class ConnectionCounter: Sendable {
  private let count = Atomic<Int>(0)

  public init() {}

  /// Connections accepted since start.
  public var accepted: Int { self.count.load(ordering: .relaxed) }

  fileprivate func record() {
    self.count.add(1, ordering: .relaxed)
  }
}
