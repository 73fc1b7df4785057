import GRPCCore
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOTLS

/// Serves gRPC on one HTTP/2 connection: it reads the frames of every stream and writes their
/// responses itself, on the connection's event loop, without a channel per stream.
///
/// It sits behind `NIOHTTP2Handler` (HTTP/2's framing, state, flow control and DoS limits) and
/// `NIOHTTP2ServerConnectionManagementHandler` (keepalive, idle and age limits, graceful close).
/// Per stream it checks the request's headers, splits its DATA into messages (refusing one over
/// the size limit from its prefix), opens the stream's window only as the RPC reads, and writes
/// the response parts the RPC's task hands over (`ServerStream`). It also polices the client's
/// pings as gRPC servers do.
final class ServerConnectionHandler: ChannelDuplexHandler {
  typealias InboundIn = HTTP2Frame
  typealias InboundOut = HTTP2Frame
  typealias OutboundIn = HTTP2Frame
  typealias OutboundOut = HTTP2Frame

  struct Limits {
    var maxRequestMessageBytes: Int
    /// Each stream's and the connection's inbound window.
    var windowTarget: Int
    var requireALPN: Bool
    var minClientPingInterval: TimeAmount
    var allowPingsWithoutCalls: Bool
    /// Method descriptors by `:path`, as the server's services registered them.
    var descriptors: [String: MethodDescriptor]
  }

  /// Starts an accepted RPC's task.
  typealias Spawn = @Sendable (ServerStream, MethodDescriptor, _ remotePeer: String, _ localPeer: String) -> Void

  private struct Stream {
    /// Nil for a request that was refused from its headers.
    let shared: ServerStream?
    var deframer: MessageDeframer
    var requestEnded = false
    var headersSent = false
    var responseEnded = false
    /// The stream's inbound window as last reported by `NIOHTTP2Handler`.
    var window: Int?
  }

  private let limits: Limits
  private let spawn: Spawn
  private var context: ChannelHandlerContext?
  private var streams: [HTTP2StreamID: Stream] = [:]
  private var lastStreamID = HTTP2StreamID.rootStream
  private var remotePeer = "<unknown>"
  private var localPeer = "<unknown>"
  private var inReadLoop = false
  private var flushPending = false
  private var flushScheduled = false
  private var pingStrikes = 0
  private var lastValidPing: NIODeadline?
  /// The connection is closing for too many pings.
  private var calmedDown = false

  init(limits: Limits, spawn: @escaping Spawn) {
    self.limits = limits
    self.spawn = spawn
  }

  func handlerAdded(context: ChannelHandlerContext) {
    self.context = context
    self.remotePeer = Self.describe(context.channel.remoteAddress)
    self.localPeer = Self.describe(context.channel.localAddress)
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    self.context = nil
  }

