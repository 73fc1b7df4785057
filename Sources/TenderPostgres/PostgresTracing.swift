import PostgresNIO
import Tracing

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
