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
    flags[.logLevel] = self.logLevel
    return flags
  }
}
