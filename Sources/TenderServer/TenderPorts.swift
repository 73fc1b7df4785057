public import Foundation
public import Logging
public import PostgresNIO
public import ServiceLifecycle
public import TenderAuth
public import TenderCore
import TenderPostgres
import TenderProviders
import TenderRedis
public import Tracing

/// What a server stores in and talks to. `tender serve` runs on PostgreSQL, Redis and the
/// provider's HTTP API (`production`); tests of RPC behaviour run the same server on in-memory
/// ports.
public struct TenderPorts: Sendable {
  public var payments: any PaymentStore
  /// The record of provider calls, written before each is made.
  public var calls: any ProviderCallLog
  public var refunds: any RefundStore
  public var idempotency: any IdempotencyStore
  public var settlement: any SettlementStore
  /// Where verified webhooks are kept until applied; nil: no webhook endpoint, no applier.
  public var webhooks: (any WebhookInbox)?
  public var auth: any AuthStore
  public var standingCache: (any TokenStandingCache)?
  public var limiter: any RateLimiter
  /// The standing cache and the limiter in one round trip; nil: the two asked one after the other.
  public var admission: (any CallAdmissionStore)?
  public var provider: any PaymentProvider
  /// The time records are stamped with, at the precision the stores keep.
  public var now: @Sendable () -> Date
  /// Wake-ups for the payment event feed and open streams; nil: the feed polls.
  public var signals: (any FeedSignals)?
  /// What readiness depends on.
  public var probes: [any ReadinessProbe]
  /// Clients that run with the server (the database pool, Redis, the provider's HTTP client):
  /// started first, stopped last.
  public var services: [any Service]
  /// Applies pending migrations (with `--migrate`).
  public var migrate: (@Sendable () async throws -> Void)?
  /// The database pool, when the ports are PostgreSQL's.
  public var postgres: PostgresClient?
  /// Where the stores report the statuses payments and refunds entered, once committed (the
  /// payment metrics); nil: not reported.
  public var movements: MoneyMovements?
  /// Where the payment store reports each group-committed statement's size; nil: not reported.
  public var writeBatches: WriteBatchReports?

  public init(
    payments: any PaymentStore,
    calls: any ProviderCallLog,
    refunds: any RefundStore,
    idempotency: any IdempotencyStore,
    settlement: any SettlementStore,
    webhooks: (any WebhookInbox)?,
    auth: any AuthStore,
    standingCache: (any TokenStandingCache)?,
    limiter: any RateLimiter,
    admission: (any CallAdmissionStore)? = nil,
    provider: any PaymentProvider,
    now: @escaping @Sendable () -> Date,
    signals: (any FeedSignals)? = nil,
    probes: [any ReadinessProbe] = [],
    services: [any Service] = [],
    migrate: (@Sendable () async throws -> Void)? = nil,
    postgres: PostgresClient? = nil,
    movements: MoneyMovements? = nil,
    writeBatches: WriteBatchReports? = nil
  ) {
    self.payments = payments
    self.calls = calls
    self.refunds = refunds
    self.idempotency = idempotency
    self.settlement = settlement
    self.webhooks = webhooks
    self.auth = auth
    self.standingCache = standingCache
    self.limiter = limiter
    self.admission = admission
    self.provider = provider
    self.now = now
    self.signals = signals
    self.probes = probes
    self.services = services
    self.migrate = migrate
    self.postgres = postgres
    self.movements = movements
    self.writeBatches = writeBatches
  }

  /// PostgreSQL, Redis and the provider's HTTP API, as configured.
  public static func production(_ configuration: ServerConfiguration, tracer: any Tracer, logger: Logger) -> TenderPorts
  {
    let postgres = PostgresClient(configuration: configuration.database, backgroundLogger: logger)
    let redis = RedisClient(configuration: configuration.redis, logger: logger)
    let provider = StripeConnector(
      configuration: StripeConfiguration(
        baseURL: configuration.providerURL, apiKey: configuration.providerAPIKey,
        requestTimeout: configuration.providerTimeout,
        maximumAttempts: configuration.providerAttempts, maximumBackoff: configuration.providerMaxBackoff,
        maximumConnections: configuration.providerConnections
      ),
      logger: logger
    )
    let migrator = Migrator(client: postgres, logger: logger)
    let movements = MoneyMovements()
    let writeBatches = WriteBatchReports()
    let announcer = PostgresEventAnnouncer(client: postgres, logger: logger)
    let timeout = configuration.databaseCallTimeout
    let standings = RedisTokenStandingCache(client: redis, prefix: configuration.redisKeyPrefix + "auth:")
    let limiter = TokenBucketLimiter(client: redis, prefix: configuration.redisKeyPrefix + "rl:")
    return TenderPorts(
      payments: PostgresPaymentStore(
        client: postgres, logger: logger, tracer: tracer, callTimeout: timeout, movements: movements,
        announcer: announcer, writeLanes: configuration.databaseWriteLanes,
        writeStall: configuration.databaseWriteStall, writeBatches: writeBatches),
      calls: PostgresProviderCallLog(
        client: postgres, logger: logger, tracer: tracer, callTimeout: timeout),
      refunds: PostgresRefundStore(
        client: postgres, logger: logger, tracer: tracer, callTimeout: timeout, movements: movements,
        announcer: announcer, writeLanes: configuration.databaseWriteLanes,
        writeStall: configuration.databaseWriteStall, writeBatches: writeBatches),
      idempotency: PostgresIdempotencyStore(
        client: postgres, logger: logger, tracer: tracer, callTimeout: timeout),
      settlement: PostgresSettlementStore(
        client: postgres, logger: logger, tracer: tracer, callTimeout: timeout),
      webhooks: PostgresWebhookInbox(
        client: postgres, logger: logger, tracer: tracer, callTimeout: timeout, movements: movements,
        announcer: announcer),
      auth: PostgresAuthStore(
        client: postgres, logger: logger, tracer: tracer, callTimeout: timeout),
      standingCache: standings,
      limiter: limiter,
      admission: RedisCallAdmission(standings: standings, limiter: limiter),
      provider: provider,
      now: PostgresTime.now,
      signals: PostgresFeedSignals(client: postgres, logger: logger),
      // Redis is a dependency of readiness only when calls fail without it (the closed policy).
      probes: [PostgresReadinessProbe(client: postgres)]
        + (configuration.rateLimitFailureMode == .closed ? [RedisReadinessProbe(client: redis)] : []),
      // Stopped in reverse: the announcer announces what the last calls committed before the
      // pool closes.
      services: [postgres, redis, ConnectorLifecycle(connector: provider), announcer],
      migrate: { _ = try await migrator.migrate() },
      postgres: postgres,
      movements: movements,
      writeBatches: writeBatches
    )
  }
}
