public import Foundation
public import Logging
import NIOSSL
public import PostgresNIO
public import TenderCore
import TenderAuth
import TenderPostgres
import TenderRedis
public import TenderOperations

/// Everything `tender serve` needs, validated: a value of this type is always usable.
public struct ServerConfiguration: Sendable {
  /// How the gRPC listener is secured.
  public enum Transport: Sendable {
    /// TLS with the server's chain and key (PEM), and client certificates required when a CA is set.
    case tls(certificateChain: [UInt8], privateKey: Secret<[UInt8]>, clientCA: [UInt8]?)
    /// Plaintext HTTP/2; only ever on a loopback address.
    case insecure
  }

  public var host: String
  public var port: Int
  /// Address of the HTTP bridge (health, metrics), served with the same TLS settings.
  public var httpHost: String
  public var httpPort: Int
  public var transport: Transport
  public var database: PostgresClient.Configuration
  /// Maximum concurrent streams (RPCs) per HTTP/2 connection.
  public var maxConcurrentStreams: Int
  /// Largest request message accepted, in bytes.
  public var maxRequestMessageBytes: Int
  /// Deadline for unary RPCs that arrive without one.
  public var defaultDeadline: Duration
  /// Interval of server keepalive pings on idle connections.
  public var keepaliveTime: Duration
  /// How long to wait for a keepalive ping's answer before closing the connection.
  public var keepaliveTimeout: Duration
  /// Clients pinging more often than this are told to go away.
  public var minClientPingInterval: Duration
  /// Connections idle this long are closed.
  public var maxConnectionIdle: Duration
  /// Connections older than this are asked to reconnect (spreads load across replicas).
  public var maxConnectionAge: Duration
  /// Grace given to RPCs on an aged connection before it is closed.
  public var maxConnectionAgeGrace: Duration
  /// How often the database is probed for the health status.
  public var healthProbeInterval: Duration
  /// Time between reporting NOT_SERVING on shutdown and refusing new RPCs, for balancers to notice.
  public var drainDelay: Duration
  /// Apply pending migrations at start (dev mode).
  public var migrateOnStart: Bool
  public var logLevel: Logger.Level
  /// Redis (rate limits, token standing cache); nil only in embedded uses without limits.
  public var redisURL: String?
  /// Namespace of every Redis key Tender writes, so environments can share a Redis.
  public var redisKeyPrefix: String = "tender:"
  /// Seals the signing keys' private halves in the database.
  public var keyEncryptionKey: Secret<String>?
  /// `iss` and `aud` of access tokens, their lifetime and the clock skew tolerated.
  public var tokenIssuer: String = "tender"
  public var tokenAudience: String = "tender-api"
  public var tokenLifetime: Duration = .seconds(900)
  /// How often signing keys are reloaded (rotations and removals by other processes).
  public var keyRefreshInterval: Duration = .seconds(10)
  /// Token bucket per API client over all authenticated RPCs.
  public var clientRateLimit = RateLimitPolicy(capacity: 100, refillPerSecond: 50)
  /// Token buckets for IssueToken, per client id and per peer address.
  public var issueTokenRateLimit = RateLimitPolicy(capacity: 10, refillPerSecond: 0.5)
  /// What to do when Redis cannot answer a rate-limit check.
  public var rateLimitFailureMode: RateLimitFailureMode = .open
  /// The payment provider (Stripe's API or the simulator) and its secret key.
  public var providerURL: String = "https://api.stripe.com"
  public var providerAPIKey: Secret<String>?
  /// Deadline of one provider request (retries come on top).
  public var providerTimeout: Duration = .seconds(10)
  /// Attempts per provider call (same idempotency key each time).
  public var providerAttempts: Int = 3
  /// The longest wait between two attempts (full-jitter backoff; a 429's Retry-After up to this).
  public var providerMaxBackoff: Duration = .seconds(2)
  /// How long a keyed request owns its idempotency key; after that the completer may take over.
  public var idempotencyLock: Duration = .seconds(60)
  /// How often the completer looks for interrupted operations.
  public var completerInterval: Duration = .seconds(5)
  /// How long a payment PROCESSING or refund PENDING at the provider waits before the
  /// reconciler first asks the provider about it (then with backoff, up to an hour apart).
  public var settlementCheckAfter: Duration = .seconds(60)
  /// When the reconciler gives up on an object the provider has not finished (metric, log line).
  public var settlementGiveUpAfter: Duration = .seconds(72 * 3600)
  /// Webhook signing secrets by provider (`stripe` uses Stripe's scheme, others Standard Webhooks);
  /// empty: the webhook endpoints answer 404.
  public var webhookSecrets: [String: [Secret<String>]] = [:]
  /// How far a webhook's signed timestamp may be from now, either way.
  public var webhookTolerance: Duration = .seconds(300)
  /// The largest webhook body; larger ones are refused before any hashing.
  public var webhookMaxBodyBytes: Int = 1 << 20
  /// How an event for an object Tender does not know yet is tried again, then parked.
  public var webhookRetry = WebhookApplier.Policy()
  /// How often finished idempotency records older than a day are deleted.
  public var reaperInterval: Duration = .seconds(3600)
  /// OTLP/gRPC collector for traces (e.g. http://otel-collector:4317); nil: tracing is a no-op.
  public var otlpEndpoint: String?

