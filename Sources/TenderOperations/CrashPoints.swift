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

  @inline(__always)
  public static func reach(_ point: @autoclosure () -> String) {
    guard let armed = self.armed, armed == point() else { return }
    kill(getpid(), SIGKILL)
  }
}
