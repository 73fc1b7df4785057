import Configuration
import SystemPackage
public import Foundation
import Logging
import NIOSSL
import PostgresNIO
import TenderCore
import TenderAuth
import TenderPostgres
import TenderRedis

/// One setting of `tender serve`, defined once: its flag (from which its `TENDER_*` variable and
/// its file name in the secrets folder follow), its default, what it means, and how its text
/// becomes a value of the configuration. The flags, the environment lookup, `--help`, the
/// validation messages and the README's configuration table all come from `Setting.all`.
public struct Setting: Sendable, Hashable, CustomStringConvertible {
  /// Whether a value must be given.
  public enum Presence: Sendable, Hashable {
    /// Used when none is given; written as a flag would be, and parsed like one.
    case defaulted(String)
    /// Refused when missing.
    case required
    /// Required but for the condition named (checked with the settings it depends on).
    case requiredUnless(String)
    /// Absent means off.
    case optional
  }

  /// Why a value cannot be used; the setting's label is added in front.
  public struct Problem: Error {
    public let text: String
    public init(_ text: String) { self.text = text }
  }

  /// `grpc-address`: the flag is `--grpc-address`, the variable `TENDER_GRPC_ADDRESS`, the file
  /// in the secrets folder `grpc-address`.
  public let flag: String
  public let presence: Presence
  /// What the setting does, in Markdown (the README shows it as is, `--help` without backticks).
  public let help: String
  /// A flag without a value (`--insecure`); the variable takes true or false.
  public let isSwitch: Bool
  /// Never echoed in errors or logs; better given by variable or file than by flag.
  public let isSecret: Bool
  let apply: @Sendable (String, inout Resolution) throws -> Void

  init(
    _ flag: String,
    _ presence: Presence,
    isSwitch: Bool = false,
    isSecret: Bool = false,
    help: String,
    apply: @escaping @Sendable (String, inout Resolution) throws -> Void
  ) {
    self.flag = flag
    self.presence = presence
    self.isSwitch = isSwitch
    self.isSecret = isSecret
    self.help = help
    self.apply = apply
  }

  public var environment: String { "TENDER_" + self.flag.uppercased().replacingOccurrences(of: "-", with: "_") }
  /// For a secret: the variable naming a file that holds its value (`TENDER_DATABASE_URL_FILE`).
  public var fileVariable: String { self.environment + "_FILE" }
  /// How errors name the setting: `TENDER_TLS_CERT (--tls-cert)`.
  public var label: String { "\(self.environment) (--\(self.flag))" }
  public var description: String { self.label }
  public var defaultValue: String? {
    if case .defaulted(let value) = self.presence { return value }
    return nil
  }

  public static func == (lhs: Setting, rhs: Setting) -> Bool { lhs.flag == rhs.flag }
  public func hash(into hasher: inout Hasher) { hasher.combine(self.flag) }

  /// The setting of a flag (`grpc-address`), if there is one.
  public static func named(_ flag: String) -> Setting? { Self.byFlag[flag] }
  private static let byFlag = Dictionary(uniqueKeysWithValues: Self.all.map { ($0.flag, $0) })
}

// MARK: - Kinds of setting

extension Setting {
  static func duration(
    _ flag: String,
    _ path: any WritableKeyPath<ServerConfiguration, Duration> & Sendable,
    default value: Duration,
    allowZero: Bool = false,
    within range: ClosedRange<Duration>? = nil,
    rangeText: String = "",
    help: String
  ) -> Setting {
    Setting(flag, .defaulted(Self.format(value)), help: help) { text, resolution in
      let duration = try Self.parseDuration(text, allowZero: allowZero)
      if let range, !range.contains(duration) { throw Problem("must be from \(rangeText)") }
      resolution.configuration[keyPath: path] = duration
    }
  }

  static func integer(
    _ flag: String,
    _ path: any WritableKeyPath<ServerConfiguration, Int> & Sendable,
    default value: Int,
    range: ClosedRange<Int>,
    help: String
  ) -> Setting {
    Setting(flag, .defaulted("\(value)"), help: help) { text, resolution in
      resolution.configuration[keyPath: path] = try Self.parseInt(text, range: range)
    }
  }

