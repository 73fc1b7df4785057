import Crypto
import Foundation
import Logging
import PostgresNIO
import TenderCore
import TenderRedis
import TenderServer
import TenderTesting
import TenderAuth
import Testing

@Suite("Settings: one table for flags, variables, files, help and the README")
struct SettingsTests {
  static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()

  /// The settings every server needs, for resolving the rest.
  static func required(_ certificates: TestCertificates) -> [Setting: String] {
    [
      .tlsCert: certificates.serverCertificatePath,
      .tlsKey: certificates.serverKeyPath,
      .databaseURL: "postgres://tender@127.0.0.1:5432/tender",
      .redisURL: "redis://127.0.0.1:6379",
      .keyEncryptionKey: TestServer.keyEncryptionKey,
      .providerAPIKey: "sk_test_flag",
    ]
  }

  @Test("The README's configuration table is the settings table (regenerate: tender serve --print-settings-table)")
  func readmeTable() throws {
    let readme = try String(contentsOf: Self.packageRoot.appendingPathComponent("README.md"), encoding: .utf8)
    let lines = readme.split(separator: "\n", omittingEmptySubsequences: false)
    let start = try #require(lines.firstIndex { $0.hasPrefix("| Environment variable | Flag |") })
    let table = lines[start...].prefix { $0.hasPrefix("|") }.joined(separator: "\n")
    #expect(table == Setting.markdownTable)
  }

  @Test("Flags, variables and names are unique and follow from the flag")
  func unique() {
    #expect(Set(Setting.all.map(\.flag)).count == Setting.all.count)
    #expect(Set(Setting.all.map(\.environment)).count == Setting.all.count)
    #expect(Setting.tlsClientCA.environment == "TENDER_TLS_CLIENT_CA")
    #expect(Setting.named("rate-limit-on-redis-failure") == .rateLimitOnRedisFailure)
    #expect(Setting.named("no-such-setting") == nil)
  }

  @Test("--help lists every setting with its variable")
  func help() async throws {
    let outcome = try await TenderExecutable.run(["serve", "--help"])
    #expect(outcome.status == 0)
    for setting in Setting.all {
      #expect(outcome.standardOutput.contains("--\(setting.flag)"), "\(setting.flag)")
      #expect(outcome.standardOutput.contains("$\(setting.environment)"), "\(setting.environment)")
    }
  }

  @Test("Command lines: --flag value, --flag=value and bare switches; anything else refused")
  func commandLine() throws {
    let given = try Setting.parseArguments([
      "--grpc-address", "127.0.0.1:1", "--log-level=debug", "--insecure", "--rate-limit", "5/s,burst=9",
    ])
    #expect(given == [.grpcAddress: "127.0.0.1:1", .logLevel: "debug", .insecure: "true", .rateLimit: "5/s,burst=9"])
    let refusals: [([String], String)] = [
      (["--grpc-adress", "x"], "unknown option '--grpc-adress'"),
      (["--grpc-address"], "missing value for '--grpc-address'"),
      (["--grpc-address", "--insecure"], "missing value for '--grpc-address'"),
      (["stray"], "unexpected argument 'stray'"),
      (["--log-level", "info", "--log-level=debug"], "'--log-level' is given twice"),
    ]
    for (arguments, text) in refusals {
      #expect(throws: Setting.Problem.self, "\(arguments)") { try Setting.parseArguments(arguments) }
      do {
        _ = try Setting.parseArguments(arguments)
      } catch {
        #expect(error.text == text)
      }
    }
  }

  @Test("An unknown flag exits 64 with the usage line and starts nothing")
  func unknownFlag() async throws {
    let outcome = try await TenderExecutable.run(["serve", "--grpc-adress", "127.0.0.1:0"])
    #expect(outcome.status == 64)
    #expect(outcome.standardError.contains("unknown option '--grpc-adress'"))
  }

