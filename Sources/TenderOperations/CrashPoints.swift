import Foundation

/// Crash points for tests of exactly-once under failure. When the environment variable
/// `TENDER_CRASH_AT` names a point, the process kills itself with SIGKILL on reaching it — no
/// cleanup, no drain, as after a power cut — so a test can restart Tender and check that a retry
/// or the completer finishes the operation exactly once. Unset (as in every deployment), reaching
/// a point costs one comparison.
public enum CrashPoints {
  public static let armed: String? = ProcessInfo.processInfo.environment["TENDER_CRASH_AT"]

  // The points, between every two steps of the keyed operations: OPERATION.claimed (capture and
  // cancel), create_payment.payment_created, create_refund.refund_created, OPERATION.call_recorded
  // (the provider call is recorded, not made yet), OPERATION.provider_answered, and
  // OPERATION.failed_for_sure (failed and the key freed, the caller not told yet), where
  // OPERATION is create_payment, capture_payment, cancel_payment or create_refund.

  /// A crash point for in-process tests: an operation run with this set stops dead at the point
  /// (throwing `SimulatedCrash`), writing nothing more — as the process would after SIGKILL,
  /// since everything an operation needs lives in the database and at the provider.
  @TaskLocal public static var simulated: String?

  @inline(__always)
  public static func reach(_ point: @autoclosure () -> String) throws {
    if let armed = self.armed {
      if armed == point() { kill(getpid(), SIGKILL) }
    } else if let simulated = self.simulated, simulated == point() {
      throw SimulatedCrash(point: simulated)
    }
  }
}

/// An operation stopped at a crash point by a test.
public struct SimulatedCrash: Error, Sendable, Hashable {
  public let point: String
}
