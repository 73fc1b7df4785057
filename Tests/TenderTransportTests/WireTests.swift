import Foundation
import GRPCCore
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix
import Synchronization
import Testing

@testable import TenderTransport

/// Tender's server transport over a real socket, driven by a raw HTTP/2 client that writes the
/// frames itself: what a stock gRPC client never sends is answered as gRPC servers answer it.
@Suite("TenderServerTransport on the wire")
struct WireTests {
  /// Runs `body` against a transport on a free loopback port whose RPCs `serve` answers.
  static func withTransport(
    tune: (inout TenderServerTransport.Config) -> Void = { _ in },
    serve:
      @escaping @Sendable (RPCStream<TenderServerTransport.Inbound, TenderServerTransport.Outbound>, ServerContext)
      async
      -> Void = echo,
    _ body: (Int) async throws -> Void
  ) async throws {
    var config = TenderServerTransport.Config(host: "127.0.0.1", port: 0, tls: nil)
    config.maxRequestMessageBytes = 1024 * 1024
    tune(&config)
    let transport = try TenderServerTransport(config: config)
    try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask { try await transport.listen(streamHandler: serve) }
      let port = try await transport.listeningAddress.port!
      try await body(port)
      transport.beginGracefulShutdown()
      try await group.waitForAll()
    }
  }

  /// Answers each request message with itself, and the request's `x-echo-bin` in the trailers.
  static let echo:
    @Sendable (RPCStream<TenderServerTransport.Inbound, TenderServerTransport.Outbound>, ServerContext)
      async -> Void = { stream, _ in
        var trailers: Metadata = [:]
        do {
          try await stream.outbound.write(.metadata([:]))
          for try await part in stream.inbound {
            switch part {
            case .metadata(let metadata):
              for value in metadata[binaryValues: "x-echo-bin"] { trailers.addBinary(value, forKey: "x-echo-bin") }
            case .message(let bytes):
              try await stream.outbound.write(.message(bytes))
            }
          }
          try await stream.outbound.write(.status(Status(code: .ok, message: ""), trailers))
        } catch {
          try? await stream.outbound.write(.status(Status(code: .cancelled, message: "\(error)"), [:]))
        }
        await stream.outbound.finish()
      }

  static func headers(
    path: String = "/test.Echo/Echo", method: String = "POST", contentType: String? = "application/grpc",
    extra: [(String, String)] = []
  ) -> HPACKHeaders {
    var headers = HPACKHeaders()
    headers.add(name: ":method", value: method)
    headers.add(name: ":scheme", value: "http")
    headers.add(name: ":path", value: path)
    headers.add(name: ":authority", value: "localhost")
    if let contentType { headers.add(name: "content-type", value: contentType) }
    headers.add(name: "te", value: "trailers")
    for (name, value) in extra { headers.add(name: name, value: value) }
    return headers
  }

  static func message(_ bytes: [UInt8], compressed: Bool = false, declaring length: Int? = nil) -> ByteBuffer {
    var buffer = ByteBuffer()
    buffer.writeInteger(UInt8(compressed ? 1 : 0))
    buffer.writeInteger(UInt32(length ?? bytes.count))
    buffer.writeBytes(bytes)
    return buffer
  }

  @Test(
    "A request that is not gRPC's is refused from its headers with the status gRPC servers give",
    arguments: [
      ("no content-type", Self.headers(contentType: nil), ":status", "415"),
      ("JSON", Self.headers(contentType: "application/json"), ":status", "415"),
      ("GET", Self.headers(method: "GET"), "grpc-status", "3"),
      ("gzip", Self.headers(extra: [("grpc-encoding", "gzip")]), "grpc-status", "12"),
      ("a path without a method", Self.headers(path: "/test.Echo"), "grpc-status", "12"),
    ])
  func refusedFromHeaders(_ name: String, _ headers: HPACKHeaders, _ field: String, _ value: String) async throws {
    try await Self.withTransport { port in
      let client = try await RawClient.connect(port: port)
      try await client.send(HTTP2Frame(streamID: 1, payload: .headers(.init(headers: headers))))
      let answer = try await client.frames(until: { $0.contains { $0.isEnd(of: 1) } })
      let last = try #require(answer.last { $0.streamID == 1 && $0.headerBlock != nil })
      #expect(last.headerBlock?.first(name: field) == value, "\(name)")
      // The request never finished: the server asks the client to stop sending it.
      #expect(answer.contains { $0.streamID == 1 && $0.isReset(.noError) })
      try await client.close()
    }
  }

  @Test("Messages split across DATA frames, and one larger than the stream's window, arrive whole")
  func splitAndLargeMessages() async throws {
    try await Self.withTransport { port in
      let client = try await RawClient.connect(port: port)
      let small = Self.message(Array("hello".utf8))
      let large = Self.message([UInt8](repeating: 0x61, count: 200_000))
      var request = small
      request.writeImmutableBuffer(large)
      try await client.send(HTTP2Frame(streamID: 1, payload: .headers(.init(headers: Self.headers()))))
      // Three bytes of the first message alone, then the rest in frames of 16 KiB: the second
      // message is three times the stream's window.
      try await client.send(
        HTTP2Frame(streamID: 1, payload: .data(.init(data: .byteBuffer(request.readSlice(length: 3)!)))))
      client.sendInFrames(stream: 1, request, endStream: true)
      let answer = try await client.frames(until: { $0.contains { $0.isEnd(of: 1) } })
      var body = ByteBuffer()
      for frame in answer where frame.streamID == 1 {
        if case .data(let data) = frame.payload, case .byteBuffer(let bytes) = data.data {
          body.writeImmutableBuffer(bytes)
        }
      }
      var expected = Self.message(Array("hello".utf8))
      expected.writeImmutableBuffer(Self.message([UInt8](repeating: 0x61, count: 200_000)))
      #expect(body == expected)
      #expect(answer.last { $0.streamID == 1 }?.headerBlock?.first(name: "grpc-status") == "0")
      try await client.close()
    }
  }

  @Test(
    "A message that declares too much, says it is compressed, or is cut short is refused on its stream alone",
    arguments: [
      ("over the limit", Self.message([1, 2], declaring: 2 * 1024 * 1024), "8"),
      ("compressed", Self.message([1, 2], compressed: true), "13"),
      ("cut short", Self.message([1, 2], declaring: 10), "13"),
    ])
  func lyingMessages(_ name: String, _ body: ByteBuffer, _ status: String) async throws {
    try await Self.withTransport { port in
      let client = try await RawClient.connect(port: port)
      try await client.send(HTTP2Frame(streamID: 1, payload: .headers(.init(headers: Self.headers()))))
      try await client.send(HTTP2Frame(streamID: 1, payload: .data(.init(data: .byteBuffer(body), endStream: true))))
      var answer = try await client.frames(until: { $0.contains { $0.isEnd(of: 1) } })
      #expect(answer.last { $0.streamID == 1 }?.headerBlock?.first(name: "grpc-status") == status, "\(name)")
      // The connection still serves.
      try await client.send(HTTP2Frame(streamID: 3, payload: .headers(.init(headers: Self.headers()))))
      try await client.send(
        HTTP2Frame(streamID: 3, payload: .data(.init(data: .byteBuffer(Self.message([7])), endStream: true))))
      answer = try await client.frames(until: { $0.contains { $0.isEnd(of: 3) } })
      #expect(answer.last { $0.streamID == 3 }?.headerBlock?.first(name: "grpc-status") == "0")
      try await client.close()
    }
  }

  @Test("Binary metadata is read from base64 and written back as base64")
  func binaryMetadata() async throws {
    let bytes: [UInt8] = [0, 1, 2, 0xFE, 0xFF]
    try await Self.withTransport { port in
      let client = try await RawClient.connect(port: port)
      // Unpadded, as gRPC allows; the answer is padded.
      let headers = Self.headers(extra: [("x-echo-bin", "AAEC/v8")])
      try await client.send(HTTP2Frame(streamID: 1, payload: .headers(.init(headers: headers, endStream: true))))
      let answer = try await client.frames(until: { $0.contains { $0.isEnd(of: 1) } })
      let trailers = try #require(answer.last { $0.streamID == 1 }?.headerBlock)
      #expect(trailers.first(name: "x-echo-bin") == Data(bytes).base64EncodedString())
      try await client.close()
    }
  }

  @Test("An RPC whose stream the client resets is cancelled")
  func resetCancels() async throws {
    let cancelled = Mutex(false)
    let started = AsyncStream.makeStream(of: Void.self)
    try await Self.withTransport(
      serve: { stream, context in
        started.continuation.yield()
        // Waits for a request message that never comes; the reset ends the wait.
        do {
          for try await _ in stream.inbound {}
        } catch {}
        _ = try? await context.cancellation.cancelled
        cancelled.withLock { $0 = context.cancellation.isCancelled }
      }
    ) { port in
      let client = try await RawClient.connect(port: port)
      try await client.send(HTTP2Frame(streamID: 1, payload: .headers(.init(headers: Self.headers()))))
      for await _ in started.stream { break }
      try await client.send(HTTP2Frame(streamID: 1, payload: .rstStream(.cancel)))
      try await client.close()
    }
    // The transport's listen returned only after the RPC ended.
    #expect(cancelled.withLock { $0 })
  }

  @Test("Pings faster than the allowed interval end the connection with GOAWAY ENHANCE_YOUR_CALM")
  func pingPolicing() async throws {
    try await Self.withTransport(tune: { $0.minClientPingInterval = .seconds(60) }) { port in
      let client = try await RawClient.connect(port: port)
      for index in 0..<4 {
        try await client.send(
          HTTP2Frame(streamID: .rootStream, payload: .ping(HTTP2PingData(withInteger: UInt64(index)), ack: false)))
      }
      let answer = try await client.frames(until: { frames in
        frames.contains { if case .goAway = $0.payload { return true } else { return false } }
      })
      let goAway = answer.compactMap { frame -> HTTP2ErrorCode? in
        if case .goAway(_, let code, _) = frame.payload { return code } else { return nil }
      }
      #expect(goAway == [.enhanceYourCalm])
      try? await client.close()
    }
  }
}

