public import PostgresNIO
import TenderCore

/// Which PostgreSQL failures mean "the database is unavailable right now" rather than a fault of
/// the request: the connection is gone or cannot be made, the server is shutting down or
/// restarting, it is out of resources, a statement or lock timeout passed, or a store call got no
/// answer within its client-side bound (`Bounded.TimedOut`).
public enum PostgresFailures {
  public static func isUnavailable(_ error: any Error) -> Bool {
    if error is Bounded.TimedOut { return true }
    if let transaction = error as? PostgresTransactionError {
      // What failed the transaction: BEGIN, the closure or COMMIT (a failed rollback after a
      // closure's error leaves that error the answer).
      let cause = transaction.closureError ?? transaction.beginError ?? transaction.commitError
      return cause.map(Self.isUnavailable) ?? false
    }
    guard let error = error as? PSQLError else { return false }
    switch error.code {
    case .serverClosedConnection, .clientClosedConnection, .connectionError, .uncleanShutdown, .poolClosed,
      .queryCancelled:
      return true
    case .server:
      guard let state = error.serverInfo?[.sqlState] else { return false }
      // 08: connection exception; 57P0x: admin or crash shutdown, cannot connect now; 53:
      // insufficient resources; 57014: statement timeout; 55P03: lock timeout.
      return state.hasPrefix("08") || state.hasPrefix("57P") || state.hasPrefix("53") || state == "57014"
        || state == "55P03"
    default:
      return false
    }
  }

  /// A fast-path statement that wrote nothing and leaves the decision to the general path: it
  /// aborted itself (a division by zero when its checks disagree, such as a key taken over
  /// between them) or lost a deadlock with another owner's transaction. Each is one statement
  /// in its own transaction, so either way nothing of it was written.
  static func isFastPathRefusal(_ error: PSQLError) -> Bool {
    guard let state = error.serverInfo?[.sqlState] else { return false }
    return state == "22012" || state == "40P01"
  }
}
