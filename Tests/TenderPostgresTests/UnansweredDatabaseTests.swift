import Foundation
import Glibc
import Logging
import PostgresNIO
import TenderCore
import TenderPostgres
import TenderTesting
import Testing

/// A TCP port whose connections complete (the kernel's backlog) but are never accepted or
/// answered: a database host behind a partition, or a backend gone without closing its socket.
private final class SilentListener: Sendable {
  let descriptor: Int32
  let port: Int

  init() throws {
    let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    let bound = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
      }
    }
    guard descriptor >= 0, bound == 0, listen(descriptor, 64) == 0 else { throw POSIXError(.EADDRNOTAVAIL) }
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
    }
    self.descriptor = descriptor
    self.port = Int(UInt16(bigEndian: address.sin_port))
  }

  /// Resets the connections waiting in the backlog, so the pool can shut down.
  func close() {
    Glibc.close(self.descriptor)
  }
}

@Suite("A database that never answers")
struct UnansweredDatabaseTests {
  @Test(
    "Store calls to a database that accepts connections but never answers give up at the call timeout, as unavailable",
    .timeLimit(.minutes(1))
  )
  func callsGiveUp() async throws {
    let listener = try SilentListener()
    var logger = Logger(label: "tender.test.unanswered")
    logger.logLevel = .critical
    let configuration = try DatabaseURL.configuration(
      from: "postgres://tender@127.0.0.1:\(listener.port)/tender?sslmode=disable")
    let client = PostgresClient(configuration: configuration, backgroundLogger: logger)
    try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask { await client.run() }
      defer {
        listener.close()
        group.cancelAll()
      }
      let payments = PostgresPaymentStore(client: client, logger: logger, callTimeout: .milliseconds(800))
      let auth = PostgresAuthStore(client: client, logger: logger, callTimeout: .milliseconds(800))
      let calls: [(String, @Sendable () async throws -> Void)] = [
        ("payments.current_position", { @Sendable in _ = try await payments.currentPosition() }),
        ("auth.client", { @Sendable in _ = try await auth.client(id: "client_unanswered") }),
      ]
      for (name, call) in calls {
        let started = ContinuousClock.now
        let error = await #expect(throws: Bounded.TimedOut.self, "\(name)") { try await call() }
        let waited = ContinuousClock.now - started
        #expect(error.map(PostgresFailures.isUnavailable) == true)
        // Without the bound the call waits for the pool without end (this test's time limit).
        #expect(waited >= .milliseconds(800) && waited < .seconds(20), "\(name) waited \(waited)")
      }
    }
  }
}
