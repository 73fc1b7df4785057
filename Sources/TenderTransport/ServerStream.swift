import GRPCCore
import NIOCore
import NIOHTTP2
import Synchronization

/// What an RPC's task and its connection's event loop share about one HTTP/2 stream: the request
/// parts received and not yet read, the response parts written and not yet on the wire, and the
/// RPC's cancellation.
///
/// The event loop side (`ServerConnectionHandler`) receives and sends frames; the task reads
/// with `next()` and writes with `write(_:)`. A write hands its part over and schedules one drain
/// on the event loop for everything written meanwhile, so a unary response's metadata, message
/// and status usually leave in one hop.
final class ServerStream: Sendable {
  typealias Part = RPCRequestPart<TransportBytes>
  typealias ResponsePart = RPCResponsePart<TransportBytes>

  let id: HTTP2StreamID
  let eventLoop: any EventLoop
  /// The connection's handler, used on its event loop only.
  let connection: NIOLoopBound<ServerConnectionHandler>
  /// Bytes received and not yet read past which the stream's window is not opened again.
  let windowTarget: Int

  private let state: Mutex<State>

  /// Response bytes handed over and not yet written before a writer waits.
  private static let highWatermark = 64 * 1024
  private static let lowWatermark = 16 * 1024

  private struct State {
    var received = CircularBuffer<Part>(initialCapacity: 2)
    /// Set once the request has ended: cleanly, or with the error its reader gets.
    var receivedEnd: (any Error)??
    var reader: UnsafeContinuation<Part?, any Error>?
    /// Request bytes received (framing included) that the RPC has not read yet.
    var unread = 0
    /// The event loop held back a window update until the RPC reads more.
    var windowHeld = false

    var outbox: [ResponsePart] = []
    var drainScheduled = false
    /// The RPC has written its status: the response is complete.
    var statusWritten = false
    /// Response bytes handed over and not yet written to the connection.
    var unwritten = 0
    var writer: UnsafeContinuation<Void, any Error>?
    /// Why the response can no longer be written, once it cannot.
    var closed: RPCError?

    var cancellation: ServerContext.RPCCancellationHandle?
    var cancelled = false
  }

  init(id: HTTP2StreamID, eventLoop: any EventLoop, connection: ServerConnectionHandler, windowTarget: Int) {
    self.id = id
    self.eventLoop = eventLoop
    self.connection = NIOLoopBound(connection, eventLoop: eventLoop)
    self.windowTarget = windowTarget
    self.state = Mutex(State())
  }

  // MARK: The request (received on the event loop, read by the RPC's task)

  /// A request part from the connection; `bytes` is what it took of the stream's window.
  func receive(_ part: Part, bytes: Int) {
    let reader: UnsafeContinuation<Part?, any Error>? = self.state.withLock { state in
      state.unread += bytes
      if let reader = state.reader {
        state.reader = nil
        state.unread -= bytes
        return reader
      }
      state.received.append(part)
      return nil
    }
    reader?.resume(returning: part)
  }

  /// The request has ended: cleanly with `nil`.
  func endRequest(_ error: (any Error)?) {
    let reader: UnsafeContinuation<Part?, any Error>? = self.state.withLock { state in
      guard state.receivedEnd == nil else { return nil }
      state.receivedEnd = .some(error)
      guard state.received.isEmpty, let reader = state.reader else { return nil }
      state.reader = nil
      return reader
    }
    if let reader {
      if let error { reader.resume(throwing: error) } else { reader.resume(returning: nil) }
    }
  }

  /// Bytes received and not yet read; the event loop opens the window only for what is read.
  /// Marks the window as held when `hold`, so the next read asks for it to be opened.
  func unreadBytes(holding hold: Bool) -> Int {
    self.state.withLock { state in
      if hold { state.windowHeld = true }
      return state.unread
    }
  }

