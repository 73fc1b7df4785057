public import Foundation
public import Logging
public import PostgresNIO
import Subprocess
import SystemPackage
import TenderPostgres

/// The `tender` executable built beside the test bundle, run as a child process.
public enum TenderExecutable {
  public struct Outcome: Sendable {
    public let status: Int32
    public let standardOutput: String
    public let standardError: String
  }

  /// Path of `tender` in the build folder the tests run from.
  public static var path: String {
    let testBinary = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
    return testBinary.deletingLastPathComponent().appendingPathComponent("tender").path
  }

  /// Runs `tender` with `arguments` and only `environment` (plus PATH), waiting for it to exit.
  public static func run(_ arguments: [String], environment: [String: String] = [:]) async throws -> Outcome {
    var variables = environment
    variables["PATH"] = ProcessInfo.processInfo.environment["PATH"]
    let result = try await Subprocess.run(
      .path(FilePath(self.path)),
      arguments: Arguments(arguments),
      environment: .custom(
        Dictionary(
          uniqueKeysWithValues: variables.compactMap { name, value in
            Environment.Key(rawValue: name).map { ($0, value) }
          })),
      output: .string(limit: 4 << 20),
      error: .string(limit: 4 << 20)
    )
    let status: Int32
    switch result.terminationStatus {
    case .exited(let code): status = code
    case .signaled(let signal): status = 128 + signal
    }
    return Outcome(
      status: status, standardOutput: result.standardOutput ?? "", standardError: result.standardError ?? "")
  }
}

/// Runs `body` with a connection pool to `url` that is running for the duration.
public func withPostgresClient<Result: Sendable>(
  _ url: String,
  _ body: (PostgresClient) async throws -> Result
) async throws -> Result {
  var logger = Logger(label: "tender.test.postgres")
  // A lease may come before `run()` has started (a warning, not an error; the lease waits).
  logger.logLevel = .error
  let client = PostgresClient(configuration: try DatabaseURL.configuration(from: url), backgroundLogger: logger)
  return try await withThrowingTaskGroup(of: Void.self) { group in
    group.addTask { await client.run() }
    defer { group.cancelAll() }
    return try await body(client)
  }
}