@Suite("gRPC's wire encodings")
struct WireEncodingTests {
  @Test("Base64 matches Foundation's, both ways, padded or not")
  func base64() {
    var generator = SystemRandomNumberGenerator()
    for length in 0..<64 {
      let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
      let foundation = Data(bytes).base64EncodedString()
      #expect(Base64.encode(bytes) == foundation)
      #expect(Base64.decode(foundation) == bytes)
      #expect(Base64.decode(String(foundation.prefix { $0 != "=" })) == bytes)
    }
    #expect(Base64.decode("a") == nil)
    #expect(Base64.decode("ab!c") == nil)
  }

  @Test("grpc-message is percent-encoded outside printable ASCII, and % itself")
  func percentEncoding() {
    #expect(GRPCWire.percentEncoded("plain text: ok") == "plain text: ok")
    #expect(GRPCWire.percentEncoded("100%") == "100%25")
    #expect(GRPCWire.percentEncoded("é\n") == "%C3%A9%0A")
  }

  @Test("The deframer waits for a whole message and refuses one over the limit from its prefix")
  func deframer() {
    var deframer = MessageDeframer(limit: 10)
    var first = ByteBuffer(bytes: [0, 0, 0, 0, 3, 1])
    deframer.append(first.readSlice(length: 6)!)
    #expect(deframer.next() == .none)
    deframer.append(ByteBuffer(bytes: [2, 3, 0, 0, 0, 0, 0]))
    #expect(deframer.next() == .message(ByteBuffer(bytes: [1, 2, 3])))
    #expect(deframer.next() == .message(ByteBuffer()))
    #expect(deframer.pendingBytes == 0)
    deframer.append(ByteBuffer(bytes: [0, 0, 0, 0, 11]))
    #expect(deframer.next() == .tooLarge(11))
    var compressed = MessageDeframer(limit: 10)
    compressed.append(ByteBuffer(bytes: [1, 0, 0, 0, 1, 9]))
    #expect(compressed.next() == .compressed)
  }
}

