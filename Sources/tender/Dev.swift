import ArgumentParser
import Foundation
import Logging
import PostgresNIO
import Synchronization
import TenderAPI
import TenderAuth
import TenderCore
import TenderPostgres
import TenderProviderSim
import TenderServer
import TenderDevSupport
import ServiceLifecycle

struct Dev: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract:
      "Run Tender locally: throwaway PostgreSQL and Redis, dev TLS certificates, migrations, a dev merchant and client, then serve. Ctrl-C stops it all.",
    usage: "tender dev [--state-dir <dir>] [--ephemeral] [--<setting> <value> ...]",
    discussion:
      "Any setting of `tender serve` may be given as a flag (see `tender serve --help`) and wins over the dev set-up's: loopback addresses 127.0.0.1:8443 and 127.0.0.1:8080, the local PostgreSQL and Redis, the dev certificates and key-encryption key, and the provider simulator. The environment is not read, except TENDER_WEBHOOK_SECRETS, added to the simulator's."
  )

  @Option(help: "Folder for the dev database and certificates.")
  var stateDir: String = ".tender/dev"

  /// Any setting of `tender serve`; given ones win over the dev set-up's.
  @OptionGroup var settings: ServeOptions

  @Flag(name: .customLong("without-interceptors"), help: .hidden)
  var withoutInterceptors = false

  @Flag(help: "Remove the dev database when stopping.")
  var ephemeral = false

  func run() async throws {
    Allocator.configure()
    let state = URL(fileURLWithPath: self.stateDir, isDirectory: true).standardizedFileURL
    try FileManager.default.createDirectory(at: state, withIntermediateDirectories: true)

    let tls = try DevCertificateFiles.prepare(in: state.appendingPathComponent("tls"))
    let postgres = try await Self.startPostgres(in: state.appendingPathComponent("postgres"))
    defer {
      if self.ephemeral { postgres.destroy() } else { postgres.stop() }
    }
    let redis = try await LocalRedis.start(
      in: state.appendingPathComponent("redis"), port: try LocalPostgres.freePort())
    defer { redis.destroy() }
    let keyEncryptionKey = try Self.keyEncryptionKey(in: state)
    // The provider simulator runs in this process; the real Stripe connector talks to it over HTTP.
    var simulatorLogger = Logger(label: "tender-provider-sim")
    simulatorLogger.logLevel = .warning
    try await ProviderSimulator.runInBackground(
      configuration: .init(apiKey: Self.simulatorAPIKey, slowDelay: .seconds(30)),
      logger: simulatorLogger
    ) { simulator, simulatorPort in

      var flags: [Setting: String] = [
        .grpcAddress: "127.0.0.1:8443",
        .httpAddress: "127.0.0.1:8080",
        .tlsCert: tls.serverCertificate.path,
        .tlsKey: tls.serverKey.path,
        .databaseURL: postgres.databaseURL,
        .migrate: "true",
        .redisURL: redis.url,
        .keyEncryptionKey: keyEncryptionKey,
        .providerURL: "http://127.0.0.1:\(simulatorPort)",
        .providerAPIKey: Self.simulatorAPIKey,
        // The simulator signs its webhooks with this secret; TENDER_WEBHOOK_SECRETS may add providers.
        .webhookSecrets: [
          "stripe=\(Self.simulatorWebhookSecret)", ProcessInfo.processInfo.environment["TENDER_WEBHOOK_SECRETS"] ?? "",
        ]
        .filter { !$0.isEmpty }.joined(separator: ";"),
        .drainDelay: "0s",
      ]
      flags.merge(try self.settings.given()) { _, given in given }
      let configuration: ServerConfiguration
      do {
        configuration = try await ServerConfiguration.resolve(flags: flags, environment: [:])
      } catch let error as ConfigurationError {
        exitWithConfigurationError(error)
      }
      let logger = makeLogger(level: configuration.logLevel)
      _ = try await migrate(configuration.database, logger: logger)
      let credentials = try await DevClient.prepare(in: state, database: configuration.database, logger: logger)
      let caPath = tls.caCertificate.path
      // Instructions are printed once both listeners are up.
      let ports = DevPorts()
      if self.withoutInterceptors {
        logger.warning(
          "serving without interceptors: no authentication, rate limits, logs, metrics or traces (measurement only)")
      }
      let application = try TenderApplication.build(
        configuration: configuration,
        logger: logger,
        withoutInterceptors: self.withoutInterceptors,
        onListening: { host, port in
          if let httpPort = ports.grpcListening(port) {
            Self.printInstructions(
              host: host, port: port, httpPort: httpPort, caPath: caPath, databaseURL: postgres.databaseURL,
              redisURL: redis.url, credentials: credentials, simulatorPort: simulatorPort)
          }
        },
        onBridgeListening: { httpPort in
          // pm_card_async payments and pending refunds settle by webhook, as with Stripe.
          simulator.sendWebhooks(
            to: "https://127.0.0.1:\(httpPort)/webhooks/stripe", secret: Self.simulatorWebhookSecret,
            trustRoots: (try? Data(contentsOf: tls.caCertificate)).map { Array($0) }
          )
          if let port = ports.bridgeListening(httpPort) {
            Self.printInstructions(
              host: configuration.host, port: port, httpPort: httpPort, caPath: caPath,
              databaseURL: postgres.databaseURL,
              redisURL: redis.url, credentials: credentials, simulatorPort: simulatorPort)
          }
        }
      )
      try await application.serviceGroup.run()
    }
  }

  /// The Stripe webhook secret shared by `tender dev` and its simulator.
  static let simulatorWebhookSecret = "whsec_tender_dev"

  /// Starts the dev cluster on the port it used before, or a free one the first time.
  static func startPostgres(in directory: URL) async throws -> LocalPostgres {
    let portFile = directory.appendingPathComponent("port")
    let port: Int
    if let text = try? String(contentsOf: portFile, encoding: .utf8),
      let saved = Int(text.trimmingCharacters(in: .whitespacesAndNewlines))
    {
      port = saved
    } else {
      port = try LocalPostgres.freePort()
      try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
      try "\(port)\n".write(to: portFile, atomically: true, encoding: .utf8)
    }
    return try await LocalPostgres.start(in: directory, port: port)
  }

  static let simulatorAPIKey = "sk_test_tender_dev"

  /// The dev key-encryption key, made once and kept (mode 0600) in the state folder.
  static func keyEncryptionKey(in state: URL) throws -> String {
    let file = state.appendingPathComponent("key-encryption-key")
    if let text = try? String(contentsOf: file, encoding: .utf8) {
      return text.trimmingCharacters(in: .whitespacesAndNewlines)
    }
    let key = KeyEncryptionKey.generateBase64().value
    try (key + "\n").write(to: file, atomically: true, encoding: .utf8)
    try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: file.path)
    return key
  }

  static func printInstructions(
    host: String, port: Int, httpPort: Int, caPath: String, databaseURL: String, redisURL: String,
    credentials: DevClient, simulatorPort: Int
  ) {
    let target = "localhost:\(port)"
    let text = """

      Tender is serving gRPC over TLS on \(host):\(port) (dev CA: \(caPath)).
      Database: \(databaseURL)
      Redis:    \(redisURL)

      Dev merchant \(credentials.merchantID), dev client (every scope; kept in \(credentials.file)):
        client_id:     \(credentials.clientID)
        client_secret: \(credentials.clientSecret)

      Get a token and call an authenticated RPC with grpcurl (server reflection is on):
        TOKEN=$(grpcurl -cacert \(caPath) -d '{"client_id":"\(credentials.clientID)","client_secret":"\(credentials.clientSecret)"}' \\
          \(target) tender.auth.v1.AuthService/IssueToken | python3 -c 'import json,sys; print(json.load(sys.stdin)["accessToken"])')
        grpcurl -cacert \(caPath) -H "authorization: Bearer $TOKEN" -d "{\\"token\\":\\"$TOKEN\\"}" \\
          \(target) tender.auth.v1.AuthService/IntrospectToken

      Create a payment (the provider simulator answers; pm_card_chargeDeclined declines):
        grpcurl -cacert \(caPath) -H "authorization: Bearer $TOKEN" -H "idempotency-key: order-1" \\
          -d '{"amount":{"amount_minor":1250,"currency":"EUR"},"payment_method_token":"pm_card_visa","capture_method":"CAPTURE_METHOD_MANUAL"}' \\
          \(target) tender.payments.v1.PaymentService/CreatePayment
      Capture it, then refund part (use the payment_id it printed):
        grpcurl -cacert \(caPath) -H "authorization: Bearer $TOKEN" -H "idempotency-key: capture-1" \\
          -d '{"payment_id":"PAYMENT_ID"}' \(target) tender.payments.v1.PaymentService/CapturePayment
        grpcurl -cacert \(caPath) -H "authorization: Bearer $TOKEN" -H "idempotency-key: refund-1" \\
          -d '{"payment_id":"PAYMENT_ID","amount_minor":250}' \(target) tender.refunds.v1.RefundService/CreateRefund

      Or from Python (pip install ./clients/python):
        from tender_client import Credentials, TenderClient
        with TenderClient("\(target)", Credentials.from_file("\(credentials.file)"), ca_file="\(caPath)") as tender:
            payment = tender.create_payment(1250, "EUR", "pm_card_visa", capture="manual")
            print(tender.capture_payment(payment.payment_id))

      Health, metrics and the JWKS over HTTPS:
        curl --cacert \(caPath) https://localhost:\(httpPort)/readyz
        curl --cacert \(caPath) https://localhost:\(httpPort)/metrics
        curl --cacert \(caPath) https://localhost:\(httpPort)/.well-known/jwks.json

      Make the provider misbehave (the simulator on port \(simulatorPort); GET /_sim/requests lists what it got):
        curl -X POST http://127.0.0.1:\(simulatorPort)/_sim/faults -d '{"kind":"accept_then_drop","operation":"create_payment","times":1}'
        curl -X POST http://127.0.0.1:\(simulatorPort)/_sim/faults -d '{"kind":"answer","status":429,"retryAfterSeconds":1,"times":2}'
        curl -X POST 'http://127.0.0.1:\(simulatorPort)/_sim/refuse?seconds=30'
        curl -X DELETE http://127.0.0.1:\(simulatorPort)/_sim/faults

      Ctrl-C stops the server, the database and Redis.

      """
    FileHandle.standardOutput.write(Data(text.utf8))
  }
}

