/// Whether this replica should receive traffic right now; the HTTP bridge's `/readyz` reads it.
public protocol ServingState: Sendable {
  var isServing: Bool { get }
}