extension HTTP2Frame {
  var headerBlock: HPACKHeaders? {
    if case .headers(let headers) = self.payload { return headers.headers }
    return nil
  }

  func isEnd(of stream: HTTP2StreamID) -> Bool {
    guard self.streamID == stream else { return false }
    switch self.payload {
    case .headers(let headers): return headers.endStream
    case .rstStream: return true
    default: return false
    }
  }

  func isReset(_ code: HTTP2ErrorCode) -> Bool {
    if case .rstStream(let reset) = self.payload { return reset == code }
    return false
  }
}

/// An HTTP/2 client that writes frames as it is told and records every frame it receives. It
/// opens its windows again for all the DATA it receives.
final class RawClient: Sendable {
  let channel: any Channel
  private let recorder: Recorder

  private init(channel: any Channel, recorder: Recorder) {
    self.channel = channel
    self.recorder = recorder
  }

  static func connect(port: Int) async throws -> RawClient {
    let recorder = Recorder()
    let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
      .channelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          try channel.pipeline.syncOperations.addHandler(NIOHTTP2Handler(mode: .client))
          try channel.pipeline.syncOperations.addHandler(recorder)
        }
      }
      .connect(host: "127.0.0.1", port: port).get()
    return RawClient(channel: channel, recorder: recorder)
  }

  func send(_ frame: HTTP2Frame) async throws {
    try await self.channel.writeAndFlush(frame)
  }

  /// Sends `body` on `stream` in DATA frames of 16 KiB; NIOHTTP2Handler holds them to the
  /// server's windows.
  func sendInFrames(stream: HTTP2StreamID, _ body: ByteBuffer, endStream: Bool) {
    var body = body
    while body.readableBytes > 0 {
      let chunk = body.readSlice(length: min(16_384, body.readableBytes))!
      let last = endStream && body.readableBytes == 0
      // Not awaited: a frame held for a window that never opens must not hang the test.
      self.channel.writeAndFlush(
        HTTP2Frame(streamID: stream, payload: .data(.init(data: .byteBuffer(chunk), endStream: last))), promise: nil)
    }
  }

  /// The frames received so far, once `done` holds for them (failing after 10 s).
  func frames(until done: @escaping @Sendable ([HTTP2Frame]) -> Bool) async throws -> [HTTP2Frame] {
    let deadline = ContinuousClock.now + .seconds(10)
    while ContinuousClock.now < deadline {
      let frames = self.recorder.frames.withLock { $0 }
      if done(frames) { return frames }
      try await Task.sleep(for: .milliseconds(5))
    }
    throw RPCError(code: .deadlineExceeded, message: "the frames expected did not arrive")
  }

  func close() async throws {
    try await self.channel.close()
  }

  final class Recorder: ChannelInboundHandler, Sendable {
    typealias InboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame
    let frames = Mutex<[HTTP2Frame]>([])

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
      let frame = self.unwrapInboundIn(data)
      self.frames.withLock { $0.append(frame) }
      if case .data(let data) = frame.payload, data.data.readableBytes > 0 {
        let size = data.data.readableBytes
        context.write(
          self.wrapOutboundOut(HTTP2Frame(streamID: frame.streamID, payload: .windowUpdate(windowSizeIncrement: size))),
          promise: nil)
        context.writeAndFlush(
          self.wrapOutboundOut(HTTP2Frame(streamID: .rootStream, payload: .windowUpdate(windowSizeIncrement: size))),
          promise: nil)
      }
    }
  }
}