  /// 1–200 printable characters without spaces (issuer, audience, key prefix).
  static func name(
    _ flag: String, _ path: any WritableKeyPath<ServerConfiguration, String> & Sendable, default value: String,
    help: String
  ) -> Setting {
    Setting(flag, .defaulted(value), help: help) { text, resolution in
      guard (1...200).contains(text.count), text.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7F })
      else {
        throw Problem("must be 1 to 200 printable characters without spaces")
      }
      resolution.configuration[keyPath: path] = text
    }
  }

  static func rateLimit(
    _ flag: String, _ path: any WritableKeyPath<ServerConfiguration, RateLimitPolicy> & Sendable,
    default value: RateLimitPolicy, help: String
  ) -> Setting {
    Setting(flag, .defaulted(Self.format(value)), help: help) { text, resolution in
      resolution.configuration[keyPath: path] = try Self.parseRateLimit(text)
    }
  }

  static func toggle(
    _ flag: String, _ path: any WritableKeyPath<ServerConfiguration, Bool> & Sendable, help: String
  ) -> Setting {
    Setting(flag, .defaulted("false"), isSwitch: true, help: help) { text, resolution in
      resolution.configuration[keyPath: path] = try Self.parseBool(text)
    }
  }

  static func url(
    _ flag: String, _ path: any WritableKeyPath<ServerConfiguration, String> & Sendable, _ presence: Presence,
    help: String
  ) -> Setting {
    Setting(flag, presence, help: help) { text, resolution in
      guard let url = URL(string: text), let scheme = url.scheme, ["http", "https"].contains(scheme), url.host != nil
      else {
        throw Problem("'\(text)' must be an http:// or https:// URL with a host")
      }
      resolution.configuration[keyPath: path] = text
    }
  }
}

// MARK: - The table

