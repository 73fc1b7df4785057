import Foundation
import Synchronization
public import TenderServer

/// Throwaway Redis servers for tests: one shared per test process, or private ones for tests
/// that stop and restart Redis.
public enum TestRedis {
  private static let shared = Mutex<Result<LocalRedis, any Error>?>(nil)
  private static let privateServers = Mutex<[LocalRedis]>([])

  /// The shared server, started on first call and stopped at exit.
  public static func sharedServer() throws -> LocalRedis {
    try self.shared.withLock { cached in
      if let cached { return try cached.get() }
      let result = Result { try Self.makeServer() }
      cached = result
      return try result.get()
    }
  }

  /// A server of the caller's own, stopped at exit.
  public static func privateServer() throws -> LocalRedis {
    try Self.makeServer()
  }

  private static func makeServer() throws -> LocalRedis {
    let directory = URL(fileURLWithPath: NSTemporaryDirectory())
      .appendingPathComponent("tender-test-redis-\(getpid())-\(UUID().uuidString.prefix(8))", isDirectory: true)
    let server = try LocalRedis.start(in: directory, port: try LocalPostgres.freePort())
    let isFirst = self.privateServers.withLock { servers in
      servers.append(server)
      return servers.count == 1
    }
    if isFirst {
      atexit {
        for server in TestRedis.privateServers.withLock({ $0 }) { server.destroy() }
      }
    }
    return server
  }
}