  func next() async throws -> Part? {
    enum Taken {
      case part(Part?, reopen: Bool)
      case failure(any Error)
      case wait
    }
    func take(_ state: inout State) -> Taken {
      if let part = state.received.popFirst() {
        if case .message(let bytes) = part { state.unread -= bytes.count + 5 }
        var reopen = false
        if state.windowHeld && state.unread <= self.windowTarget / 2 {
          state.windowHeld = false
          reopen = true
        }
        return .part(part, reopen: reopen)
      }
      switch state.receivedEnd {
      case .none: return .wait
      case .some(.none): return .part(nil, reopen: false)
      case .some(.some(let error)): return .failure(error)
      }
    }
    func settle(_ taken: Taken) throws -> Part?? {
      switch taken {
      case .part(let part, let reopen):
        if reopen { self.reopenWindow() }
        return .some(part)
      case .failure(let error): throw error
      case .wait: return nil
      }
    }
    if let part = try settle(self.state.withLock { take(&$0) }) { return part }
    return try await withTaskCancellationHandler {
      try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<Part?, any Error>) in
        let taken: Taken = self.state.withLock { state in
          let taken = take(&state)
          if case .wait = taken {
            if Task.isCancelled {
              return .failure(CancellationError())
            }
            state.reader = continuation
          }
          return taken
        }
        switch taken {
        case .wait: return
        case .part(let part, let reopen):
          if reopen { self.reopenWindow() }
          continuation.resume(returning: part)
        case .failure(let error): continuation.resume(throwing: error)
        }
      }
    } onCancel: {
      let reader = self.state.withLock { state in
        defer { state.reader = nil }
        return state.reader
      }
      reader?.resume(throwing: CancellationError())
    }
  }

  private func reopenWindow() {
    self.eventLoop.execute {
      self.connection.value.reopenWindow(of: self)
    }
  }

  // MARK: The response (written by the RPC's task, sent on the event loop)

  func write(_ part: ResponsePart) async throws {
    let size: Int
    if case .message(let bytes) = part { size = bytes.count + 5 } else { size = 0 }
    let (schedule, wait): (Bool, Bool) = try self.state.withLock { state in
      if let closed = state.closed { throw closed }
      if state.statusWritten { throw RPCError(code: .internalError, message: "The response has already ended.") }
      if case .status = part { state.statusWritten = true }
      state.outbox.append(part)
      state.unwritten += size
      let schedule = !state.drainScheduled
      state.drainScheduled = true
      return (schedule, state.unwritten > Self.highWatermark)
    }
    if schedule {
      self.eventLoop.execute {
        self.connection.value.drain(self)
      }
    }
    if wait {
      try await self.waitUntilWritable()
    }
  }

  /// Ends the response with `status` unless the RPC wrote one.
  func finish(_ status: Status) async {
    let written = self.state.withLock { $0.statusWritten || $0.closed != nil }
    if !written { try? await self.write(.status(status, [:])) }
  }

  /// The response parts written since the last drain.
  func takeOutbox() -> [ResponsePart] {
    self.state.withLock { state in
      state.drainScheduled = false
      defer { state.outbox = [] }
      return state.outbox
    }
  }

  /// `bytes` of the response have been written to the connection.
  func written(_ bytes: Int) {
    let writer: UnsafeContinuation<Void, any Error>? = self.state.withLock { state in
      state.unwritten -= bytes
      guard state.unwritten <= Self.lowWatermark, let writer = state.writer else { return nil }
      state.writer = nil
      return writer
    }
    writer?.resume()
  }

  private func waitUntilWritable() async throws {
    try await withTaskCancellationHandler {
      try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<Void, any Error>) in
        let outcome: Result<Void, any Error>? = self.state.withLock { state in
          if let closed = state.closed { return .failure(closed) }
          if state.unwritten <= Self.lowWatermark { return .success(()) }
          if Task.isCancelled { return .failure(CancellationError()) }
          state.writer = continuation
          return nil
        }
        if let outcome { continuation.resume(with: outcome) }
      }
    } onCancel: {
      let writer = self.state.withLock { state in
        defer { state.writer = nil }
        return state.writer
      }
      writer?.resume(throwing: CancellationError())
    }
  }

  // MARK: Cancellation

  /// Called by the RPC's task once its cancellation handle exists.
  func attach(_ handle: ServerContext.RPCCancellationHandle) {
    let cancelled = self.state.withLock { state in
      state.cancellation = handle
      return state.cancelled
    }
    if cancelled { handle.cancel() }
  }

  /// The stream ended before the RPC did (the client reset it, the connection closed, or the
  /// request was refused): the RPC is cancelled and its reads and writes fail.
  func close(_ error: RPCError) {
    let (handle, reader, writer) = self.state.withLock { state in
      state.cancelled = true
      if state.closed == nil { state.closed = error }
      if state.receivedEnd == nil { state.receivedEnd = .some(error) }
      let reader = state.received.isEmpty ? state.reader : nil
      if reader != nil { state.reader = nil }
      let writer = state.writer
      state.writer = nil
      state.outbox = []
      return (state.cancellation, reader, writer)
    }
    reader?.resume(throwing: error)
    writer?.resume(throwing: error)
    handle?.cancel()
  }

  /// The response has been sent in full: later writes fail.
  func responseSent() {
    self.state.withLock { state in
      if state.closed == nil {
        state.closed = RPCError(code: .internalError, message: "The response has already ended.")
      }
    }
  }
}

/// The request parts of one stream, as the RPC reads them.
struct ServerStreamInbound: AsyncSequence, Sendable {
  typealias Element = RPCRequestPart<TransportBytes>
  let stream: ServerStream

  func makeAsyncIterator() -> Iterator { Iterator(stream: self.stream) }

  struct Iterator: AsyncIteratorProtocol {
    let stream: ServerStream
    mutating func next() async throws -> Element? {
      try await self.stream.next()
    }
  }
}

/// The response parts of one stream, as the RPC writes them.
struct ServerStreamOutbound: ClosableRPCWriterProtocol {
  typealias Element = RPCResponsePart<TransportBytes>
  let stream: ServerStream

  func write(_ element: Element) async throws {
    try await self.stream.write(element)
  }

  func write(contentsOf elements: some Sequence<Element>) async throws {
    for element in elements {
      try await self.stream.write(element)
    }
  }

  func finish() async {
    // gRPC's server writes the status before it finishes; without one the response still ends.
    await self.stream.finish(Status(code: .internalError, message: "The RPC ended without a status."))
  }

  func finish(throwing error: any Error) async {
    let status =
      (error as? RPCError).map { Status(code: Status.Code($0.code), message: $0.message) }
      ?? Status(code: .unknown, message: "The RPC ended with an error.")
    await self.stream.finish(status)
  }
}
