import PostgresNIO
import TenderCore
import Tracing

/// How a store calls the database: each call is a client span, and each is bounded client-side.
///
/// `statement_timeout` and `lock_timeout` bound what the server does; they cannot bound a wait
/// for a connection the pool cannot make (the database's host unreachable) or for an answer on
/// a connection whose backend is gone but whose socket was never closed. Past `timeout` a call
/// throws `Bounded.TimedOut`, which `PostgresFailures` counts as the database being unavailable,
/// so the RPC answers UNAVAILABLE `DATABASE_UNAVAILABLE` and is retried rather than hanging.
///
/// With `movements`, the statuses a writing call's transaction (`recordsMovements`) made payments
/// and refunds enter are reported once the call has returned (committed); with `announcer`, the
/// payment events it wrote are announced then. Reads collect nothing.
struct DatabaseCalls: Sendable {
  let tracer: any Tracer
  let timeout: Duration?
  var movements: MoneyMovements? = nil
  var announcer: PostgresEventAnnouncer? = nil

  func run<T: Sendable>(
    _ operation: String, recordsMovements: Bool = false, _ body: @escaping @Sendable () async throws -> T
  ) async throws -> T {
    let timeout = self.timeout
    let call = { try await traced(self.tracer, operation) { try await Bounded.run(within: timeout, body) } }
    guard recordsMovements else { return try await call() }
    let announced: () async throws -> T =
      if let announcer = self.announcer { { try await WrittenEvents.announcing(to: announcer, call) } } else { call }
    guard let movements = self.movements else { return try await announced() }
    return try await movements.collecting(announced)
  }
}

/// Runs `body` inside a database client span (OpenTelemetry database conventions), a child of
/// the current span (the RPC's).
func traced<T>(_ tracer: any Tracer, _ operation: String, _ body: () async throws -> T) async throws -> T {
  let span = tracer.startSpan(operation, context: ServiceContext.current ?? .topLevel, ofKind: .client)
  span.attributes["db.system"] = "postgresql"
  span.attributes["db.operation.name"] = operation
  defer { span.end() }
  do {
    return try await body()
  } catch {
    span.recordError(error)
    span.setStatus(SpanStatus(code: .error))
    throw error
  }
}

/// The error a transaction's closure threw, unwrapped from PostgresNIO's transaction error.
func unwrappingTransactionError<T>(_ body: () async throws -> T) async throws -> T {
  do {
    return try await body()
  } catch let error as PostgresTransactionError {
    // The closure's error if it threw; else BEGIN's or COMMIT's (a connection lost at COMMIT is
    // the database being unavailable, which callers retry).
    if let inner = error.closureError ?? error.beginError ?? error.commitError { throw inner }
    throw error
  }
}

/// What the PostgreSQL stores share.
public enum PostgresStores {
  /// How long a store call waits for its answer unless told otherwise (`database-call-timeout`).
  public static let defaultCallTimeout: Duration? = .seconds(30)
}