  public init(
    host: String,
    port: Int,
    httpHost: String = "127.0.0.1",
    httpPort: Int = 8080,
    transport: Transport,
    database: PostgresClient.Configuration,
    maxConcurrentStreams: Int = 100,
    maxRequestMessageBytes: Int = 4 * 1024 * 1024,
    defaultDeadline: Duration = .seconds(30),
    keepaliveTime: Duration = .seconds(60),
    keepaliveTimeout: Duration = .seconds(20),
    minClientPingInterval: Duration = .seconds(30),
    maxConnectionIdle: Duration = .seconds(300),
    maxConnectionAge: Duration = .seconds(1800),
    maxConnectionAgeGrace: Duration = .seconds(30),
    healthProbeInterval: Duration = .seconds(2),
    drainDelay: Duration = .zero,
    migrateOnStart: Bool = false,
    logLevel: Logger.Level = .info
  ) {
    self.host = host
    self.port = port
    self.httpHost = httpHost
    self.httpPort = httpPort
    self.transport = transport
    self.database = database
    self.maxConcurrentStreams = maxConcurrentStreams
    self.maxRequestMessageBytes = maxRequestMessageBytes
    self.defaultDeadline = defaultDeadline
    self.keepaliveTime = keepaliveTime
    self.keepaliveTimeout = keepaliveTimeout
    self.minClientPingInterval = minClientPingInterval
    self.maxConnectionIdle = maxConnectionIdle
    self.maxConnectionAge = maxConnectionAge
    self.maxConnectionAgeGrace = maxConnectionAgeGrace
    self.healthProbeInterval = healthProbeInterval
    self.drainDelay = drainDelay
    self.migrateOnStart = migrateOnStart
    self.logLevel = logLevel
  }
}

/// Whether RPCs proceed when the rate limiter's store is unreachable.
public enum RateLimitFailureMode: String, Sendable {
  /// Proceed without a limit (counted in `tender_rate_limiter_errors_total` and logged).
  case open
  /// Refuse with UNAVAILABLE.
  case closed
}

/// A setting that cannot be used; its description is the one line `tender` prints before exiting.
public struct ConfigurationError: Error, CustomStringConvertible {
  /// The environment variable and flag, e.g. `TENDER_TLS_CERT (--tls-cert)`.
  public let setting: String
  public let problem: String

  public init(setting: String, problem: String) {
    self.setting = setting
    self.problem = problem
  }

  public var description: String { "invalid configuration: \(self.setting): \(self.problem)" }
}

/// One configurable value: its flag, its environment variable, its default and what it does.
/// The README's configuration table lists exactly these.
public struct Setting: Sendable, Hashable {
  public let flag: String
  public let environment: String
  public let defaultValue: String?
  public let help: String

  public var label: String { "\(self.environment) (--\(self.flag))" }

