import Crypto
import CryptoExtras
import Foundation
public import NIOPosix
import Synchronization
public import TenderCore

/// A client secret's stored form: scrypt with its parameters and salt, in the PHC string format
/// (`$scrypt$ln=15,r=8,p=1$<salt>$<hash>`, base64 without padding). The parameters travel with each
/// row, so they can be raised later and old rows still verify (and are upgraded on next rotation).
public struct SecretHash: Sendable, Hashable, CustomStringConvertible {
  /// log2 of scrypt's cost parameter N.
  public let logRounds: Int
  public let blockSize: Int
  public let parallelism: Int
  public let salt: [UInt8]
  public let hash: [UInt8]

  public init(logRounds: Int, blockSize: Int, parallelism: Int, salt: [UInt8], hash: [UInt8]) {
    self.logRounds = logRounds
    self.blockSize = blockSize
    self.parallelism = parallelism
    self.salt = salt
    self.hash = hash
  }

  /// The stored text.
  public var encoded: String {
    "$scrypt$ln=\(self.logRounds),r=\(self.blockSize),p=\(self.parallelism)$\(Self.base64(self.salt))$\(Self.base64(self.hash))"
  }

  public var description: String { "SecretHash(scrypt ln=\(self.logRounds) r=\(self.blockSize) p=\(self.parallelism))" }

  /// Parses the stored text; nil when it is not a Tender scrypt hash.
  public init?(encoded: String) {
    let parts = encoded.split(separator: "$", omittingEmptySubsequences: false)
    guard parts.count == 5, parts[0].isEmpty, parts[1] == "scrypt" else { return nil }
    var parameters: [Substring: Int] = [:]
    for pair in parts[2].split(separator: ",") {
      let kv = pair.split(separator: "=", maxSplits: 1)
      guard kv.count == 2, let value = Int(kv[1]) else { return nil }
      parameters[kv[0]] = value
    }
    guard let ln = parameters["ln"], let r = parameters["r"], let p = parameters["p"],
      (1...30).contains(ln), (1...64).contains(r), (1...16).contains(p),
      let salt = Self.unbase64(parts[3]), let hash = Self.unbase64(parts[4]), salt.count >= 16, hash.count >= 16
    else { return nil }
    self.init(logRounds: ln, blockSize: r, parallelism: p, salt: salt, hash: hash)
  }

  private static func base64(_ bytes: [UInt8]) -> String {
    Data(bytes).base64EncodedString().replacingOccurrences(of: "=", with: "")
  }

  private static func unbase64(_ text: Substring) -> [UInt8]? {
    var padded = String(text)
    while padded.count % 4 != 0 { padded += "=" }
    return Data(base64Encoded: padded).map { Array($0) }
  }
}

/// Creates client secrets and checks them against their stored hashes.
///
/// scrypt is deliberately slow (tens of milliseconds, 16 MiB at the defaults), so it runs on
/// NIO's blocking thread pool, never on a Swift concurrency thread.
public struct ClientSecretHasher: Sendable {
  public struct Parameters: Sendable, Hashable {
    public var logRounds: Int
    public var blockSize: Int
    public var parallelism: Int

    public init(logRounds: Int, blockSize: Int, parallelism: Int) {
      self.logRounds = logRounds
      self.blockSize = blockSize
      self.parallelism = parallelism
    }

    /// N = 2^14, r = 8, p = 1: 16 MiB and roughly 50 ms per hash on a server core.
    public static let standard = Parameters(logRounds: 14, blockSize: 8, parallelism: 1)
  }

  public let parameters: Parameters
  private let threadPool: NIOThreadPool
  private let counter = DerivationCounter()
  /// A hash of no real secret with the current parameters, compared against when the client does
  /// not exist, so an unknown client costs the same time as a wrong secret.
  private let decoy: SecretHash

  public init(parameters: Parameters = .standard, threadPool: NIOThreadPool = .singleton) {
    self.parameters = parameters
    self.threadPool = threadPool
    var salt = [UInt8](repeating: 0, count: 16)
    for index in salt.indices { salt[index] = UInt8.random(in: 0...255) }
    self.decoy = SecretHash(
      logRounds: parameters.logRounds,
      blockSize: parameters.blockSize,
      parallelism: parameters.parallelism,
      salt: salt,
      hash: Array(repeating: 0, count: 32)
    )
  }

  /// How many scrypt derivations this hasher has run: the work an attempt costs, whatever its
  /// outcome (an unknown client costs one, like a wrong secret).
  public var derivations: Int { self.counter.value }

  /// A new random secret: `tsk_` and 43 base64url characters (256 bits).
  public static func generateSecret() -> Secret<String> {
    let key = SymmetricKey(size: .bits256)
    let text = key.withUnsafeBytes { Base64URL.encode($0) }
    return Secret("tsk_" + text)
  }

  /// Hashes a secret with a fresh salt and the current parameters.
  public func hash(_ secret: Secret<String>) async throws -> SecretHash {
    var salt = [UInt8](repeating: 0, count: 16)
    SymmetricKey(size: .bits128).withUnsafeBytes { salt = Array($0) }
    let parameters = self.parameters
    let derived = try await self.derive(
      secret, salt: salt, logRounds: parameters.logRounds, blockSize: parameters.blockSize,
      parallelism: parameters.parallelism)
    return SecretHash(
      logRounds: parameters.logRounds, blockSize: parameters.blockSize, parallelism: parameters.parallelism, salt: salt,
      hash: derived)
  }

  /// Whether `secret` matches `stored`; compared in constant time. With `stored` nil (no such
  /// client) the same work is done against a decoy and the answer is false.
  public func verify(_ secret: Secret<String>, against stored: SecretHash?) async throws -> Bool {
    let target = stored ?? self.decoy
    let derived = try await self.derive(
      secret, salt: target.salt, logRounds: target.logRounds, blockSize: target.blockSize,
      parallelism: target.parallelism, length: target.hash.count)
    return Self.constantTimeEquals(derived, target.hash) && stored != nil
  }

  static func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    var difference: UInt8 = 0
    for index in a.indices { difference |= a[index] ^ b[index] }
    return difference == 0
  }

  private func derive(
    _ secret: Secret<String>, salt: [UInt8], logRounds: Int, blockSize: Int, parallelism: Int, length: Int = 32
  ) async throws -> [UInt8] {
    self.counter.increment()
    return try await self.threadPool.runIfActive {
      let key = try KDF.Scrypt.deriveKey(
        from: Array(secret.value.utf8),
        salt: salt,
        outputByteCount: length,
        rounds: 1 << logRounds,
        blockSize: blockSize,
        parallelism: parallelism
      )
      return key.withUnsafeBytes { Array($0) }
    }
  }
}

final class DerivationCounter: Sendable {
  private let count = Atomic<Int>(0)

  var value: Int { self.count.load(ordering: .relaxed) }

  func increment() {
    self.count.add(1, ordering: .relaxed)
  }
}
