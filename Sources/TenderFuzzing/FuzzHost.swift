import Dispatch
import Foundation
import GRPCCore
import Synchronization
import TenderTesting

/// Runs the fuzz targets for libFuzzer, whose callbacks are synchronous: one in-process server for
/// the whole run, started on first use, and each input awaited to its end before the next.
public enum FuzzHost {
  private static let fuzzing = Mutex<Fuzzing?>(nil)

  /// The target named by `TENDER_FUZZ_TARGET`; stops the process with the list of names if none.
  public static let target: FuzzTarget = {
    let name = ProcessInfo.processInfo.environment["TENDER_FUZZ_TARGET"] ?? ""
    guard let target = FuzzTarget(rawValue: name) else {
      let names = FuzzTarget.allCases.map(\.rawValue).joined(separator: ", ")
      fatalError("set TENDER_FUZZ_TARGET to one of: \(names)")
    }
    return target
  }()

  /// Starts the server and waits until it serves.
  public static func start() {
    _ = Self.target
    let ready = DispatchSemaphore(value: 0)
    Task.detached {
      do {
        try await InProcessServer.with(configure: Fuzzing.configure) { server in
          try await server.withClient { client in
            let prepared = try await Fuzzing.prepare(server: server, client: client)
            Self.fuzzing.withLock { $0 = prepared }
            ready.signal()
            // Serves until libFuzzer exits the process.
            while true { try await Task.sleep(for: .seconds(3600)) }
          }
        }
      } catch {
        fatalError("the fuzzing server stopped: \(error)")
      }
    }
    ready.wait()
  }

  /// Runs one input; a broken property stops the process, as libFuzzer expects of a finding.
  public static func run(_ data: UnsafeRawBufferPointer) {
    guard let fuzzing = Self.fuzzing.withLock({ $0 }) else { fatalError("FuzzHost.start() was not called") }
    let input = Array(data)
    let target = Self.target
    let finding = Mutex<FuzzFinding?>(nil)
    let done = DispatchSemaphore(value: 0)
    Task.detached {
      do throws(FuzzFinding) {
        try await fuzzing.run(target, input)
      } catch {
        finding.withLock { $0 = error }
      }
      done.signal()
    }
    done.wait()
    if let found = finding.withLock({ $0 }) { fatalError("finding: \(found.description)") }
  }
}