  public static let grpcAddress = Setting(flag: "grpc-address", environment: "TENDER_GRPC_ADDRESS", defaultValue: "0.0.0.0:8443", help: "host:port of the gRPC listener")
  public static let httpAddress = Setting(flag: "http-address", environment: "TENDER_HTTP_ADDRESS", defaultValue: "0.0.0.0:8080", help: "host:port of the HTTP bridge (/healthz, /readyz, /metrics)")
  public static let tlsCert = Setting(flag: "tls-cert", environment: "TENDER_TLS_CERT", defaultValue: nil, help: "PEM certificate chain of the server, leaf first")
  public static let tlsKey = Setting(flag: "tls-key", environment: "TENDER_TLS_KEY", defaultValue: nil, help: "PEM private key of the server certificate")
  public static let tlsClientCA = Setting(flag: "tls-client-ca", environment: "TENDER_TLS_CLIENT_CA", defaultValue: nil, help: "PEM CA bundle; when set, clients must present a certificate it signed (mTLS)")
  public static let insecure = Setting(flag: "insecure", environment: "TENDER_INSECURE", defaultValue: "false", help: "serve plaintext HTTP/2; refused unless the address is loopback")
  public static let databaseURL = Setting(flag: "database-url", environment: "TENDER_DATABASE_URL", defaultValue: nil, help: "postgres://user:password@host:port/database?sslmode=…")
  public static let maxConcurrentStreams = Setting(flag: "max-concurrent-streams", environment: "TENDER_MAX_CONCURRENT_STREAMS", defaultValue: "100", help: "concurrent RPCs per HTTP/2 connection")
  public static let maxRequestBytes = Setting(flag: "max-request-bytes", environment: "TENDER_MAX_REQUEST_BYTES", defaultValue: "4194304", help: "largest request message, bytes (larger: RESOURCE_EXHAUSTED)")
  public static let defaultDeadline = Setting(flag: "default-deadline", environment: "TENDER_DEFAULT_DEADLINE", defaultValue: "30s", help: "deadline of unary RPCs sent without one")
  public static let keepaliveTime = Setting(flag: "keepalive-time", environment: "TENDER_KEEPALIVE_TIME", defaultValue: "60s", help: "server ping interval on quiet connections")
  public static let keepaliveTimeout = Setting(flag: "keepalive-timeout", environment: "TENDER_KEEPALIVE_TIMEOUT", defaultValue: "20s", help: "time to wait for a ping answer before closing")
  public static let minClientPingInterval = Setting(flag: "min-client-ping-interval", environment: "TENDER_MIN_CLIENT_PING_INTERVAL", defaultValue: "30s", help: "clients pinging faster are sent GOAWAY")
  public static let maxConnectionIdle = Setting(flag: "max-connection-idle", environment: "TENDER_MAX_CONNECTION_IDLE", defaultValue: "300s", help: "idle connections are closed after this")
  public static let maxConnectionAge = Setting(flag: "max-connection-age", environment: "TENDER_MAX_CONNECTION_AGE", defaultValue: "1800s", help: "connections are recycled after this, to rebalance replicas")
  public static let maxConnectionAgeGrace = Setting(flag: "max-connection-age-grace", environment: "TENDER_MAX_CONNECTION_AGE_GRACE", defaultValue: "30s", help: "time given to RPCs on a recycled connection")
  public static let healthProbeInterval = Setting(flag: "health-probe-interval", environment: "TENDER_HEALTH_PROBE_INTERVAL", defaultValue: "2s", help: "how often the database is probed for health")
  public static let drainDelay = Setting(flag: "drain-delay", environment: "TENDER_DRAIN_DELAY", defaultValue: "0s", help: "on SIGTERM, time between reporting NOT_SERVING and refusing new RPCs")
  public static let migrate = Setting(flag: "migrate", environment: "TENDER_MIGRATE", defaultValue: "false", help: "apply pending migrations before serving")
  public static let redisURL = Setting(flag: "redis-url", environment: "TENDER_REDIS_URL", defaultValue: nil, help: "redis://[:password@]host:port[/db] for rate limits and the token standing cache")
  public static let redisKeyPrefix = Setting(flag: "redis-key-prefix", environment: "TENDER_REDIS_KEY_PREFIX", defaultValue: "tender:", help: "namespace of Tender's Redis keys, for sharing a Redis between environments")
  public static let keyEncryptionKey = Setting(flag: "key-encryption-key", environment: "TENDER_KEY_ENCRYPTION_KEY", defaultValue: nil, help: "base64 of 32 random bytes sealing the token-signing keys at rest (openssl rand -base64 32); prefer the variable")
  public static let tokenIssuer = Setting(flag: "token-issuer", environment: "TENDER_TOKEN_ISSUER", defaultValue: "tender", help: "`iss` of issued access tokens, required on presented ones")
  public static let tokenAudience = Setting(flag: "token-audience", environment: "TENDER_TOKEN_AUDIENCE", defaultValue: "tender-api", help: "`aud` of issued access tokens, required on presented ones")
  public static let tokenLifetime = Setting(flag: "token-lifetime", environment: "TENDER_TOKEN_LIFETIME", defaultValue: "15m", help: "lifetime of issued access tokens (1m to 24h)")
  public static let keyRefreshInterval = Setting(flag: "key-refresh-interval", environment: "TENDER_KEY_REFRESH_INTERVAL", defaultValue: "10s", help: "how often signing keys are reloaded, so rotations and removals reach every replica")
  public static let rateLimit = Setting(flag: "rate-limit", environment: "TENDER_RATE_LIMIT", defaultValue: "50/s,burst=100", help: "token bucket per API client over authenticated RPCs: RATE/s or RATE/m, burst=N")
  public static let issueTokenRateLimit = Setting(flag: "issue-token-rate-limit", environment: "TENDER_ISSUE_TOKEN_RATE_LIMIT", defaultValue: "30/m,burst=10", help: "IssueToken bucket, per client id and per peer address")
  public static let rateLimitOnRedisFailure = Setting(flag: "rate-limit-on-redis-failure", environment: "TENDER_RATE_LIMIT_ON_REDIS_FAILURE", defaultValue: "open", help: "open: allow calls when Redis is unreachable (metric + log); closed: refuse with UNAVAILABLE")
  public static let providerURL = Setting(flag: "provider-url", environment: "TENDER_PROVIDER_URL", defaultValue: "https://api.stripe.com", help: "base URL of the payment provider's API (Stripe, or tender-provider-sim)")
  public static let providerAPIKey = Setting(flag: "provider-api-key", environment: "TENDER_PROVIDER_API_KEY", defaultValue: nil, help: "the provider's secret API key; prefer the variable")
  public static let idempotencyLock = Setting(flag: "idempotency-lock", environment: "TENDER_IDEMPOTENCY_LOCK", defaultValue: "60s", help: "how long a keyed request owns its idempotency key; after that a retry or the completer takes over")
  public static let completerInterval = Setting(flag: "completer-interval", environment: "TENDER_COMPLETER_INTERVAL", defaultValue: "5s", help: "how often the completer looks for interrupted payments and refunds")
  public static let providerTimeout = Setting(flag: "provider-timeout", environment: "TENDER_PROVIDER_TIMEOUT", defaultValue: "10s", help: "deadline of one provider request; an unanswered one leaves the payment PROCESSING for the completer")
  public static let providerAttempts = Setting(flag: "provider-attempts", environment: "TENDER_PROVIDER_ATTEMPTS", defaultValue: "3", help: "attempts per provider call, under the same idempotency key (connection failures, 409, 429 and 5xx are retried)")
  public static let providerMaxBackoff = Setting(flag: "provider-max-backoff", environment: "TENDER_PROVIDER_MAX_BACKOFF", defaultValue: "2s", help: "longest wait between provider attempts (full-jitter exponential backoff; Retry-After honoured up to this)")
  public static let settlementCheckAfter = Setting(flag: "settlement-check-after", environment: "TENDER_SETTLEMENT_CHECK_AFTER", defaultValue: "60s", help: "how long a payment PROCESSING or refund PENDING at the provider waits before the reconciler asks the provider (then with backoff up to 1h)")
  public static let settlementGiveUpAfter = Setting(flag: "settlement-give-up-after", environment: "TENDER_SETTLEMENT_GIVE_UP_AFTER", defaultValue: "72h", help: "age at which the reconciler gives up on an object the provider has not finished: counted in tender_settlement_abandoned_total and logged")
  public static let webhookSecrets = Setting(flag: "webhook-secrets", environment: "TENDER_WEBHOOK_SECRETS", defaultValue: nil, help: "webhook signing secrets: PROVIDER=SECRET[,SECRET…][;PROVIDER=…] (stripe: Stripe's endpoint secret; others: Standard Webhooks whsec_…); several per provider during a rotation")
  public static let webhookTolerance = Setting(flag: "webhook-tolerance", environment: "TENDER_WEBHOOK_TOLERANCE", defaultValue: "300s", help: "how far a webhook's signed timestamp may be from now, either way")
  public static let webhookMaxBodyBytes = Setting(flag: "webhook-max-body-bytes", environment: "TENDER_WEBHOOK_MAX_BODY_BYTES", defaultValue: "1048576", help: "largest webhook body; larger ones get 413 before any hashing")
  public static let otlpEndpoint = Setting(flag: "otlp-endpoint", environment: "TENDER_OTLP_ENDPOINT", defaultValue: nil, help: "OTLP/gRPC collector for traces, e.g. http://localhost:4317; unset: no tracing export")
  public static let logLevel = Setting(flag: "log-level", environment: "TENDER_LOG_LEVEL", defaultValue: "info", help: "trace, debug, info, notice, warning, error or critical")

