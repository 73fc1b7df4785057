import ArgumentParser
import TenderServer

/// The flags of `tender serve` (and `tender dev`); each also reads its `TENDER_*` variable.
struct ServeOptions: ParsableArguments {
  @Option(name: .customLong("grpc-address"), help: "\(Setting.grpcAddress.help) [$TENDER_GRPC_ADDRESS, default 0.0.0.0:8443]")
  var grpcAddress: String?
  @Option(name: .customLong("http-address"), help: "\(Setting.httpAddress.help) [$TENDER_HTTP_ADDRESS, default 0.0.0.0:8080]")
  var httpAddress: String?
  @Option(name: .customLong("tls-cert"), help: "\(Setting.tlsCert.help) [$TENDER_TLS_CERT]")
  var tlsCert: String?
  @Option(name: .customLong("tls-key"), help: "\(Setting.tlsKey.help) [$TENDER_TLS_KEY]")
  var tlsKey: String?
  @Option(name: .customLong("tls-client-ca"), help: "\(Setting.tlsClientCA.help) [$TENDER_TLS_CLIENT_CA]")
  var tlsClientCA: String?
  @Flag(name: .customLong("insecure"), help: "\(Setting.insecure.help) [$TENDER_INSECURE]")
  var insecure = false
  @Option(name: .customLong("database-url"), help: "\(Setting.databaseURL.help) [$TENDER_DATABASE_URL]")
  var databaseURL: String?
  @Option(name: .customLong("max-concurrent-streams"), help: "\(Setting.maxConcurrentStreams.help) [$TENDER_MAX_CONCURRENT_STREAMS, default 100]")
  var maxConcurrentStreams: String?
  @Option(name: .customLong("max-request-bytes"), help: "\(Setting.maxRequestBytes.help) [$TENDER_MAX_REQUEST_BYTES, default 4194304]")
  var maxRequestBytes: String?
  @Option(name: .customLong("default-deadline"), help: "\(Setting.defaultDeadline.help) [$TENDER_DEFAULT_DEADLINE, default 30s]")
  var defaultDeadline: String?
  @Option(name: .customLong("keepalive-time"), help: "\(Setting.keepaliveTime.help) [$TENDER_KEEPALIVE_TIME, default 60s]")
  var keepaliveTime: String?
  @Option(name: .customLong("keepalive-timeout"), help: "\(Setting.keepaliveTimeout.help) [$TENDER_KEEPALIVE_TIMEOUT, default 20s]")
  var keepaliveTimeout: String?
  @Option(name: .customLong("min-client-ping-interval"), help: "\(Setting.minClientPingInterval.help) [$TENDER_MIN_CLIENT_PING_INTERVAL, default 30s]")
  var minClientPingInterval: String?
  @Option(name: .customLong("max-connection-idle"), help: "\(Setting.maxConnectionIdle.help) [$TENDER_MAX_CONNECTION_IDLE, default 300s]")
  var maxConnectionIdle: String?
  @Option(name: .customLong("max-connection-age"), help: "\(Setting.maxConnectionAge.help) [$TENDER_MAX_CONNECTION_AGE, default 1800s]")
  var maxConnectionAge: String?
  @Option(name: .customLong("max-connection-age-grace"), help: "\(Setting.maxConnectionAgeGrace.help) [$TENDER_MAX_CONNECTION_AGE_GRACE, default 30s]")
  var maxConnectionAgeGrace: String?
  @Option(name: .customLong("health-probe-interval"), help: "\(Setting.healthProbeInterval.help) [$TENDER_HEALTH_PROBE_INTERVAL, default 2s]")
  var healthProbeInterval: String?
  @Option(name: .customLong("drain-delay"), help: "\(Setting.drainDelay.help) [$TENDER_DRAIN_DELAY, default 0s]")
  var drainDelay: String?
  @Flag(name: .customLong("migrate"), help: "\(Setting.migrate.help) [$TENDER_MIGRATE]")
  var migrate = false
  @Option(name: .customLong("redis-url"), help: "\(Setting.redisURL.help) [$TENDER_REDIS_URL]")
  var redisURL: String?
  @Option(name: .customLong("redis-key-prefix"), help: "\(Setting.redisKeyPrefix.help) [$TENDER_REDIS_KEY_PREFIX, default tender:]")
  var redisKeyPrefix: String?
  @Option(name: .customLong("key-encryption-key"), help: "\(Setting.keyEncryptionKey.help) [$TENDER_KEY_ENCRYPTION_KEY]")
  var keyEncryptionKey: String?
  @Option(name: .customLong("token-issuer"), help: "\(Setting.tokenIssuer.help) [$TENDER_TOKEN_ISSUER, default tender]")
  var tokenIssuer: String?
  @Option(name: .customLong("token-audience"), help: "\(Setting.tokenAudience.help) [$TENDER_TOKEN_AUDIENCE, default tender-api]")
  var tokenAudience: String?
  @Option(name: .customLong("token-lifetime"), help: "\(Setting.tokenLifetime.help) [$TENDER_TOKEN_LIFETIME, default 15m]")
  var tokenLifetime: String?
  @Option(name: .customLong("key-refresh-interval"), help: "\(Setting.keyRefreshInterval.help) [$TENDER_KEY_REFRESH_INTERVAL, default 10s]")
  var keyRefreshInterval: String?
  @Option(name: .customLong("rate-limit"), help: "\(Setting.rateLimit.help) [$TENDER_RATE_LIMIT, default 50/s,burst=100]")
  var rateLimit: String?
  @Option(name: .customLong("issue-token-rate-limit"), help: "\(Setting.issueTokenRateLimit.help) [$TENDER_ISSUE_TOKEN_RATE_LIMIT, default 30/m,burst=10]")
  var issueTokenRateLimit: String?
  @Option(name: .customLong("rate-limit-on-redis-failure"), help: "\(Setting.rateLimitOnRedisFailure.help) [$TENDER_RATE_LIMIT_ON_REDIS_FAILURE, default open]")
  var rateLimitOnRedisFailure: String?
  @Option(name: .customLong("provider-url"), help: "\(Setting.providerURL.help) [$TENDER_PROVIDER_URL, default https://api.stripe.com]")
  var providerURL: String?
  @Option(name: .customLong("provider-api-key"), help: "\(Setting.providerAPIKey.help) [$TENDER_PROVIDER_API_KEY]")
  var providerAPIKey: String?
  @Option(name: .customLong("provider-timeout"), help: "\(Setting.providerTimeout.help) [$TENDER_PROVIDER_TIMEOUT, default 10s]")
  var providerTimeout: String?
  @Option(name: .customLong("provider-attempts"), help: "\(Setting.providerAttempts.help) [$TENDER_PROVIDER_ATTEMPTS, default 3]")
  var providerAttempts: String?
  @Option(name: .customLong("provider-max-backoff"), help: "\(Setting.providerMaxBackoff.help) [$TENDER_PROVIDER_MAX_BACKOFF, default 2s]")
  var providerMaxBackoff: String?
  @Option(name: .customLong("settlement-check-after"), help: "\(Setting.settlementCheckAfter.help) [$TENDER_SETTLEMENT_CHECK_AFTER, default 60s]")
  var settlementCheckAfter: String?
  @Option(name: .customLong("settlement-give-up-after"), help: "\(Setting.settlementGiveUpAfter.help) [$TENDER_SETTLEMENT_GIVE_UP_AFTER, default 72h]")
  var settlementGiveUpAfter: String?
  @Option(name: .customLong("webhook-secrets"), help: "\(Setting.webhookSecrets.help) [$TENDER_WEBHOOK_SECRETS; prefer the variable]")
  var webhookSecrets: String?
  @Option(name: .customLong("webhook-tolerance"), help: "\(Setting.webhookTolerance.help) [$TENDER_WEBHOOK_TOLERANCE, default 300s]")
  var webhookTolerance: String?
  @Option(name: .customLong("webhook-max-body-bytes"), help: "\(Setting.webhookMaxBodyBytes.help) [$TENDER_WEBHOOK_MAX_BODY_BYTES, default 1048576]")
  var webhookMaxBodyBytes: String?
  @Option(name: .customLong("idempotency-lock"), help: "\(Setting.idempotencyLock.help) [$TENDER_IDEMPOTENCY_LOCK, default 60s]")
  var idempotencyLock: String?
  @Option(name: .customLong("completer-interval"), help: "\(Setting.completerInterval.help) [$TENDER_COMPLETER_INTERVAL, default 5s]")
  var completerInterval: String?
  @Option(name: .customLong("otlp-endpoint"), help: "\(Setting.otlpEndpoint.help) [$TENDER_OTLP_ENDPOINT]")
  var otlpEndpoint: String?
  @Option(name: .customLong("log-level"), help: "\(Setting.logLevel.help) [$TENDER_LOG_LEVEL, default info]")
  var logLevel: String?

