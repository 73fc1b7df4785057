public import Foundation

/// A throwaway PostgreSQL cluster in a folder of its own, for `tender dev` and the tests.
///
/// PostgreSQL refuses to run as root; when started by root the cluster is owned by, and run as,
/// the unprivileged `postgres` user (created by Debian's `postgresql` package).
public struct LocalPostgres: Sendable {
  public struct Failure: Error, CustomStringConvertible {
    public let description: String
  }

  /// Folder holding `data/`, the server log and the Unix socket.
  public let directory: URL
  public let port: Int
  /// `postgres://…` URL of the `tender` database in this cluster.
  public var databaseURL: String { self.url(database: self.database) }
  public let database: String

  private var dataDirectory: URL { self.directory.appendingPathComponent("data") }
  private var logFile: URL { self.directory.appendingPathComponent("postgres.log") }

  /// Creates (if needed) and starts a cluster in `directory` listening on 127.0.0.1:`port`.
  /// - Parameters:
  ///   - maxConnections: the server's connection limit (a test run's many pools need more than a
  ///     dev server).
  ///   - durable: whether a commit survives the machine failing (fsync); a test run's throwaway
  ///     cluster does without, since nothing it tests depends on PostgreSQL's own crash safety.
  ///   - tls: a certificate and its key (PEM) to serve TLS with; clients then may or must use it
  ///     as their `sslmode` says.
  public static func start(
    in directory: URL, port: Int, database: String = "tender", maxConnections: Int = 200, durable: Bool = true,
    tls: (certificatePEM: String, keyPEM: String)? = nil
  ) async throws -> LocalPostgres {
    let cluster = LocalPostgres(directory: directory.standardizedFileURL, port: port, database: database)
    try await cluster.initializeIfNeeded()
    var ssl: [String] = []
    if let tls {
      // PostgreSQL reads its key only if nobody else can.
      let certificate = cluster.directory.appendingPathComponent("server.crt")
      let key = cluster.directory.appendingPathComponent("server.key")
      try tls.certificatePEM.write(to: certificate, atomically: true, encoding: .utf8)
      try tls.keyPEM.write(to: key, atomically: true, encoding: .utf8)
      try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: key.path)
      if Self.isRoot {
        try await Self.run("/bin/chown", ["postgres:postgres", certificate.path, key.path], asPostgres: false)
      }
      ssl = ["-c ssl=on", "-c ssl_cert_file=\(certificate.path)", "-c ssl_key_file=\(key.path)"]
    }
    try await cluster.startServer(maxConnections: maxConnections, durable: durable, extra: ssl)
    try await cluster.createDatabaseIfNeeded()
    return cluster
  }

  /// Stops the server with a fast shutdown (open sessions are disconnected) and waits up to 30 s
  /// for it to exit. A signal rather than `pg_ctl stop`, so it also works where nothing can be
  /// awaited (at exit).
  public func stop() {
    let pidFile = self.dataDirectory.appendingPathComponent("postmaster.pid")
    guard let text = try? String(contentsOf: pidFile, encoding: .utf8),
      let line = text.split(separator: "\n").first, let pid = pid_t(line.trimmingCharacters(in: .whitespaces)), pid > 0
    else { return }
    guard kill(pid, SIGINT) == 0 else { return }
    for _ in 0..<1200 {
      if kill(pid, 0) != 0 { return }
      usleep(25_000)
    }
    FileHandle.standardError.write(Data("tender: PostgreSQL in \(self.directory.path) did not stop within 30 s\n".utf8))
  }

  /// Removes the cluster's folder, after stopping it.
  public func destroy() {
    self.stop()
    try? FileManager.default.removeItem(at: self.directory)
  }

  /// A TCP port on 127.0.0.1 that is free right now.
  public static func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw Failure(description: "cannot open a socket to find a free port") }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = 0
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
        bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
      }
    }
    guard bound else { throw Failure(description: "cannot bind a socket to find a free port") }
    return Int(UInt16(bigEndian: address.sin_port))
  }

  private func initializeIfNeeded() async throws {
    let fileManager = FileManager.default
    try fileManager.createDirectory(at: self.directory, withIntermediateDirectories: true)
    if Self.isRoot {
      try await Self.run("/bin/chown", ["postgres:postgres", self.directory.path], asPostgres: false)
      do {
        try await Self.run("/usr/bin/test", ["-w", self.directory.path], asPostgres: true)
      } catch {
        throw Failure(
          description:
            "the postgres user cannot reach \(self.directory.path): every folder above it must be searchable (chmod o+x), or choose another folder"
        )
      }
    }
    guard !fileManager.fileExists(atPath: self.dataDirectory.appendingPathComponent("PG_VERSION").path) else { return }
    try await Self.run(
      Self.tool("initdb"),
      ["-D", self.dataDirectory.path, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-instructions", "--no-sync"],
      asPostgres: Self.isRoot
    )
  }

  private func startServer(maxConnections: Int, durable: Bool, extra: [String]) async throws {
    let options =
      (extra + [
        "-c listen_addresses=127.0.0.1",
        "-p \(self.port)",
        "-k \(self.directory.path)",
        "-c max_connections=\(maxConnections)",
        durable ? "-c fsync=on" : "-c fsync=off -c synchronous_commit=off -c full_page_writes=off",
      ]).joined(separator: " ")
    // A server left running from an earlier start of this folder is reused.
    if (try? await Self.run(Self.tool("pg_ctl"), ["-D", self.dataDirectory.path, "status"], asPostgres: Self.isRoot))
      != nil
    {
      return
    }
    try await Self.run(
      Self.tool("pg_ctl"),
      ["-D", self.dataDirectory.path, "-l", self.logFile.path, "-w", "-t", "60", "-o", options, "start"],
      asPostgres: Self.isRoot
    )
  }

  /// The URL of `database` in this cluster.
  public func url(database: String) -> String {
    "postgres://postgres@127.0.0.1:\(self.port)/\(database)?sslmode=disable"
  }

  /// Creates an empty database named `name` (letters, digits and underscores only).
  public func createDatabase(_ name: String) async throws {
    precondition(name.allSatisfy { $0.isLetter || $0.isNumber || $0 == "_" }, "database names are plain identifiers")
    try await Self.run(
      Self.tool("psql"),
      [
        "-h", "127.0.0.1", "-p", "\(self.port)", "-U", "postgres", "-d", "postgres", "-qc",
        "CREATE DATABASE \"\(name)\"",
      ],
      asPostgres: false
    )
  }

  private func createDatabaseIfNeeded() async throws {
    let exists = try await Self.run(
      Self.tool("psql"),
      [
        "-h", "127.0.0.1", "-p", "\(self.port)", "-U", "postgres", "-d", "postgres", "-tAc",
        "SELECT 1 FROM pg_database WHERE datname = '\(self.database)'",
      ],
      asPostgres: false
    )
    if exists.trimmingCharacters(in: .whitespacesAndNewlines) != "1" {
      try await self.createDatabase(self.database)
    }
  }

  static var isRoot: Bool { geteuid() == 0 }

  static func tool(_ name: String) throws -> String {
    guard let found = ChildProcess.find(name, extraFolders: ChildProcess.postgresFolders) else {
      throw Failure(description: "\(name) not found: install PostgreSQL (apt-get install postgresql)")
    }
    return found
  }

  @discardableResult
  static func run(_ program: String, _ arguments: [String], asPostgres: Bool) async throws -> String {
    do {
      return try await ChildProcess.run(program, arguments, asUser: asPostgres ? "postgres" : nil)
    } catch let error as ChildProcess.Failure {
      throw Failure(description: error.description)
    }
  }
}