  /// Every setting of `tender serve`, in the order the README lists them.
  public static let all: [Setting] = [
    .grpcAddress, .httpAddress, .tlsCert, .tlsKey, .tlsClientCA, .insecure, .databaseURL, .maxConcurrentStreams,
    .maxRequestBytes, .defaultDeadline, .keepaliveTime, .keepaliveTimeout, .minClientPingInterval,
    .maxConnectionIdle, .maxConnectionAge, .maxConnectionAgeGrace, .healthProbeInterval, .drainDelay,
    .migrate, .redisURL, .redisKeyPrefix, .keyEncryptionKey, .tokenIssuer, .tokenAudience, .tokenLifetime, .keyRefreshInterval,
    .rateLimit, .issueTokenRateLimit, .rateLimitOnRedisFailure, .providerURL, .providerAPIKey, .providerTimeout, .providerAttempts, .providerMaxBackoff, .idempotencyLock, .completerInterval, .settlementCheckAfter, .settlementGiveUpAfter, .webhookSecrets, .webhookTolerance, .webhookMaxBodyBytes, .otlpEndpoint, .logLevel,
  ]
}

extension ServerConfiguration {
  /// Resolves each setting from its flag, else its environment variable, else its default, and
  /// validates the whole: files readable and parseable, addresses and numbers in range.
  public static func resolve(
    flags: [Setting: String],
    environment: [String: String] = ProcessInfo.processInfo.environment
  ) throws -> ServerConfiguration {
    func value(_ setting: Setting) -> String? {
      if let flag = flags[setting] { return flag }
      if let env = environment[setting.environment], !env.isEmpty { return env }
      return setting.defaultValue
    }
    func required(_ setting: Setting) throws -> String {
      guard let value = value(setting) else {
        throw ConfigurationError(setting: setting.label, problem: "is required")
      }
      return value
    }

    let (host, port) = try parseAddress(try required(.grpcAddress), setting: .grpcAddress)
    let (httpHost, httpPort) = try parseAddress(try required(.httpAddress), setting: .httpAddress)
    let insecure = try parseBool(value(.insecure) ?? "false", setting: .insecure)

    let transport: Transport
    if insecure {
      for listener in [host, httpHost] where !isLoopback(listener) {
        throw ConfigurationError(setting: Setting.insecure.label, problem: "plaintext is only allowed on a loopback address, not '\(listener)'")
      }
      transport = .insecure
    } else {
      guard let certPath = value(.tlsCert) else {
        throw ConfigurationError(setting: Setting.tlsCert.label, problem: "is required (or --insecure on a loopback address)")
      }
      guard let keyPath = value(.tlsKey) else {
        throw ConfigurationError(setting: Setting.tlsKey.label, problem: "is required (or --insecure on a loopback address)")
      }
      let chain = try readFile(certPath, setting: .tlsCert)
      let certificates: [NIOSSLCertificate]
      do {
        certificates = try NIOSSLCertificate.fromPEMBytes(chain)
      } catch {
        throw ConfigurationError(setting: Setting.tlsCert.label, problem: "'\(certPath)' is not a PEM certificate chain")
      }
      guard !certificates.isEmpty else {
        throw ConfigurationError(setting: Setting.tlsCert.label, problem: "'\(certPath)' holds no certificate")
      }
      let key = try readFile(keyPath, setting: .tlsKey)
      let privateKey: NIOSSLPrivateKey
      do {
        privateKey = try NIOSSLPrivateKey(bytes: key, format: .pem)
      } catch {
        throw ConfigurationError(setting: Setting.tlsKey.label, problem: "'\(keyPath)' is not a PEM private key")
      }
      do {
        _ = try NIOSSLContext(
          configuration: .makeServerConfiguration(
            certificateChain: certificates.map { .certificate($0) },
            privateKey: .privateKey(privateKey)
          )
        )
      } catch {
        throw ConfigurationError(setting: Setting.tlsKey.label, problem: "'\(keyPath)' does not match the certificate in TENDER_TLS_CERT")
      }
      var clientCA: [UInt8]? = nil
      if let caPath = value(.tlsClientCA) {
        let bytes = try readFile(caPath, setting: .tlsClientCA)
        guard let roots = try? NIOSSLCertificate.fromPEMBytes(bytes), !roots.isEmpty else {
          throw ConfigurationError(setting: Setting.tlsClientCA.label, problem: "'\(caPath)' is not a PEM certificate bundle")
        }
        clientCA = bytes
      }
      transport = .tls(certificateChain: chain, privateKey: Secret(key), clientCA: clientCA)
    }

    let databaseURL = try required(.databaseURL)
    let database: PostgresClient.Configuration
    do {
      database = try DatabaseURL.configuration(from: databaseURL)
    } catch let error as DatabaseURL.Invalid {
      throw ConfigurationError(setting: Setting.databaseURL.label, problem: error.description)
    }

    guard let level = Logger.Level(rawValue: try required(.logLevel)) else {
      throw ConfigurationError(setting: Setting.logLevel.label, problem: "must be one of trace, debug, info, notice, warning, error, critical")
    }

    var configuration = ServerConfiguration(
      host: host,
      port: port,
      httpHost: httpHost,
      httpPort: httpPort,
      transport: transport,
      database: database,
      maxConcurrentStreams: try parseInt(try required(.maxConcurrentStreams), setting: .maxConcurrentStreams, range: 1...10_000),
      maxRequestMessageBytes: try parseInt(try required(.maxRequestBytes), setting: .maxRequestBytes, range: 1024...(64 * 1024 * 1024)),
      defaultDeadline: try parseDuration(try required(.defaultDeadline), setting: .defaultDeadline, allowZero: false),
      keepaliveTime: try parseDuration(try required(.keepaliveTime), setting: .keepaliveTime, allowZero: false),
      keepaliveTimeout: try parseDuration(try required(.keepaliveTimeout), setting: .keepaliveTimeout, allowZero: false),
      minClientPingInterval: try parseDuration(try required(.minClientPingInterval), setting: .minClientPingInterval, allowZero: true),
      maxConnectionIdle: try parseDuration(try required(.maxConnectionIdle), setting: .maxConnectionIdle, allowZero: false),
      maxConnectionAge: try parseDuration(try required(.maxConnectionAge), setting: .maxConnectionAge, allowZero: false),
      maxConnectionAgeGrace: try parseDuration(try required(.maxConnectionAgeGrace), setting: .maxConnectionAgeGrace, allowZero: true),
      healthProbeInterval: try parseDuration(try required(.healthProbeInterval), setting: .healthProbeInterval, allowZero: false),
      drainDelay: try parseDuration(try required(.drainDelay), setting: .drainDelay, allowZero: true),
      migrateOnStart: try parseBool(try required(.migrate), setting: .migrate),
      logLevel: level
    )

    configuration.tokenIssuer = try parseName(try required(.tokenIssuer), setting: .tokenIssuer)
    configuration.tokenAudience = try parseName(try required(.tokenAudience), setting: .tokenAudience)
    configuration.tokenLifetime = try parseDuration(try required(.tokenLifetime), setting: .tokenLifetime, allowZero: false)
    guard configuration.tokenLifetime >= .seconds(60), configuration.tokenLifetime <= .seconds(86400) else {
      throw ConfigurationError(setting: Setting.tokenLifetime.label, problem: "must be from 1m to 24h")
    }
    configuration.keyRefreshInterval = try parseDuration(try required(.keyRefreshInterval), setting: .keyRefreshInterval, allowZero: false)
    configuration.clientRateLimit = try parseRateLimit(try required(.rateLimit), setting: .rateLimit)
    configuration.issueTokenRateLimit = try parseRateLimit(try required(.issueTokenRateLimit), setting: .issueTokenRateLimit)
    guard let mode = RateLimitFailureMode(rawValue: try required(.rateLimitOnRedisFailure)) else {
      throw ConfigurationError(setting: Setting.rateLimitOnRedisFailure.label, problem: "must be open or closed")
    }
    configuration.rateLimitFailureMode = mode
    if let endpoint = value(.otlpEndpoint) {
      guard let url = URL(string: endpoint), let scheme = url.scheme, ["http", "https"].contains(scheme), url.host != nil else {
        throw ConfigurationError(setting: Setting.otlpEndpoint.label, problem: "'\(endpoint)' must be an http:// or https:// URL with a host")
      }
      configuration.otlpEndpoint = endpoint
    }
    let redisURL = try required(.redisURL)
    do {
      _ = try RedisConfiguration(url: redisURL)
    } catch let error as RedisConfiguration.Invalid {
      throw ConfigurationError(setting: Setting.redisURL.label, problem: error.description)
    }
    configuration.redisURL = redisURL
    configuration.redisKeyPrefix = try parseName(try required(.redisKeyPrefix), setting: .redisKeyPrefix)
    let keyEncryptionKey = Secret(try required(.keyEncryptionKey))
    do {
      _ = try KeyEncryptionKey(base64: keyEncryptionKey)
    } catch {
      throw ConfigurationError(setting: Setting.keyEncryptionKey.label, problem: "\(error)")
    }
    configuration.keyEncryptionKey = keyEncryptionKey
    let providerURL = try required(.providerURL)
    guard let url = URL(string: providerURL), let scheme = url.scheme, ["http", "https"].contains(scheme), url.host != nil else {
      throw ConfigurationError(setting: Setting.providerURL.label, problem: "'\(providerURL)' must be an http:// or https:// URL with a host")
    }
    configuration.providerURL = providerURL
    configuration.providerTimeout = try parseDuration(try required(.providerTimeout), setting: .providerTimeout, allowZero: false)
    configuration.providerAttempts = try parseInt(try required(.providerAttempts), setting: .providerAttempts, range: 1...10)
    configuration.providerMaxBackoff = try parseDuration(try required(.providerMaxBackoff), setting: .providerMaxBackoff, allowZero: false)
    configuration.idempotencyLock = try parseDuration(try required(.idempotencyLock), setting: .idempotencyLock, allowZero: false)
    let budget = configuration.providerBudget
    guard configuration.idempotencyLock > budget else {
      // A lock that can run out while its owner still waits for the provider would let a retry
      // or the completer take over a call that is still on its way (the heartbeat renews the
      // lock, but must not be what correctness rests on).
      throw ConfigurationError(
        setting: Setting.idempotencyLock.label,
        problem: "must be longer than a whole provider call: \(Self.format(budget)) (provider attempts × provider timeout + (attempts − 1) × provider max backoff)"
      )
    }
    configuration.completerInterval = try parseDuration(try required(.completerInterval), setting: .completerInterval, allowZero: false)
    configuration.settlementCheckAfter = try parseDuration(try required(.settlementCheckAfter), setting: .settlementCheckAfter, allowZero: false)
    configuration.settlementGiveUpAfter = try parseDuration(try required(.settlementGiveUpAfter), setting: .settlementGiveUpAfter, allowZero: false)
    guard configuration.settlementGiveUpAfter > configuration.settlementCheckAfter else {
      throw ConfigurationError(setting: Setting.settlementGiveUpAfter.label, problem: "must be longer than the settlement check delay")
    }
    if let secrets = value(.webhookSecrets), !secrets.isEmpty {
      configuration.webhookSecrets = try parseWebhookSecrets(secrets, setting: .webhookSecrets)
    }
    configuration.webhookTolerance = try parseDuration(try required(.webhookTolerance), setting: .webhookTolerance, allowZero: false)
    configuration.webhookMaxBodyBytes = try parseInt(try required(.webhookMaxBodyBytes), setting: .webhookMaxBodyBytes, range: 1024...(64 << 20))
    guard let apiKey = value(.providerAPIKey), !apiKey.isEmpty else {
      throw ConfigurationError(setting: Setting.providerAPIKey.label, problem: "is required")
    }
    configuration.providerAPIKey = Secret(apiKey)
    return configuration
  }

