import Foundation
import Subprocess
import SystemPackage

/// Runs helper programs (PostgreSQL and Redis tools) to completion.
///
/// Through swift-subprocess: the child gets no descriptor of this process but the three it is
/// given, and no blocked signal, so a daemon it leaves running (`pg_ctl start`,
/// `redis-server --daemonize yes`) holds none of this process's pipes and sockets and still
/// sees SIGTERM.
enum ChildProcess {
  struct Failure: Error, CustomStringConvertible {
    let description: String
  }

  /// Debian's versioned PostgreSQL folders, newest first.
  static var postgresFolders: [String] {
    let versions = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []
    return versions.sorted(by: >).map { "/usr/lib/postgresql/\($0)/bin" }
  }

  /// Finds a program on PATH or in `extraFolders`.
  static func find(_ name: String, extraFolders: [String] = []) -> String? {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
    let candidates = path.split(separator: ":").map { "\($0)/\(name)" } + extraFolders.map { "\($0)/\(name)" }
    return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
  }

  /// Runs a program and returns its standard output; throws with its error output if it fails.
  /// Runs from /tmp, a folder every user can enter: PostgreSQL's tools fail when the caller's
  /// working folder is private to another user.
  @discardableResult
  static func run(_ program: String, _ arguments: [String], asUser user: String? = nil) async throws -> String {
    let (executable, argv) =
      user.map { ("/usr/sbin/runuser", ["-u", $0, "--", program] + arguments) } ?? (program, arguments)
    let result = try await Self.collect(executable, argv, program: program)
    guard result.terminationStatus.isSuccess else {
      let message = (result.standardError ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
      throw Failure(
        description: "\((program as NSString).lastPathComponent) failed (\(result.terminationStatus)): \(message)")
    }
    return result.standardOutput ?? ""
  }

  private static func collect(
    _ executable: String, _ argv: [String], program: String
  ) async throws -> (terminationStatus: TerminationStatus, standardOutput: String?, standardError: String?) {
    do {
      let result = try await Subprocess.run(
        .path(FilePath(executable)),
        arguments: Arguments(argv),
        workingDirectory: "/tmp",
        output: .string(limit: 1 << 20),
        error: .string(limit: 1 << 20)
      )
      return (result.terminationStatus, result.standardOutput, result.standardError)
    } catch {
      throw Failure(description: "cannot start \(program): \(error)")
    }
  }
}