  /// The flags given on the command line; absent ones fall back to the environment, then defaults.
  var given: [Setting: String] {
    var flags: [Setting: String] = [:]
    flags[.grpcAddress] = self.grpcAddress
    flags[.httpAddress] = self.httpAddress
    flags[.tlsCert] = self.tlsCert
    flags[.tlsKey] = self.tlsKey
    flags[.tlsClientCA] = self.tlsClientCA
    if self.insecure { flags[.insecure] = "true" }
    flags[.databaseURL] = self.databaseURL
    flags[.maxConcurrentStreams] = self.maxConcurrentStreams
    flags[.maxRequestBytes] = self.maxRequestBytes
    flags[.defaultDeadline] = self.defaultDeadline
    flags[.keepaliveTime] = self.keepaliveTime
    flags[.keepaliveTimeout] = self.keepaliveTimeout
    flags[.minClientPingInterval] = self.minClientPingInterval
    flags[.maxConnectionIdle] = self.maxConnectionIdle
    flags[.maxConnectionAge] = self.maxConnectionAge
    flags[.maxConnectionAgeGrace] = self.maxConnectionAgeGrace
    flags[.healthProbeInterval] = self.healthProbeInterval
    flags[.drainDelay] = self.drainDelay
    if self.migrate { flags[.migrate] = "true" }
    flags[.redisURL] = self.redisURL
    flags[.redisKeyPrefix] = self.redisKeyPrefix
    flags[.keyEncryptionKey] = self.keyEncryptionKey
    flags[.tokenIssuer] = self.tokenIssuer
    flags[.tokenAudience] = self.tokenAudience
    flags[.tokenLifetime] = self.tokenLifetime
    flags[.keyRefreshInterval] = self.keyRefreshInterval
    flags[.rateLimit] = self.rateLimit
    flags[.issueTokenRateLimit] = self.issueTokenRateLimit
    flags[.rateLimitOnRedisFailure] = self.rateLimitOnRedisFailure
    flags[.providerURL] = self.providerURL
    flags[.providerAPIKey] = self.providerAPIKey
    flags[.providerTimeout] = self.providerTimeout
    flags[.providerAttempts] = self.providerAttempts
    flags[.providerMaxBackoff] = self.providerMaxBackoff
    flags[.settlementCheckAfter] = self.settlementCheckAfter
    flags[.settlementGiveUpAfter] = self.settlementGiveUpAfter
    flags[.webhookSecrets] = self.webhookSecrets
    flags[.webhookTolerance] = self.webhookTolerance
    flags[.webhookMaxBodyBytes] = self.webhookMaxBodyBytes
    flags[.idempotencyLock] = self.idempotencyLock
    flags[.completerInterval] = self.completerInterval
    flags[.otlpEndpoint] = self.otlpEndpoint
    flags[.logLevel] = self.logLevel
    return flags
  }
}