  /// `stripe=whsec_a,whsec_b;acme=whsec_c`: provider names of lower-case letters, digits, `-` and
  /// `_`; Standard Webhooks secrets must be `whsec_` and base64. Secrets never appear in errors.
  static func parseWebhookSecrets(_ text: String, setting: Setting) throws -> [String: [Secret<String>]] {
    var providers: [String: [Secret<String>]] = [:]
    for entry in text.split(separator: ";") {
      let pair = entry.split(separator: "=", maxSplits: 1)
      let name = pair.first.map { String($0).trimmingCharacters(in: .whitespaces) } ?? ""
      guard pair.count == 2, (1...64).contains(name.count), name.allSatisfy({ $0.isLowercase || $0.isNumber || $0 == "-" || $0 == "_" }), name.allSatisfy(\.isASCII) else {
        throw ConfigurationError(setting: setting.label, problem: "must be PROVIDER=SECRET[,SECRET…] entries separated by ';' (provider names: a-z, 0-9, - and _)")
      }
      let secrets = pair[1].split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
      guard !secrets.isEmpty else { throw ConfigurationError(setting: setting.label, problem: "provider \(name) has no secret") }
      if name != "stripe" {
        for (index, secret) in secrets.enumerated() where !secret.hasPrefix("whsec_") || Data(base64Encoded: String(secret.dropFirst(6))) == nil {
          throw ConfigurationError(setting: setting.label, problem: "secret \(index + 1) of \(name) is not a Standard Webhooks secret (whsec_ and base64)")
        }
      }
      guard providers[name] == nil else { throw ConfigurationError(setting: setting.label, problem: "provider \(name) is named twice") }
      providers[name] = secrets.map { Secret($0) }
    }
    return providers
  }

