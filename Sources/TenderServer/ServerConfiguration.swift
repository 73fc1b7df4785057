import Crypto
public import Foundation
public import Logging
import NIOSSL
public import PostgresNIO
public import TenderAuth
public import TenderCore
public import TenderOperations
public import TenderRedis

/// Everything `tender serve` needs, parsed and validated: a value of this type is always usable.
/// `resolve` makes one from the settings (`Setting.all`); tests adjust the result.
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
  /// Address of the HTTP bridge (health, metrics, webhooks, JWKS), served with the same TLS settings.
  public var httpHost: String
  public var httpPort: Int
  public var transport: Transport
  public var database: PostgresClient.Configuration
  /// Longest wait for one store call, however the database fails to answer.
  public var databaseCallTimeout: Duration
  /// Statements of each kind of new-payment or new-refund write in flight at once (group commit's lanes).
  public var databaseWriteLanes: Int
  /// How long a lane's statement runs before requests queued behind it get another lane.
  public var databaseWriteStall: Duration
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
  /// The files the TLS certificate and key were read from, re-read every `tlsReloadInterval`
  /// (zero: never); nil when the certificate came from elsewhere.
  public var tlsFiles: TLSFiles?
  public var tlsReloadInterval: Duration
  /// Apply pending migrations at start (dev mode).
  public var migrateOnStart: Bool
  public var logLevel: Logger.Level
  /// Redis: rate limits and the token standing cache.
  public var redis: RedisConfiguration
  /// Namespace of every Redis key Tender writes, so environments can share a Redis.
  public var redisKeyPrefix: String
  /// Seals the signing keys' private halves in the database; page tokens and stored answers are
  /// keyed from it.
  public var keyEncryptionKey: KeyEncryptionKey
  /// `iss` and `aud` of access tokens, and their lifetime.
  public var tokenIssuer: String
  public var tokenAudience: String
  public var tokenLifetime: Duration
  /// How often signing keys are reloaded (rotations and removals by other processes).
  public var keyRefreshInterval: Duration
  /// Token bucket per API client over all authenticated RPCs.
  public var clientRateLimit: RateLimitPolicy
  /// Token buckets for IssueToken, per client id and per peer address.
  public var issueTokenRateLimit: RateLimitPolicy
  /// What to do when Redis cannot answer a rate-limit check.
  public var rateLimitFailureMode: RateLimitFailureMode
  /// The payment provider (Stripe's API or the simulator) and its secret key.
  public var providerURL: String
  public var providerAPIKey: Secret<String>
  /// Deadline of one provider request (retries come on top).
  public var providerTimeout: Duration
  /// Attempts per provider call (same idempotency key each time).
  public var providerAttempts: Int
  /// The longest wait between two attempts (full-jitter backoff; a 429's Retry-After up to this).
  public var providerMaxBackoff: Duration
  /// Most connections to the provider's API.
  public var providerConnections: Int
  /// How long a keyed request owns its idempotency key; after that the completer may take over.
  public var idempotencyLock: Duration
  /// How often the completer looks for interrupted operations.
  public var completerInterval: Duration
  /// How long a payment PROCESSING or refund PENDING at the provider waits before the
  /// reconciler first asks the provider about it (then with backoff, up to an hour apart).
  public var settlementCheckAfter: Duration
  /// When the reconciler gives up on an object the provider has not finished (metric, log line).
  public var settlementGiveUpAfter: Duration
  /// Webhook signing secrets by provider (`stripe` uses Stripe's scheme, others Standard Webhooks);
  /// empty: the webhook endpoints answer 404.
  public var webhookSecrets: [String: [Secret<String>]]
  /// How far a webhook's signed timestamp may be from now, either way.
  public var webhookTolerance: Duration
  /// The largest webhook body; larger ones are refused before any hashing.
  public var webhookMaxBodyBytes: Int
  /// OTLP/gRPC collector for traces (e.g. http://otel-collector:4317); nil: tracing is a no-op.
  public var otlpEndpoint: String?
  /// The bearer token `/metrics` requires; nil: it answers anyone who reaches the bridge.
  public var metricsToken: Secret<String>?

  // Not settings: fixed in production, shortened by tests.
  /// How an event for an object Tender does not know yet is tried again, then parked.
  public var webhookRetry = WebhookApplier.Policy()
  /// How often finished idempotency records older than a day are deleted.
  public var reaperInterval: Duration = .seconds(3600)
  /// scrypt's cost for new client secrets (stored hashes carry their own).
  public var secretHashing = ClientSecretHasher.Parameters.standard

  /// Every attempt of one provider call and every wait between them.
  public var providerBudget: Duration {
    self.providerTimeout * self.providerAttempts + self.providerMaxBackoff * (self.providerAttempts - 1)
  }

  /// Values every setting overwrites (each has a default or is required); never served.
  init() {
    self.host = ""
    self.port = 0
    self.httpHost = ""
    self.httpPort = 0
    self.transport = .insecure
    self.database = .init(host: "", username: "", password: nil, database: nil, tls: .disable)
    self.databaseCallTimeout = .zero
    self.databaseWriteLanes = 0
    self.databaseWriteStall = .zero
    self.maxConcurrentStreams = 0
    self.maxRequestMessageBytes = 0
    self.defaultDeadline = .zero
    self.keepaliveTime = .zero
    self.keepaliveTimeout = .zero
    self.minClientPingInterval = .zero
    self.maxConnectionIdle = .zero
    self.maxConnectionAge = .zero
    self.maxConnectionAgeGrace = .zero
    self.healthProbeInterval = .zero
    self.drainDelay = .zero
    self.migrateOnStart = false
    self.logLevel = .info
    self.redis = RedisConfiguration(host: "", port: 0)
    self.redisKeyPrefix = ""
    self.keyEncryptionKey = KeyEncryptionKey(key: SymmetricKey(size: .bits256))
    self.tokenIssuer = ""
    self.tokenAudience = ""
    self.tokenLifetime = .zero
    self.keyRefreshInterval = .zero
    self.clientRateLimit = RateLimitPolicy(capacity: 1, refillPerSecond: 1)
    self.issueTokenRateLimit = RateLimitPolicy(capacity: 1, refillPerSecond: 1)
    self.rateLimitFailureMode = .closed
    self.providerURL = ""
    self.providerAPIKey = Secret("")
    self.providerTimeout = .zero
    self.providerAttempts = 0
    self.providerMaxBackoff = .zero
    self.providerConnections = 0
    self.idempotencyLock = .zero
    self.completerInterval = .zero
    self.settlementCheckAfter = .zero
    self.settlementGiveUpAfter = .zero
    self.webhookSecrets = [:]
    self.webhookTolerance = .zero
    self.webhookMaxBodyBytes = 0
    self.otlpEndpoint = nil
    self.metricsToken = nil
    self.tlsFiles = nil
    self.tlsReloadInterval = .zero
  }

  /// Where the server's certificate chain and private key are kept (PEM).
  public struct TLSFiles: Sendable, Hashable {
    public var certificatePath: String
    public var privateKeyPath: String

    public init(certificatePath: String, privateKeyPath: String) {
      self.certificatePath = certificatePath
      self.privateKeyPath = privateKeyPath
    }
  }
}

