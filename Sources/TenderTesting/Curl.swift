public import Foundation

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
    let scratch = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("tender-curl-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: scratch) }
    let bodyPath = scratch.appendingPathComponent("body").path
    let metaURL = scratch.appendingPathComponent("meta")
    FileManager.default.createFile(atPath: metaURL.path, contents: nil)
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
    process.arguments = ["--silent", "--max-time", "10", "--cacert", caPath, "--output", bodyPath,
                         "--write-out", "%{http_code} %{content_type}"] + extraArguments + [url]
    let meta = try FileHandle(forWritingTo: metaURL)
    defer { try? meta.close() }
    process.standardOutput = meta
    process.standardError = FileHandle.nullDevice
    process.standardInput = FileHandle.nullDevice
    try process.run()
    while process.isRunning {
      try await Task.sleep(for: .milliseconds(10))
    }
    let written = (try? String(contentsOf: metaURL, encoding: .utf8)) ?? ""
    let parts = written.split(separator: " ", maxSplits: 1)
    return Reply(
      exitStatus: process.terminationStatus,
      status: parts.first.flatMap { Int($0) } ?? 0,
      body: (try? String(contentsOfFile: bodyPath, encoding: .utf8)) ?? "",
      contentType: parts.count > 1 ? String(parts[1]) : ""
    )
  }
}