  // MARK: Inbound

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    self.inReadLoop = true
    let frame = self.unwrapInboundIn(data)
    switch frame.payload {
    case .headers(let headers):
      self.received(headers, on: frame.streamID, context: context)
    case .data(let data):
      self.received(data, on: frame.streamID, context: context)
    case .ping(_, ack: false):
      self.receivedPing(context: context)
    default:
      break
    }
  }

  func channelReadComplete(context: ChannelHandlerContext) {
    self.inReadLoop = false
    if self.flushPending {
      self.flushPending = false
      context.flush()
    }
    context.fireChannelReadComplete()
  }

  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    switch event {
    case let closed as StreamClosedEvent:
      if let stream = self.streams.removeValue(forKey: closed.streamID), !stream.responseEnded {
        stream.shared?.close(RPCError(code: .cancelled, message: "The client reset the stream."))
      }
    case let window as NIOHTTP2WindowUpdatedEvent:
      if window.streamID == .rootStream {
        // The connection's window: requests are held per stream, so it opens as data arrives.
        if let size = window.inboundWindowSize, let increment = self.increment(window: size, held: 0) {
          self.write(HTTP2Frame(streamID: .rootStream, payload: .windowUpdate(windowSizeIncrement: increment)))
        }
      } else if self.streams[window.streamID] != nil {
        self.streams[window.streamID]!.window = window.inboundWindowSize
        self.openWindow(of: window.streamID)
      }
    case let tls as TLSUserEvent:
      if case .handshakeCompleted(let negotiated) = tls, self.limits.requireALPN, negotiated != "h2" {
        context.close(promise: nil)
        return
      }
    default:
      break
    }
    context.fireUserInboundEventTriggered(event)
  }

  func channelInactive(context: ChannelHandlerContext) {
    let streams = self.streams
    self.streams = [:]
    for stream in streams.values where !stream.responseEnded {
      stream.shared?.close(RPCError(code: .unavailable, message: "The connection closed."))
    }
    context.fireChannelInactive()
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    // A stream's error has reset that stream (its StreamClosedEvent follows); any other ends the
    // connection, as NIOHTTP2Handler has told the client with a GOAWAY.
    if error is NIOHTTP2Errors.StreamError { return }
    context.close(promise: nil)
  }

  private func received(
    _ payload: HTTP2Frame.FramePayload.Headers, on id: HTTP2StreamID, context: ChannelHandlerContext
  ) {
    if self.streams[id] != nil {
      // Trailers of the request.
      if payload.endStream { self.requestEnded(id) }
      return
    }
    if id > self.lastStreamID { self.lastStreamID = id }
    let headers = payload.headers
    var stream = Stream(shared: nil, deframer: MessageDeframer(limit: self.limits.maxRequestMessageBytes))
    stream.requestEnded = payload.endStream
    guard let contentType = headers.first(name: "content-type"), GRPCWire.isGRPCContentType(contentType) else {
      var answer = HPACKHeaders()
      answer.add(name: ":status", value: "415")
      self.refuse(id, stream, with: answer)
      return
    }
    guard let path = headers.first(name: ":path") else {
      self.refuse(id, stream, with: GRPCWire.trailers(.invalidArgument, "No :path header has been set."))
      return
    }
    guard headers.first(name: ":method") == "POST" else {
      self.refuse(
        id, stream,
        with: GRPCWire.trailers(
          .invalidArgument, ":method header is expected to be present and have a value of \"POST\"."))
      return
    }
    if let encoding = headers.first(name: "grpc-encoding"), encoding != "identity" {
      self.refuse(
        id, stream,
        with: GRPCWire.trailers(
          .unimplemented,
          "\(encoding) compression is not supported; supported algorithms are listed in grpc-accept-encoding"))
      return
    }
    guard let descriptor = self.limits.descriptors[path] ?? Self.descriptor(path) else {
      self.refuse(id, stream, with: GRPCWire.trailers(.unimplemented, "No method at \(path)."))
      return
    }
    let shared = ServerStream(
      id: id, eventLoop: context.eventLoop, connection: self, windowTarget: self.limits.windowTarget)
    stream = Stream(shared: shared, deframer: stream.deframer, requestEnded: payload.endStream)
    self.streams[id] = stream
    shared.receive(.metadata(GRPCWire.metadata(headers)), bytes: 0)
    if payload.endStream { shared.endRequest(nil) }
    self.spawn(shared, descriptor, self.remotePeer, self.localPeer)
  }

  private func received(_ payload: HTTP2Frame.FramePayload.Data, on id: HTTP2StreamID, context: ChannelHandlerContext) {
    guard var stream = self.streams[id], let shared = stream.shared, !stream.requestEnded, !stream.responseEnded,
      case .byteBuffer(let bytes) = payload.data
    else {
      if payload.endStream { self.requestEnded(id) }
      return
    }
    stream.deframer.append(bytes)
    while true {
      switch stream.deframer.next() {
      case .message(let message):
        shared.receive(.message(TransportBytes(message)), bytes: message.readableBytes + 5)
        continue
      case .none:
        break
      case .tooLarge(let length):
        self.streams[id] = stream
        self.fail(
          id, .resourceExhausted,
          "request message of \(length) bytes exceeds the limit of \(self.limits.maxRequestMessageBytes) bytes")
        return
      case .compressed:
        self.streams[id] = stream
        self.fail(id, .internalError, "A compressed message was received without a grpc-encoding.")
        return
      }
      break
    }
    self.streams[id] = stream
    if payload.endStream { self.requestEnded(id) }
  }

  private func requestEnded(_ id: HTTP2StreamID) {
    guard var stream = self.streams[id], !stream.requestEnded else { return }
    stream.requestEnded = true
    self.streams[id] = stream
    guard let shared = stream.shared, !stream.responseEnded else { return }
    if stream.deframer.pendingBytes > 0 {
      self.fail(id, .internalError, "The request ended inside a message.")
    } else {
      shared.endRequest(nil)
    }
  }

  /// Answers a request refused from its headers; no RPC runs.
  private func refuse(_ id: HTTP2StreamID, _ stream: Stream, with answer: HPACKHeaders) {
    var stream = stream
    stream.responseEnded = true
    stream.headersSent = true
    self.streams[id] = stream
    self.write(HTTP2Frame(streamID: id, payload: .headers(.init(headers: answer, endStream: true))))
    if !stream.requestEnded {
      self.write(HTTP2Frame(streamID: id, payload: .rstStream(.noError)))
    }
    self.flushSoon()
  }

  /// Ends an accepted RPC with `code`: its response ends here and the RPC is cancelled.
  private func fail(_ id: HTTP2StreamID, _ code: Status.Code, _ message: String) {
    guard var stream = self.streams[id], !stream.responseEnded else { return }
    let trailers = GRPCWire.trailers(Status(code: code, message: message), [:], trailersOnly: !stream.headersSent)
    stream.responseEnded = true
    stream.headersSent = true
    self.streams[id] = stream
    stream.shared?.close(RPCError(code: .cancelled, message: message))
    self.write(HTTP2Frame(streamID: id, payload: .headers(.init(headers: trailers, endStream: true))))
    if !stream.requestEnded {
      // The client stops sending the rest of the request.
      self.write(HTTP2Frame(streamID: id, payload: .rstStream(.noError)))
    }
    self.flushSoon()
  }

  private func receivedPing(context: ChannelHandlerContext) {
    guard !self.calmedDown else { return }
    let now = NIODeadline.now()
    let interval =
      !self.streams.isEmpty || self.limits.allowPingsWithoutCalls ? self.limits.minClientPingInterval : .hours(2)
    if let last = self.lastValidPing, last + interval > now {
      self.pingStrikes += 1
      if self.pingStrikes > 2 {
        self.calmedDown = true
        let goAway = HTTP2Frame(
          streamID: .rootStream,
          payload: .goAway(
            lastStreamID: self.lastStreamID, errorCode: .enhanceYourCalm,
            opaqueData: context.channel.allocator.buffer(string: "too_many_pings")))
        context.writeAndFlush(self.wrapOutboundOut(goAway)).assumeIsolated().whenComplete { _ in
          context.close(promise: nil)
        }
      }
    } else {
      self.lastValidPing = now
    }
  }

  // MARK: Flow control

  /// Opens the stream's window for what the RPC has read; holds it while the RPC lags behind.
  private func openWindow(of id: HTTP2StreamID) {
    guard let stream = self.streams[id], let shared = stream.shared, let window = stream.window,
      !stream.requestEnded
    else { return }
    // Messages received and not yet read are held against the window; a message still arriving
    // is not (it may be larger than the window, and the size limit bounds it).
    let held = shared.unreadBytes(holding: false)
    if let increment = self.increment(window: window, held: held) {
      self.write(HTTP2Frame(streamID: id, payload: .windowUpdate(windowSizeIncrement: increment)))
      self.flushSoon()
    } else if window + held < self.limits.windowTarget, window <= self.limits.windowTarget / 2 {
      _ = shared.unreadBytes(holding: true)
      // The RPC may have read everything between the two looks.
      if shared.unreadBytes(holding: false) < held {
        self.openWindow(of: id)
      }
    }
  }

  /// The window update that brings the window and what is held up to the target, once that is
  /// at least half of it (as `NIOHTTP2`'s own stream channels do).
  private func increment(window: Int, held: Int) -> Int? {
    let effective = window + held
    guard effective < self.limits.windowTarget else { return nil }
    let increment = self.limits.windowTarget - effective
    return increment >= effective ? increment : nil
  }

  /// The RPC read request bytes after the stream's window was held.
  func reopenWindow(of shared: ServerStream) {
    guard let stream = self.streams[shared.id], stream.shared === shared else { return }
    self.openWindow(of: shared.id)
  }

  // MARK: Outbound

  /// Writes the response parts the RPC has handed over since the last drain.
  func drain(_ shared: ServerStream) {
    let parts = shared.takeOutbox()
    guard var stream = self.streams[shared.id], stream.shared === shared, !stream.responseEnded,
      let context = self.context
    else { return }
    for part in parts {
      switch part {
      case .metadata(let metadata):
        guard !stream.headersSent else { continue }
        stream.headersSent = true
        self.write(
          HTTP2Frame(
            streamID: shared.id, payload: .headers(.init(headers: GRPCWire.responseHeaders(metadata)))))
      case .message(let message):
        if !stream.headersSent {
          stream.headersSent = true
          self.write(HTTP2Frame(streamID: shared.id, payload: .headers(.init(headers: GRPCWire.responseHeaders([:])))))
        }
        let length = message.buffer.readableBytes
        var framed = context.channel.allocator.buffer(capacity: length + 5)
        framed.writeInteger(UInt8(0))
        framed.writeInteger(UInt32(length))
        framed.writeImmutableBuffer(message.buffer)
        let promise = context.eventLoop.makePromise(of: Void.self)
        promise.futureResult.whenComplete { _ in shared.written(length + 5) }
        self.write(HTTP2Frame(streamID: shared.id, payload: .data(.init(data: .byteBuffer(framed)))), promise: promise)
      case .status(let status, let metadata):
        let trailers = GRPCWire.trailers(status, metadata, trailersOnly: !stream.headersSent)
        stream.headersSent = true
        stream.responseEnded = true
        shared.responseSent()
        self.write(HTTP2Frame(streamID: shared.id, payload: .headers(.init(headers: trailers, endStream: true))))
        if !stream.requestEnded {
          self.write(HTTP2Frame(streamID: shared.id, payload: .rstStream(.noError)))
        }
      }
      if stream.responseEnded { break }
    }
    self.streams[shared.id] = stream
    // The server has sent HEADERS or DATA: the client's pings are welcome again.
    self.pingStrikes = 0
    self.lastValidPing = nil
    self.flushSoon()
  }

  private func write(_ frame: HTTP2Frame, promise: EventLoopPromise<Void>? = nil) {
    guard let context = self.context else {
      promise?.fail(ChannelError.ioOnClosedChannel)
      return
    }
    context.write(self.wrapOutboundOut(frame), promise: promise)
  }

  /// Flushes once for everything written in this read loop or this turn of the event loop.
  private func flushSoon() {
    if self.inReadLoop {
      self.flushPending = true
      return
    }
    guard !self.flushScheduled, let context = self.context else { return }
    self.flushScheduled = true
    context.eventLoop.assumeIsolatedUnsafeUnchecked().execute {
      self.flushScheduled = false
      self.context?.flush()
    }
  }

  // MARK: Names

  static func descriptor(_ path: String) -> MethodDescriptor? {
    guard path.first == "/", let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return nil }
    let service = path[path.index(after: path.startIndex)..<slash]
    let method = path[path.index(after: slash)...]
    guard !service.isEmpty, !method.isEmpty else { return nil }
    return MethodDescriptor(fullyQualifiedService: String(service), method: String(method))
  }

  static func describe(_ address: SocketAddress?) -> String {
    switch address {
    case .v4(let ipv4)?: return "ipv4:\(ipv4.host):\(address!.port!)"
    case .v6(let ipv6)?: return "ipv6:[\(ipv6.host)]:\(address!.port!)"
    case .unixDomainSocket?: return "unix:\(address!.pathname ?? "")"
    case nil: return "<unknown>"
    }
  }
}