/// A configuration being resolved, with what some settings need together (the TLS files).
@dynamicMemberLookup
struct Resolution {
  struct TLSFiles {
    var certificateChain: [UInt8]?
    var certificatePath: String?
    var privateKey: Secret<[UInt8]>?
    var privateKeyPath: String?
    var clientCA: [UInt8]?
    var insecure = false
  }

  var configuration: ServerConfiguration
  var tls = TLSFiles()

  subscript<Value>(dynamicMember path: WritableKeyPath<ServerConfiguration, Value>) -> Value {
    get { self.configuration[keyPath: path] }
    set { self.configuration[keyPath: path] = newValue }
  }
}

extension ServerConfiguration {
  /// Resolves every setting from its flag, else its variable, else its file in the secrets
  /// folder, else its default, and validates the whole: first each value given or defaulted (in
  /// `Setting.all`'s order), then the settings that depend on each other, then that nothing
  /// required is missing. The first problem found is thrown.
  public static func resolve(
    flags: [Setting: String],
    environment: [String: String] = ProcessInfo.processInfo.environment
  ) async throws -> ServerConfiguration {
    let sources = try await SettingSources.load(flags: flags, environment: environment)
    var resolution = Resolution(configuration: ServerConfiguration())
    var missing: [Setting] = []
    for setting in Setting.all {
      guard let text = sources.value(setting) else {
        missing.append(setting)
        continue
      }
      do {
        try setting.apply(text, &resolution)
      } catch let problem as Setting.Problem {
        throw ConfigurationError(setting: setting.label, problem: problem.text)
      }
    }
    var configuration = resolution.configuration
    configuration.transport = try Self.transport(resolution.tls, &configuration)
    try Self.checkTogether(configuration)
    if let first = missing.first(where: { $0.presence == .required }) {
      throw ConfigurationError(setting: first.label, problem: "is required")
    }
    return configuration
  }

