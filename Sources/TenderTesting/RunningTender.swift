public import Foundation

/// A `tender` process started in the background, for tests of signals and process lifecycle.
public final class RunningTender: @unchecked Sendable {
  public enum Failure: Error {
    case exitedEarly(status: Int32, log: String)
    case noListeningAddress(log: String)
  }

  private let process: Process
  private let logFile: URL
  /// The port `tender` reported in its "gRPC listening" log line.
  public private(set) var port: Int = 0

  /// Starts `tender` with `arguments` and waits up to `timeout` for its "gRPC listening" line.
  /// `environment` is added to the test process's own.
  public init(_ arguments: [String], environment: [String: String] = [:], timeout: Duration = .seconds(60)) async throws {
    self.logFile = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("tender-\(UUID().uuidString).log")
    FileManager.default.createFile(atPath: self.logFile.path, contents: nil)
    self.process = Process()
    self.process.executableURL = URL(fileURLWithPath: TenderExecutable.path)
    self.process.arguments = arguments
    self.process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    self.process.standardError = try FileHandle(forWritingTo: self.logFile)
    self.process.standardOutput = FileHandle.nullDevice
    self.process.standardInput = FileHandle.nullDevice
    try self.process.run()

    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
      if let port = self.listeningPort() {
        self.port = port
        return
      }
      if !self.process.isRunning {
        throw Failure.exitedEarly(status: self.process.terminationStatus, log: self.log)
      }
      try await Task.sleep(for: .milliseconds(50))
    }
    self.process.terminate()
    throw Failure.noListeningAddress(log: self.log)
  }

  deinit {
    if self.process.isRunning { self.process.interrupt() }
    try? FileManager.default.removeItem(at: self.logFile)
  }

  /// Everything the process has logged so far.
  public var log: String {
    (try? String(contentsOf: self.logFile, encoding: .utf8)) ?? ""
  }

  /// Sends `signal` (e.g. SIGTERM) to the process.
  public func send(_ signal: Int32) {
    kill(self.process.processIdentifier, signal)
  }

  /// Waits up to `timeout` for the process to exit; returns its status, or nil if still running.
  public func waitForExit(timeout: Duration) async throws -> Int32? {
    let deadline = ContinuousClock.now + timeout
    while self.process.isRunning {
      guard ContinuousClock.now < deadline else { return nil }
      try await Task.sleep(for: .milliseconds(20))
    }
    return self.process.terminationStatus
  }

  /// The port of the HTTP bridge, once it has logged that it listens.
  public var bridgePort: Int? { self.listeningPort(message: "HTTP bridge listening") }

  private func listeningPort(message: String = "gRPC listening") -> Int? {
    for line in self.log.split(separator: "\n") where line.contains("\"\(message)\"") {
      guard let data = line.data(using: .utf8),
        let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
        let address = object["address"] as? String,
        let colon = address.lastIndex(of: ":")
      else { continue }
      return Int(address[address.index(after: colon)...])
    }
    return nil
  }
}