extension Setting {
  public static let grpcAddress = Setting(
    "grpc-address", .defaulted("0.0.0.0:8443"), help: "host:port of the gRPC listener (`[::1]:8443` for IPv6)"
  ) { text, c in
    (c.host, c.port) = try Self.parseAddress(text)
  }
  public static let httpAddress = Setting(
    "http-address", .defaulted("0.0.0.0:8080"),
    help:
      "host:port of the HTTP bridge (`/healthz`, `/readyz`, `/metrics`, `/webhooks/*`, `/.well-known/jwks.json`), same TLS certificate"
  ) { text, c in
    (c.httpHost, c.httpPort) = try Self.parseAddress(text)
  }
  public static let tlsCert = Setting(
    "tls-cert", .requiredUnless("--insecure"), help: "PEM certificate chain of the server, leaf first"
  ) { text, c in
    let chain = try Self.readFile(text)
    guard let certificates = try? NIOSSLCertificate.fromPEMBytes(chain) else {
      throw Problem("'\(text)' is not a PEM certificate chain")
    }
    guard !certificates.isEmpty else { throw Problem("'\(text)' holds no certificate") }
    c.tls.certificateChain = chain
    c.tls.certificatePath = text
  }
  public static let tlsKey = Setting(
    "tls-key", .requiredUnless("--insecure"), help: "PEM private key of that certificate"
  ) { text, c in
    let key = try Self.readFile(text)
    guard (try? NIOSSLPrivateKey(bytes: key, format: .pem)) != nil else {
      throw Problem("'\(text)' is not a PEM private key")
    }
    c.tls.privateKey = Secret(key)
    c.tls.privateKeyPath = text
  }
  public static let tlsClientCA = Setting(
    "tls-client-ca", .optional, help: "PEM CA bundle; when set, clients must present a certificate it signed (mTLS)"
  ) { text, c in
    let bytes = try Self.readFile(text)
    guard let roots = try? NIOSSLCertificate.fromPEMBytes(bytes), !roots.isEmpty else {
      throw Problem("'\(text)' is not a PEM certificate bundle")
    }
    c.tls.clientCA = bytes
  }
  public static let tlsReloadInterval = Setting.duration(
    "tls-reload-interval", \.tlsReloadInterval, default: .seconds(60), allowZero: true,
    help:
      "how often the certificate and key files are read again; a new pair is served to new connections without a restart (a pair that does not match or parse is logged and the last good one kept); 0s: never"
  )
  public static let insecure = Setting(
    "insecure", .defaulted("false"), isSwitch: true,
    help: "plaintext gRPC and HTTP; refused unless both addresses are loopback"
  ) { text, c in
    c.tls.insecure = try Self.parseBool(text)
  }
  public static let databaseURL = Setting(
    "database-url", .required, isSecret: true,
    help:
      "`postgres://user:password@host:port/db?sslmode=disable|prefer|require|verify-ca|verify-full&sslrootcert=/ca.pem&pool_max=N&statement_timeout=15s&lock_timeout=5s` (timeouts: defaults shown, 0 for none; sslrootcert: the CA to verify with, the system's otherwise); `?host=/dir` for a Unix socket"
  ) { text, c in
    do {
      c.database = try DatabaseURL.configuration(from: text)
    } catch let error as DatabaseURL.Invalid {
      throw Problem(error.description)
    }
  }
  public static let databasePassword = Setting(
    "database-password", .optional, isSecret: true,
    help:
      "the database user's password, in place of the URL's (a URL without secrets can then live in plain configuration)"
  ) { text, c in
    c.database.password = text
  }
  public static let databaseCallTimeout = Setting.duration(
    "database-call-timeout", \.databaseCallTimeout, default: .seconds(30), within: .seconds(1)...(.seconds(600)),
    rangeText: "1s to 10min",
    help:
      "longest wait for one store call (a query or a transaction, waiting for a connection included); past it the RPC answers UNAVAILABLE `DATABASE_UNAVAILABLE`, even when the database never answers or cannot be reached"
  )
  public static let databaseWriteLanes = Setting.integer(
    "database-write-lanes", \.databaseWriteLanes, default: 2, range: 1...64,
    help:
      "most statements of each of a new payment's or refund's two writes in flight at once (group commit's lanes). One lane carries them while it keeps up: requests that arrive meanwhile are written together as its next statement, one commit for all; another opens only when requests wait behind a statement that ran past `database-write-stall` (one waiting on a lock)"
  )
  public static let databaseWriteStall = Setting.duration(
    "database-write-stall", \.databaseWriteStall, default: .milliseconds(20), allowZero: true,
    within: .zero...(.seconds(10)), rangeText: "0 to 10s",
    help:
      "how long a group-committed statement runs before the requests queued behind it get another lane (up to `database-write-lanes`); 0 opens a lane whenever one is free (smaller batches, more database CPU per payment)"
  )
  public static let maxConcurrentStreams = Setting.integer(
    "max-concurrent-streams", \.maxConcurrentStreams, default: 100, range: 1...10_000,
    help: "concurrent RPCs per HTTP/2 connection")
  public static let maxRequestBytes = Setting.integer(
    "max-request-bytes", \.maxRequestMessageBytes, default: 4 << 20, range: 1024...(64 << 20),
    help: "largest request message; larger ones get RESOURCE_EXHAUSTED on that stream only"
  )
  public static let defaultDeadline = Setting.duration(
    "default-deadline", \.defaultDeadline, default: .seconds(30),
    help: "deadline of unary RPCs sent without `grpc-timeout`")
  public static let keepaliveTime = Setting.duration(
    "keepalive-time", \.keepaliveTime, default: .seconds(60), help: "server ping interval on quiet connections")
  public static let keepaliveTimeout = Setting.duration(
    "keepalive-timeout", \.keepaliveTimeout, default: .seconds(20),
    help: "time to wait for a ping answer before closing")
  public static let minClientPingInterval = Setting.duration(
    "min-client-ping-interval", \.minClientPingInterval, default: .seconds(30), allowZero: true,
    help: "clients pinging more often are sent GOAWAY"
  )
  public static let maxConnectionIdle = Setting.duration(
    "max-connection-idle", \.maxConnectionIdle, default: .seconds(300), help: "idle connections are closed after this")
  public static let maxConnectionAge = Setting.duration(
    "max-connection-age", \.maxConnectionAge, default: .seconds(1800),
    help: "connections are recycled after this, to rebalance replicas"
  )
  public static let maxConnectionAgeGrace = Setting.duration(
    "max-connection-age-grace", \.maxConnectionAgeGrace, default: .seconds(30), allowZero: true,
    help: "time given to RPCs on a recycled connection"
  )
  public static let healthProbeInterval = Setting.duration(
    "health-probe-interval", \.healthProbeInterval, default: .seconds(2),
    help:
      "how often the database is probed (2 s timeout); health is NOT_SERVING from three failed probes in a row until one answers again"
  )
  public static let drainDelay = Setting.duration(
    "drain-delay", \.drainDelay, default: .zero, allowZero: true,
    help: "on SIGTERM, time between reporting NOT_SERVING and refusing new RPCs"
  )
  public static let migrate = Setting.toggle(
    "migrate", \.migrateOnStart, help: "apply pending migrations before serving")
  public static let redisURL = Setting(
    "redis-url", .required, isSecret: true,
    help:
      "`redis://[[user]:password@]host:port[/db][?connect_timeout=500ms&command_timeout=250ms&pool_size=4]` (defaults shown), or `rediss://…&ssl_ca_certs=/ca.pem` for TLS (the system's CAs without it); a user name is an ACL user: rate-limit buckets and the token standing cache"
  ) { text, c in
    do {
      c.redis = try RedisConfiguration(url: text)
    } catch let error as RedisConfiguration.Invalid {
      throw Problem(error.description)
    }
  }
  public static let redisPassword = Setting(
    "redis-password", .optional, isSecret: true, help: "Redis's password, in place of the URL's"
  ) { text, c in
    c.redis.password = Secret(text)
  }
  public static let redisKeyPrefix = Setting.name(
    "redis-key-prefix", \.redisKeyPrefix, default: "tender:",
    help: "namespace of Tender's Redis keys, for sharing a Redis between environments"
  )
  public static let keyEncryptionKey = Setting(
    "key-encryption-key", .required, isSecret: true,
    help:
      "base64 of 32 random bytes (`openssl rand -base64 32`); seals the signing keys' private halves in the database (AES-256-GCM) and keys page tokens and stored answers. Prefer the variable or a file to the flag"
  ) { text, c in
    do {
      c.keyEncryptionKey = try KeyEncryptionKey(base64: Secret(text))
    } catch {
      throw Problem("\(error)")
    }
  }
  public static let tokenIssuer = Setting.name(
    "token-issuer", \.tokenIssuer, default: "tender", help: "`iss` of issued access tokens, required on presented ones")
  public static let tokenAudience = Setting.name(
    "token-audience", \.tokenAudience, default: "tender-api",
    help: "`aud` of issued access tokens, required on presented ones")
  public static let tokenLifetime = Setting.duration(
    "token-lifetime", \.tokenLifetime, default: .seconds(900), within: .seconds(60)...(.seconds(86400)),
    rangeText: "1m to 24h",
    help: "lifetime of access tokens (1m to 24h); a retired key verifies for this long after its retirement"
  )
  public static let keyRefreshInterval = Setting.duration(
    "key-refresh-interval", \.keyRefreshInterval, default: .seconds(10),
    help: "how often signing keys are reloaded, so rotations and removals reach every replica"
  )
  public static let clientSecretCost = Setting(
    "client-secret-cost", .defaulted("14"),
    help:
      "scrypt cost of client secrets hashed from now on (created or rotated), as log2 N (10–18; r = 8, p = 1): 2^cost KiB of memory and about 50 ms per hash at 14. Each stored hash keeps the cost it was made with"
  ) { text, c in
    c.secretHashing = .init(logRounds: try Self.parseInt(text, range: 10...18), blockSize: 8, parallelism: 1)
  }
  public static let rateLimit = Setting.rateLimit(
    "rate-limit", \.clientRateLimit, default: RateLimitPolicy(capacity: 100, refillPerSecond: 50),
    help: "token bucket per API client over its authenticated RPCs (`RATE/s` or `RATE/m`, `burst=N`)"
  )
  public static let issueTokenRateLimit = Setting.rateLimit(
    "issue-token-rate-limit", \.issueTokenRateLimit, default: RateLimitPolicy(capacity: 10, refillPerSecond: 0.5),
    help:
      "IssueToken buckets: one per peer address over every attempt, and one per client id and address over wrong secrets"
  )
  public static let rateLimitOnRedisFailure = Setting(
    "rate-limit-on-redis-failure", .defaulted("open"),
    help:
      "when Redis does not answer (within the URL's timeouts; then the pool backs off): `open` lets calls through, counting `tender_rate_limiter_errors_total` and logging a warning; `closed` refuses them with UNAVAILABLE (`RATE_LIMITER_UNAVAILABLE`)"
  ) { text, c in
    guard let mode = RateLimitFailureMode(rawValue: text) else { throw Problem("must be open or closed") }
    c.rateLimitFailureMode = mode
  }
  public static let providerURL = Setting.url(
    "provider-url", \.providerURL, .defaulted("https://api.stripe.com"),
    help: "base URL of the payment provider's API (Stripe, or `tender-provider-sim`)"
  )
  public static let providerAPIKey = Setting(
    "provider-api-key", .required, isSecret: true, help: "the provider's secret API key; prefer the variable or a file"
  ) { text, c in
    c.providerAPIKey = Secret(text)
  }
  public static let providerTimeout = Setting.duration(
    "provider-timeout", \.providerTimeout, default: .seconds(10),
    help:
      "deadline of one provider request; an unanswered CreatePayment stays PROCESSING and a retry or the completer finishes it"
  )
  public static let providerAttempts = Setting.integer(
    "provider-attempts", \.providerAttempts, default: 3, range: 1...10,
    help:
      "attempts per provider call (1–10), all under the same idempotency key: connection failures, 409, 429 and 5xx are retried"
  )
  public static let providerMaxBackoff = Setting.duration(
    "provider-max-backoff", \.providerMaxBackoff, default: .seconds(2),
    help:
      "longest wait between two attempts (exponential backoff with full jitter from 200 ms; a 429's `Retry-After` is honoured up to this, a longer one ends the call)"
  )
  public static let providerConnections = Setting.integer(
    "provider-connections", \.providerConnections, default: 64, range: 1...1024,
    help:
      "most connections to the provider's API per replica; over HTTP/1.1 each carries one call at a time, so calls beyond these wait for one (within their attempt's deadline)"
  )
  public static let idempotencyLock = Setting.duration(
    "idempotency-lock", \.idempotencyLock, default: .seconds(60),
    help:
      "how long a keyed request owns its idempotency key without a sign of life (renewed every third of it while a provider call is in flight); after that a retry or the completer takes over. Must be longer than a whole provider call: attempts × timeout + (attempts − 1) × max backoff (34 s by default)"
  )
  public static let completerInterval = Setting.duration(
    "completer-interval", \.completerInterval, default: .seconds(5),
    help: "how often the completer looks for interrupted operations and the reconciler for open payments and refunds"
  )
  public static let settlementCheckAfter = Setting.duration(
    "settlement-check-after", \.settlementCheckAfter, default: .seconds(60),
    help:
      "how long a payment PROCESSING or a refund PENDING at the provider stays quiet before the reconciler asks the provider about it (then again with backoff, doubling up to 1 h apart)"
  )
  public static let settlementGiveUpAfter = Setting.duration(
    "settlement-give-up-after", \.settlementGiveUpAfter, default: .seconds(72 * 3600),
    help:
      "age at which the reconciler stops asking about an object the provider has not finished: counted in `tender_settlement_abandoned_total{kind}` and logged at error level, for a person to settle"
  )
  public static let webhookSecrets = Setting(
    "webhook-secrets", .optional, isSecret: true,
    help:
      "webhook signing secrets per provider: `stripe=whsec_…[,whsec_…];acme=whsec_…` — `stripe` is verified with Stripe's scheme (the endpoint's signing secret as Stripe shows it), every other name with Standard Webhooks (`whsec_` + base64); several secrets per provider during a rotation; unset, `/webhooks/*` answers 404. Prefer the variable or a file"
  ) { text, c in
    c.webhookSecrets = try Self.parseWebhookSecrets(text)
  }
  public static let webhookTolerance = Setting.duration(
    "webhook-tolerance", \.webhookTolerance, default: .seconds(300),
    help: "how far a webhook's signed timestamp may be from now, either way"
  )
  public static let webhookMaxBodyBytes = Setting.integer(
    "webhook-max-body-bytes", \.webhookMaxBodyBytes, default: 1 << 20, range: 1024...(64 << 20),
    help: "largest webhook body (1 KiB–64 MiB); larger ones get 413 before any hashing"
  )
  public static let metricsToken = Setting(
    "metrics-token", .optional, isSecret: true,
    help:
      "bearer token `/metrics` requires (`Authorization: Bearer …`, 401 otherwise), so the bridge's public listener does not hand the metrics to anyone; 32 to 256 printable characters. Prefer the variable or a file"
  ) { text, c in
    guard (32...256).contains(text.utf8.count), text.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
      throw Problem("must be 32 to 256 printable characters")
    }
    c.metricsToken = Secret(text)
  }
  public static let otlpEndpoint = Setting(
    "otlp-endpoint", .optional,
    help: "OTLP/gRPC collector for traces (e.g. `http://otel-collector:4317`); unset, tracing is a no-op"
  ) { text, c in
    guard let url = URL(string: text), let scheme = url.scheme, ["http", "https"].contains(scheme), url.host != nil
    else {
      throw Problem("'\(text)' must be an http:// or https:// URL with a host")
    }
    c.otlpEndpoint = text
  }
  public static let logLevel = Setting(
    "log-level", .defaulted("info"), help: "trace, debug, info, notice, warning, error or critical"
  ) { text, c in
    guard let level = Logger.Level(rawValue: text) else {
      throw Problem("must be one of trace, debug, info, notice, warning, error, critical")
    }
    c.logLevel = level
  }
  /// Read before the others: where they may also come from.
  public static let secretsDirectory = Setting(
    "secrets-dir", .optional,
    help:
      "a folder of files named after the flags (`key-encryption-key`, `provider-api-key`, `database-url`, `webhook-secrets`, …), each holding that setting's value, as Kubernetes mounts a secret; a flag or variable wins over a file"
  ) { _, _ in }

  /// Every setting of `tender serve`, in the order `--help` and the README list them.
  public static let all: [Setting] = [
    .grpcAddress, .httpAddress, .tlsCert, .tlsKey, .tlsClientCA, .tlsReloadInterval, .insecure, .databaseURL,
    .databasePassword,
    .databaseCallTimeout, .databaseWriteLanes, .databaseWriteStall,
    .maxConcurrentStreams,
    .maxRequestBytes, .defaultDeadline, .keepaliveTime, .keepaliveTimeout, .minClientPingInterval,
    .maxConnectionIdle, .maxConnectionAge, .maxConnectionAgeGrace, .healthProbeInterval, .drainDelay,
    .migrate, .redisURL, .redisPassword, .redisKeyPrefix, .keyEncryptionKey, .tokenIssuer, .tokenAudience,
    .tokenLifetime,
    .keyRefreshInterval, .clientSecretCost, .rateLimit, .issueTokenRateLimit, .rateLimitOnRedisFailure, .providerURL,
    .providerAPIKey,
    .providerTimeout, .providerAttempts, .providerMaxBackoff, .providerConnections, .idempotencyLock,
    .completerInterval,
    .settlementCheckAfter, .settlementGiveUpAfter, .webhookSecrets, .webhookTolerance, .webhookMaxBodyBytes,
    .metricsToken, .otlpEndpoint, .logLevel, .secretsDirectory,
  ]
}

