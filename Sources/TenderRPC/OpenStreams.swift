import GRPCCore
import GRPCProtobuf
import Synchronization

/// Long-lived streams open right now, per owner (a connection, a client) and in all, so one
/// caller cannot hold an unbounded number of them.
final class OpenStreams: Sendable {
  enum Limit {
    case perOwner
    case perProcess

    /// RESOURCE_EXHAUSTED with `reason`, naming the limit (`per_<owner>` or `per_process`).
    func refusal(reason: String, streams: String, owner: String) -> GoogleRPCStatus {
      let whose = self == .perOwner ? "for this \(owner)" : "on this server"
      return APIError.status(
        .resourceExhausted, reason: reason, message: "too many open \(streams) \(whose); close one first",
        metadata: ["limit": self == .perOwner ? "per_\(owner)" : "per_process"])
    }
  }

  private let perOwner: Int
  private let perProcess: Int
  private let counts = Mutex<(byOwner: [String: Int], total: Int)>(([:], 0))

  init(perOwner: Int, perProcess: Int) {
    self.perOwner = perOwner
    self.perProcess = perProcess
  }

  /// Counts a new stream of `owner`; the limit it would exceed instead, if any.
  func open(owner: String) -> Limit? {
    self.counts.withLock { counts in
      if counts.total >= self.perProcess { return .perProcess }
      if counts.byOwner[owner, default: 0] >= self.perOwner { return .perOwner }
      counts.byOwner[owner, default: 0] += 1
      counts.total += 1
      return nil
    }
  }

  func close(owner: String) {
    self.counts.withLock { counts in
      counts.total -= 1
      let left = counts.byOwner[owner, default: 1] - 1
      counts.byOwner[owner] = left > 0 ? left : nil
    }
  }
}
