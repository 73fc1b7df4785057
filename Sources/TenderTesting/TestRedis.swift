import Foundation
import Synchronization
public import TenderDevSupport

/// Throwaway Redis servers for tests: one shared per test process, or private ones for tests
/// that stop and restart Redis. All are stopped at exit.
public enum TestRedis {
  private static let servers = Mutex<[LocalRedis]>([])
  private static let shared = Task<LocalRedis, any Error> { try await TestRedis.makeServer() }

  /// The shared server, started on first call.
  public static func sharedServer() async throws -> LocalRedis {
    try await self.shared.value
  }

  /// A server of the caller's own.
  public static func privateServer() async throws -> LocalRedis {
    try await Self.makeServer()
  }

  private static func makeServer() async throws -> LocalRedis {
    let directory = URL(fileURLWithPath: NSTemporaryDirectory())
      .appendingPathComponent("tender-test-redis-\(getpid())-\(UUID().uuidString.prefix(8))", isDirectory: true)
    // A port free when chosen may be taken by another test's server before Redis binds it.
    var attempt = 0
    let server: LocalRedis
    while true {
      attempt += 1
      do {
        server = try await LocalRedis.start(in: directory, port: try LocalPostgres.freePort())
        break
      } catch let error as LocalRedis.Failure where attempt < 5 && error.description.contains("is taken") {
        try? FileManager.default.removeItem(at: directory)
      }
    }
    let isFirst = self.servers.withLock { servers in
      servers.append(server)
      return servers.count == 1
    }
    if isFirst {
      atexit {
        for server in TestRedis.servers.withLock({ $0 }) { server.destroy() }
      }
    }
    return server
  }
}
