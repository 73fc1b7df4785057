import Synchronization

/// Where group commit reports the size of each statement it sends (a metric, for one).
public final class WriteBatchReports: Sendable {
  /// The closure is held in a struct, as `MoneyMovements` holds its sink.
  private struct Sink: Sendable {
    let report: @Sendable (_ statement: String, _ requests: Int) -> Void
  }

  private let sink = Mutex<Sink?>(nil)

  public init() {}

  /// `report` gets each statement's name (`payment_claims`, `payment_finishes`) and how many
  /// requests it carries.
  public func connect(_ report: @escaping @Sendable (_ statement: String, _ requests: Int) -> Void) {
    self.sink.withLock { $0 = Sink(report: report) }
  }

  /// Reports one statement sent.
  public func sent(_ statement: String, requests: Int) {
    self.sink.withLock { $0 }?.report(statement, requests)
  }
}