  @Test("Defaults are the documented ones")
  func defaults() async throws {
    let configuration = try await ServerConfiguration.resolve(
      flags: Self.required(try TestCertificates.make()), environment: [:])
    #expect(configuration.host == "0.0.0.0" && configuration.port == 8443)
    #expect(configuration.httpHost == "0.0.0.0" && configuration.httpPort == 8080)
    #expect(configuration.databaseWriteLanes == 2 && configuration.databaseWriteStall == .milliseconds(20))
    #expect(configuration.maxConcurrentStreams == 100)
    #expect(configuration.maxRequestMessageBytes == 4_194_304)
    #expect(configuration.defaultDeadline == .seconds(30))
    #expect(configuration.maxConnectionAge == .seconds(1800))
    #expect(configuration.drainDelay == .zero)
    #expect(configuration.migrateOnStart == false)
    #expect(configuration.redisKeyPrefix == "tender:")
    #expect(configuration.tokenLifetime == .seconds(900))
    #expect(configuration.secretHashing == .standard && configuration.secretHashing.logRounds == 14)
    #expect(configuration.clientRateLimit == .init(capacity: 100, refillPerSecond: 50))
    #expect(configuration.issueTokenRateLimit == .init(capacity: 10, refillPerSecond: 0.5))
    #expect(configuration.rateLimitFailureMode == .open)
    #expect(configuration.providerURL == "https://api.stripe.com")
    #expect(
      configuration.providerTimeout == .seconds(10) && configuration.providerAttempts == 3
        && configuration.providerMaxBackoff == .seconds(2) && configuration.providerConnections == 64)
    #expect(configuration.idempotencyLock == .seconds(60) && configuration.providerBudget == .seconds(34))
    #expect(configuration.settlementGiveUpAfter == .seconds(72 * 3600))
    #expect(configuration.webhookSecrets.isEmpty)
    #expect(configuration.webhookMaxBodyBytes == 1 << 20)
    #expect(configuration.otlpEndpoint == nil)
    #expect(configuration.logLevel == .info)
    #expect(configuration.redis.host == "127.0.0.1" && configuration.redis.port == 6379)
    guard case .tls(_, _, let clientCA) = configuration.transport else {
      Issue.record("not TLS")
      return
    }
    #expect(clientCA == nil)
  }

  @Test("A flag wins over its variable, a variable over a file in the secrets folder, a file over the default")
  func precedence() async throws {
    let certificates = try TestCertificates.make()
    let folder = certificates.directory.appendingPathComponent("secrets", isDirectory: true)
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    try "sk_test_file\n".write(to: folder.appendingPathComponent("provider-api-key"), atomically: true, encoding: .utf8)
    try "stripe=whsec_from_file\n".write(
      to: folder.appendingPathComponent("webhook-secrets"), atomically: true, encoding: .utf8)
    try "7s".write(to: folder.appendingPathComponent("provider-timeout"), atomically: true, encoding: .utf8)
    try "warning".write(to: folder.appendingPathComponent("log-level"), atomically: true, encoding: .utf8)
    var flags = Self.required(certificates)
    flags[.providerAPIKey] = nil
    flags[.logLevel] = "error"
    let configuration = try await ServerConfiguration.resolve(
      flags: flags,
      environment: [
        "TENDER_SECRETS_DIR": folder.path, "TENDER_PROVIDER_TIMEOUT": "3s", "TENDER_LOG_LEVEL": "debug",
        "TENDER_TOKEN_ISSUER": "",
      ]
    )
    #expect(configuration.providerAPIKey.value == "sk_test_file")
    #expect(configuration.webhookSecrets["stripe"]?.map(\.value) == ["whsec_from_file"])
    #expect(configuration.providerTimeout == .seconds(3))
    #expect(configuration.logLevel == .error)
    // An empty variable counts as unset.
    #expect(configuration.tokenIssuer == "tender")
  }

  @Test("A secret's TENDER_*_FILE variable names a file holding it; the passwords replace the URLs'")
  func secretsFromVariableFiles() async throws {
    let certificates = try TestCertificates.make()
    let folder = certificates.directory.appendingPathComponent("mounted", isDirectory: true)
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    let files: [String: String] = [
      "kek": TestServer.keyEncryptionKey + "\n", "api-key": "  sk_test_from_file\n", "db-password": "pg pass\n",
      "redis-password": "redis-secret",
    ]
    for (name, text) in files {
      try text.write(to: folder.appendingPathComponent(name), atomically: true, encoding: .utf8)
    }
    var flags = Self.required(certificates)
    flags[.keyEncryptionKey] = nil
    flags[.providerAPIKey] = nil
    flags[.databaseURL] = "postgres://tender:url-password@db.internal:5432/tender"
    let configuration = try await ServerConfiguration.resolve(
      flags: flags,
      environment: [
        "TENDER_KEY_ENCRYPTION_KEY_FILE": folder.appendingPathComponent("kek").path,
        "TENDER_PROVIDER_API_KEY_FILE": folder.appendingPathComponent("api-key").path,
        "TENDER_DATABASE_PASSWORD_FILE": folder.appendingPathComponent("db-password").path,
        "TENDER_REDIS_PASSWORD_FILE": folder.appendingPathComponent("redis-password").path,
      ]
    )
    #expect(configuration.providerAPIKey.value == "sk_test_from_file")
    #expect(configuration.database.password == "pg pass")
    #expect(configuration.database.username == "tender")
    #expect(configuration.redis.password?.value == "redis-secret")
    // tender migrate and tender admin resolve the database alone, with its password.
    let database = try await Setting.databaseURL.resolve(
      \.database, flag: "postgres://tender@db.internal/tender",
      environment: ["TENDER_DATABASE_PASSWORD_FILE": folder.appendingPathComponent("db-password").path])
    #expect(database.password == "pg pass")
    // The same key as given directly (the file's newline is not part of it).
    let direct = try await ServerConfiguration.resolve(flags: Self.required(certificates), environment: [:])
    #expect(
      configuration.keyEncryptionKey.derivedKey(purpose: "test") == direct.keyEncryptionKey.derivedKey(purpose: "test"))
  }

  @Test(
    "A TENDER_*_FILE that is missing, empty, or given beside its variable is refused, naming the variable and not the secret"
  )
  func badVariableFiles() async throws {
    let certificates = try TestCertificates.make()
    let empty = certificates.directory.appendingPathComponent("empty")
    try "\n".write(to: empty, atomically: true, encoding: .utf8)
    let present = certificates.directory.appendingPathComponent("present")
    try "sk_live_do_not_echo".write(to: present, atomically: true, encoding: .utf8)
    let cases: [([String: String], String)] = [
      (
        ["TENDER_PROVIDER_API_KEY_FILE": "/nonexistent/api-key"],
        "file '/nonexistent/api-key' does not exist or cannot be read"
      ),
      (["TENDER_PROVIDER_API_KEY_FILE": empty.path], "file '\(empty.path)' is empty"),
      (
        ["TENDER_PROVIDER_API_KEY_FILE": present.path, "TENDER_PROVIDER_API_KEY": "sk_live_also_secret"],
        "set either TENDER_PROVIDER_API_KEY or TENDER_PROVIDER_API_KEY_FILE, not both"
      ),
    ]
    var flags = Self.required(certificates)
    flags[.providerAPIKey] = nil
    for (environment, problem) in cases {
      do {
        _ = try await ServerConfiguration.resolve(flags: flags, environment: environment)
        Issue.record("resolved with \(environment.keys.sorted())")
      } catch let error as ConfigurationError {
        #expect(error.setting == "TENDER_PROVIDER_API_KEY_FILE (TENDER_PROVIDER_API_KEY from a file)")
        #expect(error.problem == problem)
        #expect(!error.description.contains("sk_live"))
      }
    }
  }

  @Test("A secrets folder that does not exist is refused, naming the setting")
  func missingSecretsFolder() async throws {
    var flags = Self.required(try TestCertificates.make())
    flags[.secretsDirectory] = "/nonexistent/tender-secrets"
    await #expect(throws: ConfigurationError.self) {
      try await ServerConfiguration.resolve(flags: flags, environment: [:])
    }
    do {
      _ = try await ServerConfiguration.resolve(flags: flags, environment: [:])
    } catch let error as ConfigurationError {
      #expect(error.setting == "TENDER_SECRETS_DIR (--secrets-dir)")
      #expect(error.problem == "folder '/nonexistent/tender-secrets' does not exist")
    }
  }

  @Test("A secret from a file that cannot be used is refused without echoing it")
  func badSecretFromFile() async throws {
    let certificates = try TestCertificates.make()
    let folder = certificates.directory.appendingPathComponent("secrets", isDirectory: true)
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    try "c2VjcmV0LWJ1dC1zaG9ydA==".write(
      to: folder.appendingPathComponent("key-encryption-key"), atomically: true, encoding: .utf8)
    var flags = Self.required(certificates)
    flags[.keyEncryptionKey] = nil
    flags[.secretsDirectory] = folder.path
    do {
      _ = try await ServerConfiguration.resolve(flags: flags, environment: [:])
      Issue.record("resolved")
    } catch let error as ConfigurationError {
      #expect(error.setting == Setting.keyEncryptionKey.label)
      #expect(!error.description.contains("c2VjcmV0LWJ1dC1zaG9ydA"))
    }
  }

  @Test("Durations print in the largest whole unit and parse back")
  func durations() throws {
    let cases: [(Duration, String)] = [
      (.zero, "0s"), (.milliseconds(250), "250ms"), (.seconds(34), "34s"), (.seconds(300), "300s"),
      (.seconds(900), "15m"), (.seconds(7200), "2h"),
    ]
    for (duration, text) in cases {
      #expect(Setting.format(duration) == text)
      #expect(try Setting.parseDuration(text, allowZero: true) == duration)
    }
  }
}
