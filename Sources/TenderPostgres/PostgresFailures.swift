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
}
