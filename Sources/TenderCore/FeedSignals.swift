/// Wake-ups shared by every replica: a transaction wrote payment events, or the standing of a
/// token, client or merchant changed. They carry no data anyone relies on: a reader that wakes
/// reads the source of truth. PostgreSQL carries them (`NOTIFY`).
public enum FeedSignal: Sendable, Hashable {
  /// A transaction wrote payment events; its id (`xid8`), when known, so a reader can tell
  /// whether it has read them yet.
  case events(transaction: Int64?)
  /// A token was revoked, or a client or merchant was disabled or enabled.
  case standing(StandingChange)
  /// Signals may have been missed (the connection is new or was re-established): re-read
  /// everything.
  case resynchronize
}

/// Whose standing changed.
public enum StandingChange: Sendable, Hashable {
  case token(String)
  case client(String)
  case merchant(String)
}

/// Where feed signals come from.
public protocol FeedSignals: Sendable {
  /// Delivers signals to `receive` until cancelled; first `.resynchronize` once listening. Throws
  /// when the connection fails (the caller listens again after a pause).
  func listen(_ receive: @escaping @Sendable (FeedSignal) -> Void) async throws
}
