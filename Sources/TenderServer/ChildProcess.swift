import Foundation

/// Runs helper programs (PostgreSQL and Redis tools) to completion.
enum ChildProcess {
  struct Failure: Error, CustomStringConvertible {
    let description: String
  }

  /// Debian's versioned PostgreSQL folders, newest first.
  static var postgresFolders: [String] {
    let versions = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []
    return versions.sorted(by: >).map { "/usr/lib/postgresql/\($0)/bin" }
  }

  private typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32

  /// glibc's posix_spawn_file_actions_addclosefrom_np (2.34 and later), which Swift does not import.
  private static let addCloseFrom: AddCloseFrom? = {
    guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") else {
      return nil
    }
    return unsafeBitCast(symbol, to: AddCloseFrom.self)
  }()

  /// Finds a program on PATH or in `extraFolders`.
  static func find(_ name: String, extraFolders: [String] = []) -> String? {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
    let candidates = path.split(separator: ":").map { "\($0)/\(name)" } + extraFolders.map { "\($0)/\(name)" }
    return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
  }

  /// Runs a program and returns its standard output; throws with its error output if it fails.
  ///
  /// Uses posix_spawn and waitpid rather than Foundation's Process: programs that leave a
  /// daemon running (`pg_ctl start`, `redis-server --daemonize yes`) hand it inherited
  /// descriptors, and Process waits for those to close.
  @discardableResult
  static func run(_ program: String, _ arguments: [String], asUser user: String? = nil) throws -> String {
    let command = user.map { ["/usr/sbin/runuser", "-u", $0, "--", program] + arguments } ?? ([program] + arguments)
    // From a directory every user can enter: postgres tools fail when the caller's cwd is private.
    let argv = ["/bin/sh", "-c", "cd /tmp && exec \"$@\"", "sh"] + command
    let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("tender-child-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: scratch) }
    let outputPath = scratch.appendingPathComponent("stdout").path
    let errorPath = scratch.appendingPathComponent("stderr").path

    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    posix_spawn_file_actions_addopen(&actions, 2, errorPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    // Close every other descriptor in the child: a daemon it starts must not keep this process's
    // pipes and sockets open (others here wait for those to close).
    if let closeFrom = Self.addCloseFrom {
      _ = closeFrom(&actions, 3)
    }

    // Threads of this process block most signals; a child (and a daemon it leaves running) would
    // inherit that mask and never see SIGTERM. Start it with no signal blocked and default handlers.
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var noSignals = sigset_t()
    sigemptyset(&noSignals)
    var allSignals = sigset_t()
    sigfillset(&allSignals)
    posix_spawnattr_setsigmask(&attributes, &noSignals)
    posix_spawnattr_setsigdefault(&attributes, &allSignals)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

    var pid: pid_t = 0
    let cArguments = argv.map { strdup($0) } + [nil]
    defer { cArguments.forEach { free($0) } }
    let spawned = posix_spawn(&pid, argv[0], &actions, &attributes, cArguments, environ)
    guard spawned == 0 else {
      throw Failure(description: "cannot start \(program): \(String(cString: strerror(spawned)))")
    }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
    let exitedCleanly = (status & 0x7f) == 0 && ((status >> 8) & 0xff) == 0
    let output = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
    guard exitedCleanly else {
      let message = ((try? String(contentsOfFile: errorPath, encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
      throw Failure(description: "\((program as NSString).lastPathComponent) failed: \(message)")
    }
    return output
  }
}
