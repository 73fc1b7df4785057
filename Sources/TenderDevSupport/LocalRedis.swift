public import Foundation

/// A throwaway Redis server in a folder of its own, for `tender dev` and the tests.
public struct LocalRedis: Sendable {
  public struct Failure: Error, CustomStringConvertible {
    public let description: String
  }

  public let directory: URL
  public let port: Int
  /// More `redis-server` arguments, after Tender's own (later ones win): TLS, ACL users.
  public var arguments: [String] = []
  /// `redis://` URL of this server.
  public var url: String { "redis://127.0.0.1:\(self.port)" }

  private var pidFile: URL { self.directory.appendingPathComponent("redis.pid") }

  /// Starts a server (no persistence) listening on 127.0.0.1:`port`.
  public static func start(in directory: URL, port: Int, arguments: [String] = []) async throws -> LocalRedis {
    let redis = LocalRedis(directory: directory.standardizedFileURL, port: port, arguments: arguments)
    try await redis.start()
    return redis
  }

  /// Starts the server again after `stop()`, on the same port.
  public func start() async throws {
    try FileManager.default.createDirectory(at: self.directory, withIntermediateDirectories: true)
    guard let server = ChildProcess.find("redis-server") else {
      throw Failure(description: "redis-server not found: install Redis (apt-get install redis-server)")
    }
    do {
      try await ChildProcess.run(
        server,
        [
          "--bind", "127.0.0.1", "--port", "\(self.port)", "--save", "", "--appendonly", "no",
          "--daemonize", "yes", "--pidfile", self.pidFile.path, "--dir", self.directory.path,
          "--logfile", self.directory.appendingPathComponent("redis.log").path,
        ] + self.arguments)
    } catch let error as ChildProcess.Failure {
      throw Failure(description: error.description)
    }
    // Daemonized: wait until it accepts connections. Redis writes its pid file once it listens,
    // so a port that accepts while no pid file of this server exists is somebody else's.
    let log = self.directory.appendingPathComponent("redis.log")
    for _ in 0..<200 {
      if self.isAccepting(), self.isRunning { return }
      if let text = try? String(contentsOf: log, encoding: .utf8),
        text.contains("Address already in use") || text.contains("Failed listening")
      {
        throw Failure(description: "port \(self.port) is taken: redis-server could not listen on it")
      }
      try await Task.sleep(for: .milliseconds(25))
    }
    throw Failure(description: "redis-server did not start on port \(self.port)")
  }

  /// Whether this server's process (by its pid file) is alive.
  private var isRunning: Bool {
    guard let text = try? String(contentsOf: self.pidFile, encoding: .utf8),
      let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines))
    else { return false }
    return kill(pid, 0) == 0
  }

  /// Stops the server and waits until its port is closed.
  public func stop() {
    guard let text = try? String(contentsOf: self.pidFile, encoding: .utf8),
      let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines))
    else { return }
    kill(pid, SIGTERM)
    for _ in 0..<200 {
      if kill(pid, 0) != 0 { break }
      usleep(25_000)
    }
    try? FileManager.default.removeItem(at: self.pidFile)
  }

  /// Stops the server and removes its folder.
  public func destroy() {
    self.stop()
    try? FileManager.default.removeItem(at: self.directory)
  }

  private func isAccepting() -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(self.port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    return withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
      }
    }
  }
}
