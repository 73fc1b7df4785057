public import Foundation
public import Logging
public import PostgresNIO
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
    // Output goes to files, not pipes: reading a pipe to its end would block a thread until every
    // process that inherited it (a database server started meanwhile, say) has exited.
    let scratch = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("tender-run-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: scratch) }
    let outputURL = scratch.appendingPathComponent("stdout")
    let errorURL = scratch.appendingPathComponent("stderr")
    FileManager.default.createFile(atPath: outputURL.path, contents: nil)
    FileManager.default.createFile(atPath: errorURL.path, contents: nil)

    let process = Process()
    process.executableURL = URL(fileURLWithPath: self.path)
    process.arguments = arguments
    var env = environment
    env["PATH"] = ProcessInfo.processInfo.environment["PATH"]
    process.environment = env
    let output = try FileHandle(forWritingTo: outputURL)
    let errors = try FileHandle(forWritingTo: errorURL)
    defer {
      try? output.close()
      try? errors.close()
    }
    process.standardOutput = output
    process.standardError = errors
    process.standardInput = FileHandle.nullDevice
    try process.run()
    while process.isRunning {
      try await Task.sleep(for: .milliseconds(10))
    }
    return Outcome(
      status: process.terminationStatus,
      standardOutput: (try? String(contentsOf: outputURL, encoding: .utf8)) ?? "",
      standardError: (try? String(contentsOf: errorURL, encoding: .utf8)) ?? ""
    )
  }
}

/// Runs `body` with a connection pool to `url` that is running for the duration.
public func withPostgresClient<Result: Sendable>(
  _ url: String,
  _ body: (PostgresClient) async throws -> Result
) async throws -> Result {
  let client = PostgresClient(configuration: try DatabaseURL.configuration(from: url), backgroundLogger: Logger(label: "tender.test.postgres"))
  return try await withThrowingTaskGroup(of: Void.self) { group in
    group.addTask { await client.run() }
    defer { group.cancelAll() }
    return try await body(client)
  }
}
