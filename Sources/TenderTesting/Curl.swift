public import Foundation
import Subprocess
import SystemPackage

/// Calls an HTTPS endpoint with curl, a stock client outside this process.
public enum Curl {
  public struct Reply: Sendable {
    /// curl's exit status (0 when an HTTP exchange completed).
    public let exitStatus: Int32
    /// HTTP status, 0 when there was none.
    public let status: Int
    public let body: String
    public let contentType: String
  }

  /// GETs `url` trusting only `caPath`; `extraArguments` go to curl (e.g. TLS version limits).
  public static func get(_ url: String, caPath: String, extraArguments: [String] = []) async throws -> Reply {
    let scratch = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent(
      "tender-curl-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: scratch) }
    let bodyPath = scratch.appendingPathComponent("body").path
    let result = try await Subprocess.run(
      .path("/usr/bin/curl"),
      arguments: Arguments(
        [
          "--silent", "--max-time", "10", "--cacert", caPath, "--output", bodyPath, "--write-out",
          "%{http_code} %{content_type}",
        ]
          + extraArguments + [url]
      ),
      output: .string(limit: 1 << 16)
    )
    let written = result.standardOutput ?? ""
    let exitStatus: Int32
    switch result.terminationStatus {
    case .exited(let code): exitStatus = code
    case .signaled(let signal): exitStatus = 128 + signal
    }
    let parts = written.split(separator: " ", maxSplits: 1)
    return Reply(
      exitStatus: exitStatus,
      status: parts.first.flatMap { Int($0) } ?? 0,
      body: (try? String(contentsOfFile: bodyPath, encoding: .utf8)) ?? "",
      contentType: parts.count > 1 ? String(parts[1]) : ""
    )
  }
}
