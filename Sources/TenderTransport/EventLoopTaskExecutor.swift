import NIOCore

/// A task executor that runs its jobs on one NIO event loop.
///
/// An RPC's task prefers the event loop of its connection, so the work between two suspensions
/// runs on the thread that reads and writes the connection: a response part written by the task is
/// picked up by the same thread, a request part resumes the task without waking another, and no
/// job passes through Swift's global executor.
final class EventLoopTaskExecutor: TaskExecutor {
  let eventLoop: any EventLoop

  init(_ eventLoop: any EventLoop) {
    self.eventLoop = eventLoop
  }

  func enqueue(_ job: consuming ExecutorJob) {
    let job = UnownedJob(job)
    self.eventLoop.execute {
      job.runSynchronously(on: self.asUnownedTaskExecutor())
    }
  }
}