  private static func transport(
    _ tls: Resolution.TLSFiles, _ configuration: inout ServerConfiguration
  ) throws
    -> Transport
  {
    if tls.insecure {
      for listener in [configuration.host, configuration.httpHost] where !Setting.isLoopback(listener) {
        throw ConfigurationError(
          setting: Setting.insecure.label, problem: "plaintext is only allowed on a loopback address, not '\(listener)'"
        )
      }
      return .insecure
    }
    guard let chain = tls.certificateChain else {
      throw ConfigurationError(
        setting: Setting.tlsCert.label, problem: "is required (or --insecure on a loopback address)")
    }
    guard let key = tls.privateKey, let keyPath = tls.privateKeyPath else {
      throw ConfigurationError(
        setting: Setting.tlsKey.label, problem: "is required (or --insecure on a loopback address)")
    }
    do {
      _ = try NIOSSLContext(
        configuration: .makeServerConfiguration(
          certificateChain: try NIOSSLCertificate.fromPEMBytes(chain).map { .certificate($0) },
          privateKey: .privateKey(try NIOSSLPrivateKey(bytes: key.value, format: .pem))
        )
      )
    } catch {
      throw ConfigurationError(
        setting: Setting.tlsKey.label,
        problem: "'\(keyPath)' does not match the certificate in \(Setting.tlsCert.environment)")
    }
    if let certificatePath = tls.certificatePath {
      configuration.tlsFiles = TLSFiles(certificatePath: certificatePath, privateKeyPath: keyPath)
    }
    return .tls(certificateChain: chain, privateKey: key, clientCA: tls.clientCA)
  }

  /// Settings that constrain each other.
  private static func checkTogether(_ configuration: ServerConfiguration) throws {
    let budget = configuration.providerBudget
    guard configuration.idempotencyLock > budget else {
      // A lock that can run out while its owner still waits for the provider would let a retry
      // or the completer take over a call that is still on its way (the heartbeat renews the
      // lock, but must not be what correctness rests on).
      throw ConfigurationError(
        setting: Setting.idempotencyLock.label,
        problem:
          "must be longer than a whole provider call: \(Setting.format(budget)) (provider attempts × provider timeout + (attempts − 1) × provider max backoff)"
      )
    }
    guard configuration.settlementGiveUpAfter > configuration.settlementCheckAfter else {
      throw ConfigurationError(
        setting: Setting.settlementGiveUpAfter.label, problem: "must be longer than the settlement check delay")
    }
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