  /// Every attempt of one provider call and every wait between them.
  public var providerBudget: Duration {
    self.providerTimeout * self.providerAttempts + self.providerMaxBackoff * (self.providerAttempts - 1)
  }

  /// A duration as the settings write it (`7.5s`).
  static func format(_ duration: Duration) -> String {
    let milliseconds = duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
    return milliseconds % 1000 == 0 ? "\(milliseconds / 1000)s" : "\(milliseconds)ms"
  }

  /// Issuer and audience: 1–200 printable characters.
  static func parseName(_ text: String, setting: Setting) throws -> String {
    guard (1...200).contains(text.count), text.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7F }) else {
      throw ConfigurationError(setting: setting.label, problem: "must be 1 to 200 printable characters without spaces")
    }
    return text
  }

  /// `RATE/s` or `RATE/m`, optionally `,burst=N` (default: one second's worth, at least 1).
  static func parseRateLimit(_ text: String, setting: Setting) throws -> RateLimitPolicy {
    let invalid = ConfigurationError(setting: setting.label, problem: "'\(text)' must look like 50/s,burst=100 or 30/m,burst=10")
    let parts = text.split(separator: ",")
    guard let first = parts.first, parts.count <= 2 else { throw invalid }
    let rate = first.split(separator: "/")
    guard rate.count == 2, let amount = Double(rate[0]), amount > 0, amount <= 1_000_000 else { throw invalid }
    let perSecond: Double
    switch rate[1] {
    case "s": perSecond = amount
    case "m": perSecond = amount / 60
    default: throw invalid
    }
    var burst = max(1, Int(perSecond.rounded(.up)))
    if parts.count == 2 {
      guard parts[1].hasPrefix("burst="), let value = Int(parts[1].dropFirst(6)), (1...1_000_000).contains(value) else { throw invalid }
      burst = value
    }
    return RateLimitPolicy(capacity: burst, refillPerSecond: perSecond)
  }

  static func parseAddress(_ text: String, setting: Setting) throws -> (String, Int) {
    var host: Substring
    let portText: Substring
    if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
      host = text[text.index(after: text.startIndex)..<close]
      let rest = text[text.index(after: close)...]
      guard rest.hasPrefix(":") else {
        throw ConfigurationError(setting: setting.label, problem: "'\(text)' must be host:port")
      }
      portText = rest.dropFirst()
    } else {
      guard let colon = text.lastIndex(of: ":") else {
        throw ConfigurationError(setting: setting.label, problem: "'\(text)' must be host:port")
      }
      host = text[..<colon]
      portText = text[text.index(after: colon)...]
    }
    if host.isEmpty { host = "0.0.0.0" }
    guard let port = Int(portText), (0...65535).contains(port) else {
      throw ConfigurationError(setting: setting.label, problem: "port '\(portText)' must be a number from 0 to 65535")
    }
    return (String(host), port)
  }

  static func isLoopback(_ host: String) -> Bool {
    host == "localhost" || host == "::1" || host.hasPrefix("127.")
  }

  static func parseBool(_ text: String, setting: Setting) throws -> Bool {
    switch text.lowercased() {
    case "1", "true", "yes", "on": return true
    case "0", "false", "no", "off": return false
    default: throw ConfigurationError(setting: setting.label, problem: "'\(text)' must be true or false")
    }
  }

  static func parseInt(_ text: String, setting: Setting, range: ClosedRange<Int>) throws -> Int {
    guard let value = Int(text), range.contains(value) else {
      throw ConfigurationError(setting: setting.label, problem: "'\(text)' must be a whole number from \(range.lowerBound) to \(range.upperBound)")
    }
    return value
  }

  /// Durations are a number with a unit: `250ms`, `30s`, `5m`, `1h`.
  public static func parseDuration(_ text: String, setting: Setting, allowZero: Bool) throws -> Duration {
    let units: [(String, Int64)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000)]
    for (suffix, milliseconds) in units where text.hasSuffix(suffix) {
      let number = text.dropLast(suffix.count)
      if let value = Int64(number), value >= 0, value <= 1_000_000_000, allowZero || value > 0 {
        return .milliseconds(value * milliseconds)
      }
      break
    }
    throw ConfigurationError(setting: setting.label, problem: "'\(text)' must be a \(allowZero ? "" : "positive ")duration such as 250ms, 30s, 5m or 1h")
  }

  static func readFile(_ path: String, setting: Setting) throws -> [UInt8] {
    guard FileManager.default.fileExists(atPath: path) else {
      throw ConfigurationError(setting: setting.label, problem: "file '\(path)' does not exist")
    }
    guard let data = FileManager.default.contents(atPath: path) else {
      throw ConfigurationError(setting: setting.label, problem: "file '\(path)' cannot be read")
    }
    return Array(data)
  }
}
