import NIOCore
import NIOHPACK
import NIOHTTP2

/// Rejects a request message larger than the limit with a proper gRPC status
/// (RESOURCE_EXHAUSTED) on that one stream, leaving the connection and its other RPCs alone.
///
/// It sits on each HTTP/2 stream in front of the gRPC stream handler and reads only the 5-byte
/// gRPC length prefixes: an oversized message is refused before its body is buffered.
final class MessageSizeLimitHandler: ChannelDuplexHandler, RemovableChannelHandler {
  typealias InboundIn = HTTP2Frame.FramePayload
  typealias InboundOut = HTTP2Frame.FramePayload
  typealias OutboundIn = HTTP2Frame.FramePayload
  typealias OutboundOut = HTTP2Frame.FramePayload

  private let limit: Int
  /// Body bytes of the current message still to come.
  private var remaining = 0
  /// The prefix of the next message, while it is split across frames.
  private var prefix: [UInt8] = []
  private var responseHeadersSent = false
  private var rejected = false

  init(limit: Int) {
    self.limit = limit
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    guard !self.rejected else { return }
    let payload = self.unwrapInboundIn(data)
    if case .data(let frame) = payload, case .byteBuffer(let buffer) = frame.data {
      if let length = self.oversizedMessageLength(in: buffer) {
        self.reject(context: context, length: length)
        return
      }
    }
    context.fireChannelRead(data)
  }

  func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
    guard !self.rejected else {
      promise?.fail(ChannelError.ioOnClosedChannel)
      return
    }
    if case .headers = self.unwrapOutboundIn(data) {
      self.responseHeadersSent = true
    }
    context.write(data, promise: promise)
  }

  /// Walks the message boundaries in `buffer`; returns a declared length over the limit, if any.
  private func oversizedMessageLength(in buffer: ByteBuffer) -> Int? {
    var view = buffer
    while view.readableBytes > 0 {
      if self.remaining > 0 {
        let skipped = min(self.remaining, view.readableBytes)
        view.moveReaderIndex(forwardBy: skipped)
        self.remaining -= skipped
        continue
      }
      let needed = 5 - self.prefix.count
      let take = min(needed, view.readableBytes)
      self.prefix += view.readBytes(length: take) ?? []
      guard self.prefix.count == 5 else { break }
      let length = self.prefix[1...4].reduce(0) { ($0 << 8) | Int($1) }
      self.prefix = []
      if length > self.limit { return length }
      self.remaining = length
    }
    return nil
  }

  private func reject(context: ChannelHandlerContext, length: Int) {
    self.rejected = true
    var headers = HPACKHeaders()
    if !self.responseHeadersSent {
      headers.add(name: ":status", value: "200")
      headers.add(name: "content-type", value: "application/grpc")
    }
    headers.add(name: "grpc-status", value: "8")
    headers.add(
      name: "grpc-message", value: "request message of \(length) bytes exceeds the limit of \(self.limit) bytes")
    let trailers = HTTP2Frame.FramePayload.headers(.init(headers: headers, endStream: true))
    context.writeAndFlush(self.wrapOutboundOut(trailers)).whenComplete { _ in
      // Resets the stream so the client stops sending the rest of the message.
      context.close(promise: nil)
    }
  }
}
