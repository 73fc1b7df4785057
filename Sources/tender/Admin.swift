import ArgumentParser
import Foundation
import Logging
import PostgresNIO
import TenderAuth
import TenderCore
import TenderPostgres
import TenderServer

/// Connection settings shared by the administrative commands.
struct DatabaseOptions: ParsableArguments {
  @Option(name: .customLong("database-url"), help: "\(Setting.databaseURL.help) [$TENDER_DATABASE_URL]")
  var databaseURL: String?

  func configuration() async -> PostgresClient.Configuration {
    await Setting.databaseURL.resolveOrExit(\.database, flag: self.databaseURL)
  }
}

extension Setting {
  /// This setting's value for an administrative command; one that cannot be used ends the
  /// command with the one-line message and exit 78, as `tender serve` would.
  func resolveOrExit<Value>(_ path: KeyPath<ServerConfiguration, Value>, flag: String?) async -> Value {
    do {
      return try await self.resolve(path, flag: flag)
    } catch let error as ConfigurationError {
      exitWithConfigurationError(error)
    } catch {
      exitWithConfigurationError(ConfigurationError(setting: self.label, problem: "\(error)"))
    }
  }
}

/// The scrypt cost of the secrets a command hashes (`tender serve`'s setting).
struct SecretCostOption: ParsableArguments {
  @Option(
    name: .customLong("client-secret-cost"), help: "\(Setting.clientSecretCost.help) [$TENDER_CLIENT_SECRET_COST]")
  var cost: String?

  func hasher() async -> ClientSecretHasher {
    ClientSecretHasher(parameters: await Setting.clientSecretCost.resolveOrExit(\.secretHashing, flag: self.cost))
  }
}

/// Runs `body` with the auth store on a pool that lives only as long as the command.
func withAuthStore<Result: Sendable>(
  _ database: PostgresClient.Configuration,
  logger: Logger,
  _ body: @Sendable (PostgresAuthStore) async throws -> Result
) async throws -> Result {
  let client = PostgresClient(configuration: database, backgroundLogger: logger)
  return try await withThrowingTaskGroup(of: Result?.self) { group in
    group.addTask {
      await client.run()
      return nil
    }
    defer { group.cancelAll() }
    return try await body(PostgresAuthStore(client: client, logger: logger))
  }
}

/// Writes to standard output at once (stdout to a pipe is block-buffered).
func printNow(_ text: String) {
  FileHandle.standardOutput.write(Data((text + "\n").utf8))
}

struct Merchant: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Manage merchants (tenants).",
    subcommands: [Create.self]
  )

  struct Create: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create a merchant unless it exists.")

    @OptionGroup var database: DatabaseOptions
    @Option(help: "Merchant id: mer_ followed by 1 to 64 letters or digits.")
    var id: String
    @Option(help: "Display name.")
    var name: String

    func run() async throws {
      guard ClientRegistry.isMerchantID(self.id) else {
        throw ValidationError("--id must be mer_ followed by 1 to 64 letters or digits")
      }
      guard (1...200).contains(self.name.count) else { throw ValidationError("--name must be 1 to 200 characters") }
      let logger = makeLogger(level: .warning)
      let (id, name) = (self.id, self.name)
      try await withAuthStore(self.database.configuration(), logger: logger) { store in
        try await store.ensureMerchant(id: id, displayName: name)
      }
      printNow("merchant_id: \(id)")
    }
  }
}

struct Client: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Manage API clients. Secrets are printed once and stored only as hashes.",
    subcommands: [Create.self, RotateSecret.self, Disable.self, Enable.self]
  )

  struct Create: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Create a client of a merchant; prints its id and secret once.")

    @OptionGroup var database: DatabaseOptions
    @OptionGroup var secretCost: SecretCostOption
    @Option(help: "The merchant the client acts for.")
    var merchant: String
    @Option(help: "Comma-separated scopes, e.g. payments:read,payments:write.")
    var scopes: String
    @Option(name: .customLong("display-name"), help: "A name for people.")
    var displayName: String = ""

    func run() async throws {
      let logger = makeLogger(level: .warning)
      let scopes = self.scopes.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter {
        !$0.isEmpty
      }
      let (merchant, displayName) = (self.merchant, self.displayName)
      let hasher = await self.secretCost.hasher()
      do {
        let (record, secret) = try await withAuthStore(self.database.configuration(), logger: logger) { store in
          try await ClientRegistry(store: store, hasher: hasher, cache: nil)
            .create(merchantID: merchant, scopes: scopes, displayName: displayName)
        }
        printNow("client_id:     \(record.clientID)")
        printNow("client_secret: \(secret.value)")
        printNow("merchant_id:   \(record.merchantID)")
        printNow("scopes:        \(record.scopes.joined(separator: " "))")
        printNow("The secret is shown only this once; store it now.")
      } catch let error as ClientRequestError {
        throw ValidationError(Self.describe(error))
      } catch AuthStoreError.unknownMerchant {
        throw ValidationError("no active merchant \(merchant) (create it with `tender merchant create`)")
      }
    }

    static func describe(_ error: ClientRequestError) -> String {
      switch error {
      case .invalidMerchantID: return "--merchant must be mer_ followed by 1 to 64 letters or digits"
      case .noScopes: return "--scopes needs at least one scope"
      case .invalidScope(let scope):
        return "--scopes: '\(scope)' is not a scope name (lowercase letters, digits, ':', '_', '.')"
      case .displayNameTooLong: return "--display-name is longer than 200 bytes (UTF-8)"
      case .displayNameControlCharacters: return "--display-name must not contain control characters"
      case .displayNameCardData:
        return "--display-name looks like it holds a card number; Tender never stores card data"
      }
    }
  }

  struct RotateSecret: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "rotate-secret",
      abstract: "Replace a client's secret; the old one stops working at once. Prints the new secret once."
    )

    @OptionGroup var database: DatabaseOptions
    @OptionGroup var secretCost: SecretCostOption
    @Option(name: .customLong("client-id"))
    var clientID: String

    func run() async throws {
      let logger = makeLogger(level: .warning)
      let clientID = self.clientID
      let hasher = await self.secretCost.hasher()
      do {
        let (_, secret) = try await withAuthStore(self.database.configuration(), logger: logger) { store in
          try await ClientRegistry(store: store, hasher: hasher, cache: nil).rotateSecret(
            clientID: clientID)
        }
        printNow("client_id:     \(clientID)")
        printNow("client_secret: \(secret.value)")
        printNow("The secret is shown only this once; store it now.")
      } catch AuthStoreError.unknownClient {
        throw ValidationError("no client \(clientID)")
      }
    }
  }

  struct Disable: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract:
        "Disable a client: no new tokens, and its current tokens stop working (within the standing cache's 30 s).")

    @OptionGroup var database: DatabaseOptions
    @Option(name: .customLong("client-id"))
    var clientID: String

    func run() async throws {
      try await setStatus(.disabled, clientID: self.clientID, database: self.database)
    }
  }

  struct Enable: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Enable a disabled client again.")

    @OptionGroup var database: DatabaseOptions
    @Option(name: .customLong("client-id"))
    var clientID: String

    func run() async throws {
      try await setStatus(.active, clientID: self.clientID, database: self.database)
    }
  }

  static func setStatus(_ status: ClientRecord.Status, clientID: String, database: DatabaseOptions) async throws {
    let logger = makeLogger(level: .warning)
    do {
      _ = try await withAuthStore(database.configuration(), logger: logger) { store in
        try await store.setStatus(clientID: clientID, status: status)
      }
      printNow("client \(clientID): \(status.rawValue)")
    } catch AuthStoreError.unknownClient {
      throw ValidationError("no client \(clientID)")
    }
  }
}

