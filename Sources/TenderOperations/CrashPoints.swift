import Foundation

/// Crash points for tests of exactly-once under failure. When the environment variable
/// `TENDER_CRASH_AT` names a point, the process kills itself with SIGKILL on reaching it — no
/// cleanup, no drain, as after a power cut — so a test can restart Tender and check that a retry
/// or the completer finishes the operation exactly once. Unset (as in every deployment), reaching
/// a point costs one comparison.
public enum CrashPoints {
  public static let armed: String? = ProcessInfo.processInfo.environment["TENDER_CRASH_AT"]

  // The points: create_payment.claimed, create_payment.payment_created,
  // create_payment.provider_answered, create_payment.failed_for_sure, create_refund.refund_created,
  // create_refund.provider_answered, change_payment.claimed, change_payment.provider_answered.

  @inline(__always)
  public static func reach(_ point: StaticString) {
    guard let armed = self.armed, armed == point.description else { return }
    kill(getpid(), SIGKILL)
  }
}