// MARK: - Sources

/// Where settings come from, first match wins: flags, the environment, files in the secrets
/// folder, the defaults. Empty values count as unset.
public struct SettingSources: Sendable {
  private let reader: ConfigReader

  /// - Parameters:
  ///   - flags: values given on the command line.
  ///   - environment: the process environment (`TENDER_*`).
  public static func load(flags: [Setting: String], environment: [String: String]) async throws -> SettingSources {
    let flagValues = Dictionary(
      uniqueKeysWithValues: flags.map { setting, value in
        (AbsoluteConfigKey(Self.key(setting)), ConfigValue(.string(value), isSecret: setting.isSecret))
      })
    let secretNames = Set(Setting.all.filter(\.isSecret).map(\.environment))
    var providers: [any ConfigProvider] = [
      InMemoryProvider(name: "flags", values: flagValues),
      EnvironmentVariablesProvider(
        environmentVariables: environment, secretsSpecifier: .dynamic { name, _ in secretNames.contains(name) }
      )
      .prefixKeys(with: ["tender"]),
      InMemoryProvider(name: "variable files", values: try Self.variableFiles(environment)),
    ]
    let setting = Setting.secretsDirectory
    if let folder = flags[setting] ?? environment[setting.environment], !folder.isEmpty {
      var isDirectory: ObjCBool = false
      guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDirectory), isDirectory.boolValue else {
        throw ConfigurationError(setting: setting.label, problem: "folder '\(folder)' does not exist")
      }
      do {
        providers.append(try await DirectoryFilesProvider(directoryPath: FilePath(folder)))
      } catch {
        throw ConfigurationError(setting: setting.label, problem: "folder '\(folder)' cannot be read")
      }
    }
    return SettingSources(reader: ConfigReader(providers: providers))
  }

  private init(reader: ConfigReader) {
    self.reader = reader
  }

  /// The values of secret settings given as `TENDER_*_FILE` variables: each names a file holding
  /// the value (a mounted secret), read once at start, surrounding whitespace trimmed.
  static func variableFiles(_ environment: [String: String]) throws -> [AbsoluteConfigKey: ConfigValue] {
    var values: [AbsoluteConfigKey: ConfigValue] = [:]
    for setting in Setting.all where setting.isSecret {
      guard let path = environment[setting.fileVariable], !path.isEmpty else { continue }
      let label = "\(setting.fileVariable) (\(setting.environment) from a file)"
      if let direct = environment[setting.environment], !direct.isEmpty {
        throw ConfigurationError(
          setting: label, problem: "set either \(setting.environment) or \(setting.fileVariable), not both")
      }
      guard let data = FileManager.default.contents(atPath: path) else {
        throw ConfigurationError(setting: label, problem: "file '\(path)' does not exist or cannot be read")
      }
      guard let text = String(data: data, encoding: .utf8)?.trimmingCharacters(in: .whitespacesAndNewlines) else {
        throw ConfigurationError(setting: label, problem: "file '\(path)' is not UTF-8 text")
      }
      guard !text.isEmpty else { throw ConfigurationError(setting: label, problem: "file '\(path)' is empty") }
      values[AbsoluteConfigKey(Self.key(setting))] = ConfigValue(.string(text), isSecret: true)
    }
    return values
  }

  static func key(_ setting: Setting) -> ConfigKey {
    ConfigKey(setting.flag.split(separator: "-").map(String.init))
  }

  /// The value given for the setting, else its default; nil when neither.
  public func value(_ setting: Setting) -> String? {
    if let given = self.reader.string(forKey: Self.key(setting), isSecret: setting.isSecret), !given.isEmpty {
      return given
    }
    return setting.defaultValue
  }
}

