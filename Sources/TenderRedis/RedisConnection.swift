import CHiredis
public import NIOCore
public import NIOPosix
import NIOSSL
import Synchronization
import TenderCore

/// Why a Redis command did not get an answer.
public enum RedisError: Error, Sendable, Hashable, CustomStringConvertible {
  /// No connection could be made (or the pool is backing off after failures).
  case unavailable
  /// The connection closed before the reply came.
  case connectionClosed
  /// No reply within the command timeout; the connection is dropped.
  case timeout
  /// The bytes from the server were not valid RESP.
  case protocolError
  /// Redis answered with an error reply.
  case reply(String)
  /// The TLS settings cannot be used (say, the CA file cannot be read).
  case tlsConfiguration(String)

  public var description: String {
    switch self {
    case .unavailable: return "Redis is unavailable"
    case .connectionClosed: return "the Redis connection closed"
    case .timeout: return "Redis did not answer in time"
    case .protocolError: return "Redis sent an invalid reply"
    case .reply(let message): return "Redis error: \(message.prefix(200))"
    case .tlsConfiguration(let problem): return "Redis TLS settings: \(problem.prefix(200))"
    }
  }
}

/// One command on its way to Redis, with the promise its reply completes.
struct RedisRequest {
  let arguments: [[UInt8]]
  let promise: EventLoopPromise<RESPValue>
}

/// Encodes commands with hiredis and parses replies with hiredis's reader, matching replies to
/// requests in order (Redis answers a connection's commands in the order they were sent).
final class RedisProtocolHandler: ChannelDuplexHandler {
  typealias InboundIn = ByteBuffer
  typealias OutboundIn = RedisRequest
  typealias OutboundOut = ByteBuffer

  private let reader: UnsafeMutablePointer<redisReader>
  private var pending = CircularBuffer<EventLoopPromise<RESPValue>>()
  private var context: ChannelHandlerContext?
  private var flushScheduled = false

  init() {
    self.reader = redisReaderCreate()
  }

  deinit {
    redisReaderFree(self.reader)
  }

  func handlerAdded(context: ChannelHandlerContext) {
    self.context = context
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    self.context = nil
  }

  /// One flush per turn of the event loop: the commands of concurrent callers that reach this
  /// loop together (each sent with its own writeAndFlush) leave in one write, and Redis reads
  /// them, and writes their replies, in one go too.
  func flush(context: ChannelHandlerContext) {
    guard !self.flushScheduled else { return }
    self.flushScheduled = true
    context.eventLoop.assumeIsolatedUnsafeUnchecked().execute {
      self.flushScheduled = false
      self.context?.flush()
    }
  }

  func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
    let request = self.unwrapOutboundIn(data)
    var buffer = context.channel.allocator.buffer(capacity: 64)
    RESPCommand.encode(request.arguments, into: &buffer)
    self.pending.append(request.promise)
    context.write(self.wrapOutboundOut(buffer), promise: promise)
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    let buffer = self.unwrapInboundIn(data)
    let fed = buffer.withUnsafeReadableBytes { bytes in
      redisReaderFeed(self.reader, bytes.baseAddress?.assumingMemoryBound(to: CChar.self), bytes.count)
    }
    guard fed == REDIS_OK else {
      self.failAll(RedisError.protocolError, context: context)
      return
    }
    while true {
      var reply: UnsafeMutableRawPointer? = nil
      guard redisReaderGetReply(self.reader, &reply) == REDIS_OK else {
        self.failAll(RedisError.protocolError, context: context)
        return
      }
      guard let reply else { return }
      let value = RESPValue(reply: reply.assumingMemoryBound(to: redisReply.self))
      freeReplyObject(reply)
      guard let promise = self.pending.popFirst() else {
        // A reply nobody asked for: the stream is out of step.
        self.failAll(RedisError.protocolError, context: context)
        return
      }
      promise.succeed(value)
    }
  }

  func channelInactive(context: ChannelHandlerContext) {
    self.failPending(RedisError.connectionClosed)
    context.fireChannelInactive()
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    self.failAll(RedisError.connectionClosed, context: context)
  }

  private func failAll(_ error: RedisError, context: ChannelHandlerContext) {
    self.failPending(error)
    context.close(promise: nil)
  }

  private func failPending(_ error: RedisError) {
    while let promise = self.pending.popFirst() {
      promise.fail(error)
    }
  }
}

/// A single connection to Redis; commands may be sent concurrently and are pipelined.
public final class RedisConnection: Sendable {
  private let channel: any Channel
  private let commandTimeout: Duration