struct Key: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Manage the keys that sign access tokens.",
    subcommands: [Rotate.self, List.self, Remove.self]
  )

  struct KeyOptions: ParsableArguments {
    @OptionGroup var database: DatabaseOptions
    @Option(
      name: .customLong("key-encryption-key"), help: "\(Setting.keyEncryptionKey.help) [$TENDER_KEY_ENCRYPTION_KEY]")
    var keyEncryptionKey: String?
    @Option(
      name: .customLong("token-lifetime"), help: "The servers' token lifetime: how long a retired key keeps verifying.")
    var tokenLifetime: String?

    func keyRing(store: any AuthStore, logger: Logger) async -> KeyRing {
      let key: KeyEncryptionKey
      let lifetime: Duration
      do {
        key = try await Setting.keyEncryptionKey.resolve(\.keyEncryptionKey, flag: self.keyEncryptionKey)
        lifetime = try await Setting.tokenLifetime.resolve(\.tokenLifetime, flag: self.tokenLifetime)
      } catch let error as ConfigurationError {
        exitWithConfigurationError(error)
      } catch {
        exitWithConfigurationError(ConfigurationError(setting: Setting.keyEncryptionKey.label, problem: "\(error)"))
      }
      return KeyRing(
        store: store, encryptionKey: key, tokenLifetime: lifetime, leeway: .seconds(30), refreshInterval: .seconds(1),
        logger: logger)
    }
  }

  struct Rotate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract:
        "Make a new signing key active. The previous key is retired: tokens it signed stay valid until they expire, and it stays in the JWKS until then."
    )

    @OptionGroup var options: KeyOptions

    func run() async throws {
      let logger = makeLogger(level: .warning)
      let options = self.options
      let keyID = try await withAuthStore(options.database.configuration(), logger: logger) { store in
        let ring = await options.keyRing(store: store, logger: logger)
        try await ring.prepare()
        return try await ring.rotate()
      }
      printNow("active key: \(keyID) (servers pick it up within their key refresh interval)")
    }
  }

  struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "List signing keys: id, algorithm, state, created, retired.")

    @OptionGroup var database: DatabaseOptions

    func run() async throws {
      let logger = makeLogger(level: .warning)
      let keys = try await withAuthStore(self.database.configuration(), logger: logger) { store in
        try await store.signingKeys()
      }
      let formatter = ISO8601DateFormatter()
      for key in keys {
        printNow(
          "\(key.keyID)\t\(key.algorithm)\t\(key.state.rawValue)\t\(formatter.string(from: key.createTime))\t\(key.retireTime.map(formatter.string(from:)) ?? "-")"
        )
      }
    }
  }

  struct Remove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Delete a retired signing key (e.g. one that leaked): every token it signed is rejected from then on."
    )

    @OptionGroup var database: DatabaseOptions
    @Option(name: .customLong("key-id"))
    var keyID: String

    func run() async throws {
      let logger = makeLogger(level: .warning)
      let keyID = self.keyID
      // One connection pool for the check and the removal.
      let state = try await withAuthStore(self.database.configuration(), logger: logger) {
        store -> SigningKeyRecord.State? in
        guard let key = try await store.signingKeys().first(where: { $0.keyID == keyID }) else { return nil }
        if key.state == .retired { _ = try await store.removeKey(id: keyID) }
        return key.state
      }
      guard let state else { throw ValidationError("no signing key \(keyID)") }
      guard state == .retired else { throw ValidationError("\(keyID) is the active key: rotate first, then remove it") }
      printNow("removed key: \(keyID)")
    }
  }
}