// MARK: - The command line

extension Setting {
  /// The settings given as `--flag value`, `--flag=value` or, for switches, `--flag`. Anything
  /// else is refused with a message for the usage line.
  public static func parseArguments(_ arguments: [String]) throws(Problem) -> [Setting: String] {
    var given: [Setting: String] = [:]
    var index = arguments.startIndex
    while index < arguments.endIndex {
      let argument = arguments[index]
      index += 1
      guard argument.hasPrefix("--") else { throw Problem("unexpected argument '\(argument)'") }
      let body = argument.dropFirst(2)
      let name = body.split(separator: "=", maxSplits: 1).first.map(String.init) ?? ""
      guard let setting = Setting.named(name) else { throw Problem("unknown option '--\(name)'") }
      let value: String
      if let equals = body.firstIndex(of: "=") {
        value = String(body[body.index(after: equals)...])
      } else if setting.isSwitch {
        value = "true"
      } else {
        guard index < arguments.endIndex, !arguments[index].hasPrefix("--") else {
          throw Problem("missing value for '--\(name)'")
        }
        value = arguments[index]
        index += 1
      }
      guard given[setting] == nil else { throw Problem("'--\(name)' is given twice") }
      given[setting] = value
    }
    return given
  }

  /// `--help` of `tender serve`: every setting, its variable and default.
  public static var helpText: String {
    var lines = [
      "Each setting is a flag, or its TENDER_* variable (a secret also TENDER_*_FILE, naming a file that holds it), or a file in --secrets-dir; a flag wins.",
      "",
    ]
    for setting in Self.all {
      let usage = setting.isSwitch ? "--\(setting.flag)" : "--\(setting.flag) <value>"
      var source = "$\(setting.environment)"
      if setting.isSecret { source += " or $\(setting.fileVariable)" }
      switch setting.presence {
      case .defaulted(let value): source += ", default \(value)"
      case .required: source += ", required"
      case .requiredUnless(let condition): source += ", required unless \(condition)"
      case .optional: break
      }
      lines.append("  \(usage)")
      lines += Self.wrap("\(setting.help.replacingOccurrences(of: "`", with: "")) [\(source)]", indent: 8, width: 79)
    }
    return lines.joined(separator: "\n")
  }

  /// Words into lines of at most `width` columns (a longer word gets a line of its own).
  static func wrap(_ text: String, indent: Int, width: Int) -> [String] {
    let margin = String(repeating: " ", count: indent)
    var lines: [String] = []
    var line = ""
    for word in text.split(separator: " ") {
      if !line.isEmpty, indent + line.count + 1 + word.count > width {
        lines.append(margin + line)
        line = ""
      }
      line += line.isEmpty ? String(word) : " " + word
    }
    if !line.isEmpty { lines.append(margin + line) }
    return lines
  }

  /// The README's configuration table.
  public static var markdownTable: String {
    var lines = ["| Environment variable | Flag | Default | Meaning |", "| --- | --- | --- | --- |"]
    for setting in Self.all {
      let value: String
      switch setting.presence {
      case .defaulted(let text): value = "`\(text)`"
      case .required: value = "— (required)"
      case .requiredUnless(let condition): value = "— (required unless `\(condition)`)"
      case .optional: value = "unset"
      }
      let help = setting.help.replacingOccurrences(of: "|", with: "\\|")
      let variable =
        setting.isSecret ? "`\(setting.environment)`, `\(setting.fileVariable)`" : "`\(setting.environment)`"
      lines.append("| \(variable) | `--\(setting.flag)` | \(value) | \(help) |")
    }
    return lines.joined(separator: "\n")
  }
}

// MARK: - Parsers

extension Setting {
  /// A duration as the settings write it, in the largest whole unit (`90s`, `15m`, `72h`, `250ms`).
  public static func format(_ duration: Duration) -> String {
    let milliseconds = duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
    if milliseconds == 0 { return "0s" }
    if milliseconds % 3_600_000 == 0 { return "\(milliseconds / 3_600_000)h" }
    if milliseconds % 60_000 == 0, milliseconds >= 600_000 { return "\(milliseconds / 60_000)m" }
    if milliseconds % 1000 == 0 { return "\(milliseconds / 1000)s" }
    return "\(milliseconds)ms"
  }

  static func format(_ policy: RateLimitPolicy) -> String {
    let perMinute = policy.refillPerSecond * 60
    let rate =
      policy.refillPerSecond < 1 && perMinute == perMinute.rounded()
      ? "\(Int(perMinute))/m"
      : (policy.refillPerSecond == policy.refillPerSecond.rounded()
        ? "\(Int(policy.refillPerSecond))/s" : "\(policy.refillPerSecond)/s")
    return "\(rate),burst=\(policy.capacity)"
  }

  /// Durations are a number with a unit: `250ms`, `30s`, `5m`, `1h`.
  public static func parseDuration(_ text: String, allowZero: Bool) throws(Problem) -> Duration {
    let units: [(String, Int64)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000)]
    for (suffix, milliseconds) in units where text.hasSuffix(suffix) {
      let number = text.dropLast(suffix.count)
      if let value = Int64(number), value >= 0, value <= 1_000_000_000, allowZero || value > 0 {
        return .milliseconds(value * milliseconds)
      }
      break
    }
    throw Problem("'\(text)' must be a \(allowZero ? "" : "positive ")duration such as 250ms, 30s, 5m or 1h")
  }

  static func parseInt(_ text: String, range: ClosedRange<Int>) throws(Problem) -> Int {
    guard let value = Int(text), range.contains(value) else {
      throw Problem("'\(text)' must be a whole number from \(range.lowerBound) to \(range.upperBound)")
    }
    return value
  }

  static func parseBool(_ text: String) throws(Problem) -> Bool {
    switch text.lowercased() {
    case "1", "true", "yes", "on": return true
    case "0", "false", "no", "off": return false
    default: throw Problem("'\(text)' must be true or false")
    }
  }

  /// `RATE/s` or `RATE/m`, optionally `,burst=N` (default: one second's worth, at least 1).
  static func parseRateLimit(_ text: String) throws(Problem) -> RateLimitPolicy {
    let invalid = Problem("'\(text)' must look like 50/s,burst=100 or 30/m,burst=10")
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
      guard parts[1].hasPrefix("burst="), let value = Int(parts[1].dropFirst(6)), (1...1_000_000).contains(value) else {
        throw invalid
      }
      burst = value
    }
    return RateLimitPolicy(capacity: burst, refillPerSecond: perSecond)
  }

  static func parseAddress(_ text: String) throws(Problem) -> (String, Int) {
    var host: Substring
    let portText: Substring
    if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
      host = text[text.index(after: text.startIndex)..<close]
      let rest = text[text.index(after: close)...]
      guard rest.hasPrefix(":") else { throw Problem("'\(text)' must be host:port") }
      portText = rest.dropFirst()
    } else {
      guard let colon = text.lastIndex(of: ":") else { throw Problem("'\(text)' must be host:port") }
      host = text[..<colon]
      portText = text[text.index(after: colon)...]
    }
    if host.isEmpty { host = "0.0.0.0" }
    guard let port = Int(portText), (0...65535).contains(port) else {
      throw Problem("port '\(portText)' must be a number from 0 to 65535")
    }
    return (String(host), port)
  }

  /// `stripe=whsec_a,whsec_b;acme=whsec_c`: provider names of lower-case letters, digits, `-` and
  /// `_`; Standard Webhooks secrets must be `whsec_` and base64. Secrets never appear in errors.
  static func parseWebhookSecrets(_ text: String) throws(Problem) -> [String: [Secret<String>]] {
    var providers: [String: [Secret<String>]] = [:]
    for entry in text.split(separator: ";") {
      let pair = entry.split(separator: "=", maxSplits: 1)
      let name = pair.first.map { String($0).trimmingCharacters(in: .whitespaces) } ?? ""
      guard pair.count == 2, (1...64).contains(name.count),
        name.allSatisfy({ ($0.isLowercase || $0.isNumber || $0 == "-" || $0 == "_") && $0.isASCII })
      else {
        throw Problem("must be PROVIDER=SECRET[,SECRET…] entries separated by ';' (provider names: a-z, 0-9, - and _)")
      }
      let secrets = pair[1].split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }.filter {
        !$0.isEmpty
      }
      guard !secrets.isEmpty else { throw Problem("provider \(name) has no secret") }
      if name != "stripe" {
        for (index, secret) in secrets.enumerated()
        where !secret.hasPrefix("whsec_") || Data(base64Encoded: String(secret.dropFirst(6))) == nil {
          throw Problem("secret \(index + 1) of \(name) is not a Standard Webhooks secret (whsec_ and base64)")
        }
      }
      guard providers[name] == nil else { throw Problem("provider \(name) is named twice") }
      providers[name] = secrets.map { Secret($0) }
    }
    return providers
  }

  static func readFile(_ path: String) throws(Problem) -> [UInt8] {
    guard FileManager.default.fileExists(atPath: path) else { throw Problem("file '\(path)' does not exist") }
    guard let data = FileManager.default.contents(atPath: path) else { throw Problem("file '\(path)' cannot be read") }
    return Array(data)
  }

  static func isLoopback(_ host: String) -> Bool {
    host == "localhost" || host == "::1" || host.hasPrefix("127.")
  }
}

// MARK: - One setting alone

extension Setting {
  /// This setting's value, found and checked as `ServerConfiguration.resolve` would (flag,
  /// variable, secrets folder, default), for commands that need only a few settings.
  public func resolve<Value>(
    _ path: KeyPath<ServerConfiguration, Value>,
    flag: String?,
    environment: [String: String] = ProcessInfo.processInfo.environment
  ) async throws -> Value {
    let sources = try await SettingSources.load(flags: flag.map { [self: $0] } ?? [:], environment: environment)
    guard let text = sources.value(self) else { throw ConfigurationError(setting: self.label, problem: "is required") }
    var resolution = Resolution(configuration: ServerConfiguration())
    for setting in [self] + self.companions {
      guard let text = setting == self ? text : sources.value(setting) else { continue }
      do {
        try setting.apply(text, &resolution)
      } catch let problem as Problem {
        throw ConfigurationError(setting: setting.label, problem: problem.text)
      }
    }
    return resolution.configuration[keyPath: path]
  }

  /// Settings that change this one's value when given (a password replacing its URL's), applied
  /// after it.
  var companions: [Setting] {
    switch self {
    case .databaseURL: [.databasePassword]
    case .redisURL: [.redisPassword]
    default: []
    }
  }
}