  private init(channel: any Channel, commandTimeout: Duration) {
    self.channel = channel
    self.commandTimeout = commandTimeout
  }

  /// Whether the connection can still carry commands.
  public var isActive: Bool { self.channel.isActive }

  /// Connects, authenticates and selects the database if configured.
  public static func connect(
    to configuration: RedisConfiguration,
    on group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
  ) async throws -> RedisConnection {
    let context: NIOSSLContext?
    if let tls = configuration.tls {
      var settings = TLSConfiguration.makeClientConfiguration()
      settings.minimumTLSVersion = .tlsv12
      if let caFile = tls.caFile { settings.trustRoots = .file(caFile) }
      do {
        context = try NIOSSLContext(configuration: settings)
      } catch {
        throw RedisError.tlsConfiguration("\(error)")
      }
    } else {
      context = nil
    }
    // A host name is verified against the certificate (and sent as SNI); an address is verified
    // against the certificate's IP addresses.
    let isAddress = (try? SocketAddress(ipAddress: configuration.host, port: 0)) != nil
    let serverHostname = isAddress ? nil : configuration.host
    let channel: any Channel
    do {
      channel = try await ClientBootstrap(group: group)
        .connectTimeout(TimeAmount(configuration.connectTimeout))
        .channelOption(.socketOption(.tcp_nodelay), value: 1)
        .channelInitializer { channel in
          channel.eventLoop.makeCompletedFuture {
            if let context {
              try channel.pipeline.syncOperations.addHandler(
                NIOSSLClientHandler(context: context, serverHostname: serverHostname))
            }
            try channel.pipeline.syncOperations.addHandler(RedisProtocolHandler())
          }
        }
        .connect(host: configuration.host, port: configuration.port).get()
    } catch {
      throw RedisError.unavailable
    }
    let connection = RedisConnection(channel: channel, commandTimeout: configuration.commandTimeout)
    do {
      if let password = configuration.password {
        // The TLS handshake completes before the first reply: a server that fails verification
        // closes the connection here.
        let command = configuration.username.map { ["AUTH", $0, password.value] } ?? ["AUTH", password.value]
        try await connection.expectOK(connection.send(command))
      } else if configuration.tls != nil {
        _ = try await connection.send(["PING"])
      }
      if configuration.database != 0 {
        try await connection.expectOK(connection.send(["SELECT", String(configuration.database)]))
      }
    } catch {
      connection.close()
      throw error
    }
    return connection
  }

  /// Sends a command and waits for its reply. An error reply is returned as `.error`, not thrown;
  /// a timeout closes the connection (its reply stream can no longer be trusted) and throws.
  public func send(_ arguments: [String]) async throws -> RESPValue {
    try await self.send(bytes: arguments.map { Array($0.utf8) })
  }

  /// Sends a command with binary arguments.
  public func send(bytes arguments: [[UInt8]]) async throws -> RESPValue {
    let eventLoop = self.channel.eventLoop
    let promise = eventLoop.makePromise(of: RESPValue.self)
    let channel = self.channel
    let timedOut = TimeoutFlag()
    let timeout = eventLoop.scheduleTask(in: TimeAmount(self.commandTimeout)) {
      timedOut.set()
      channel.close(promise: nil)
    }
    promise.futureResult.whenComplete { _ in timeout.cancel() }
    // A write that fails (the connection closed meanwhile: its handlers are gone, so nothing else
    // would answer) fails the command; the connection is closed so no later reply is misread.
    let written = eventLoop.makePromise(of: Void.self)
    written.futureResult.whenFailure { _ in
      promise.fail(RedisError.connectionClosed)
      channel.close(promise: nil)
    }
    self.channel.writeAndFlush(RedisRequest(arguments: arguments, promise: promise), promise: written)
    do {
      return try await promise.futureResult.get()
    } catch RedisError.connectionClosed where timedOut.isSet {
      throw RedisError.timeout
    } catch let error as RedisError {
      throw error
    } catch {
      throw RedisError.connectionClosed
    }
  }

  /// Closes the connection; commands still waiting fail with `connectionClosed`.
  public func close() {
    self.channel.close(promise: nil)
  }

  private func expectOK(_ reply: RESPValue) throws {
    if case .error(let message) = reply { throw RedisError.reply(message) }
  }
}

/// Set once when a command's timeout fires.
private final class TimeoutFlag: Sendable {
  private let value = Atomic<Bool>(false)
  func set() { self.value.store(true, ordering: .relaxed) }
  var isSet: Bool { self.value.load(ordering: .relaxed) }
}

extension TimeAmount {
  init(_ duration: Duration) {
    let (seconds, attoseconds) = duration.components
    self = .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
  }
}
