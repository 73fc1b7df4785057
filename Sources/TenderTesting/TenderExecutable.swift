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
    let process = Process()
    process.executableURL = URL(fileURLWithPath: self.path)
    process.arguments = arguments
    var env = environment
    env["PATH"] = ProcessInfo.processInfo.environment["PATH"]
    process.environment = env
    let output = Pipe()
    let errors = Pipe()
    process.standardOutput = output
    process.standardError = errors
    process.standardInput = FileHandle.nullDevice
    let exited = AsyncStream.makeStream(of: Int32.self)
    process.terminationHandler = { process in
      exited.continuation.yield(process.terminationStatus)
      exited.continuation.finish()
    }
    try process.run()
    async let outputData = Task.detached { output.fileHandleForReading.readDataToEndOfFile() }.value
    async let errorData = Task.detached { errors.fileHandleForReading.readDataToEndOfFile() }.value
    var iterator = exited.stream.makeAsyncIterator()
    let status = await iterator.next() ?? -1
    return Outcome(
      status: status,
      standardOutput: String(decoding: await outputData, as: UTF8.self),
      standardError: String(decoding: await errorData, as: UTF8.self)
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
