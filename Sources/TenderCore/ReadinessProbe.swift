/// Something the server needs in order to serve (the database, later Redis), checked for readiness.
public protocol ReadinessProbe: Sendable {
  /// A short stable name for logs and health, e.g. `"postgres"`.
  var name: String { get }
  /// Returns normally when the dependency answers; throws otherwise.
  func check() async throws
}
