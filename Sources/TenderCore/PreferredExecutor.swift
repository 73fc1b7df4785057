/// The task executor that the work of the current request prefers, for the tasks it starts
/// outside its own structure (an unstructured task does not inherit its creator's preference).
///
/// Tender's gRPC transport runs each RPC's task on its connection's event loop and binds that
/// executor here for the RPC's duration; `Bounded.run` starts its work's task on it, so a database
/// call's work stays on the thread that serves the RPC rather than passing through Swift's global
/// executor and back. Unbound (nil) elsewhere: tasks then run on the global executor as usual.
public enum PreferredExecutor {
  @TaskLocal public static var current: (any TaskExecutor)?
}