/// The dev merchant and its client. The secret is kept in the state folder (mode 0600) so a
/// restarted `tender dev` prints the same working credentials.
struct DevClient: Sendable, Codable {
  static let merchant = "mer_dev"

  var merchantID: String
  var clientID: String
  var clientSecret: String
  var file: String = ""

  static func prepare(in state: URL, database: PostgresClient.Configuration, logger: Logger) async throws -> DevClient {
    let file = state.appendingPathComponent("dev-client.json")
    let saved = (try? Data(contentsOf: file)).flatMap { try? JSONDecoder().decode(DevClient.self, from: $0) }
    let scopes = Array(Set(MethodPolicies.all.compactMap(\.requiredScope))).sorted()
    var client = try await withAuthStore(database, logger: logger) { store -> DevClient in
      try await store.ensureMerchant(id: Self.merchant, displayName: "Dev merchant")
      if let saved, let existing = try await store.client(id: saved.clientID), existing.status == .active,
        let hash = SecretHash(encoded: existing.secretHash),
        try await ClientSecretHasher().verify(Secret(saved.clientSecret), against: hash)
      {
        return saved
      }
      let (record, secret) = try await ClientRegistry(store: store, hasher: ClientSecretHasher(), cache: nil)
        .create(merchantID: Self.merchant, scopes: scopes, displayName: "tender dev")
      return DevClient(merchantID: record.merchantID, clientID: record.clientID, clientSecret: secret.value)
    }
    client.file = file.path
    try JSONEncoder().encode(client).write(to: file)
    try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: file.path)
    return client
  }
}

/// Remembers which listener came up first, so the instructions print once with both ports.
final class DevPorts: Sendable {
  private let ports = Mutex<(grpc: Int?, http: Int?)>((nil, nil))

  /// Returns the HTTP port if the bridge is already listening.
  func grpcListening(_ port: Int) -> Int? {
    self.ports.withLock { ports in
      ports.grpc = port
      return ports.http
    }
  }

  /// Returns the gRPC port if the gRPC server is already listening.
  func bridgeListening(_ port: Int) -> Int? {
    self.ports.withLock { ports in
      ports.http = port
      return ports.grpc
    }
  }
}
