public import GRPCCore
public import NIOCore
import NIOHPACK
import NIOHTTP2
public import NIOSSL
import NIOPosix
import Synchronization
import TenderCore

/// Tender's gRPC server transport: gRPC over HTTP/2 (and TLS) on SwiftNIO, with every stream of
/// a connection served by one channel handler on the connection's event loop.
///
/// grpc-swift's own HTTP/2 transport gives each stream a child channel with its own pipeline and
/// async wrappers, and hops through a task per connection to start each RPC; here a stream is an
/// entry in its connection's table (`ServerConnectionHandler`) and a small shared object between
/// the event loop and the RPC's task (`ServerStream`), and the RPC's task starts straight from the
/// event loop. GRPCCore's semantics are kept: the request's parts, the response's parts, the
/// cancellation of an RPC whose stream is reset, the server's graceful shutdown.
public final class TenderServerTransport: ServerTransport {
  public typealias Bytes = TransportBytes

  public struct Config: Sendable {
    public var host: String
    public var port: Int
    /// TLS for every connection; nil serves plaintext HTTP/2.
    public var tls: TLSConfiguration?
    public var maxConcurrentStreams: Int?
    public var maxRequestMessageBytes = 4 * 1024 * 1024
    /// The inbound window of each stream and of the connection.
    public var windowTarget = 65_535
    public var maxFrameSize = 16_384
    public var keepaliveTime: TimeAmount = .hours(2)
    public var keepaliveTimeout: TimeAmount = .seconds(20)
    public var minClientPingInterval: TimeAmount = .minutes(5)
    public var allowPingsWithoutCalls = false
    public var maxConnectionIdle: TimeAmount?
    public var maxConnectionAge: TimeAmount?
    public var maxConnectionAgeGrace: TimeAmount?
    /// Called for each accepted TCP connection, on its event loop.
    public var onAcceptConnection: (@Sendable () -> Void)?

    public init(host: String, port: Int, tls: TLSConfiguration?) {
      self.host = host
      self.port = port
      self.tls = tls
    }
  }

  private let config: Config
  private let group: any EventLoopGroup
  private let sslContext: NIOSSLContext?
  private let descriptors = Mutex<[String: MethodDescriptor]>([:])
  private let address: EventLoopPromise<SocketAddress>
  private let state = Mutex(State())

  private struct State {
    var server: (any Channel)?
    var connections: [ObjectIdentifier: any Channel] = [:]
    var rpcs = 0
    var shuttingDown = false
    var drained: [CheckedContinuation<Void, Never>] = []
    var addressSettled = false

    var isDrained: Bool { self.shuttingDown && self.connections.isEmpty && self.rpcs == 0 }

    mutating func takeWaiters() -> [CheckedContinuation<Void, Never>] {
      defer { self.drained = [] }
      return self.drained
    }

    /// True the first time only: the listening address's promise is settled once.
    mutating func settleAddress() -> Bool {
      defer { self.addressSettled = true }
      return !self.addressSettled
    }
  }

  /// Serves on `group`, NIO's shared event loops when nil.
  public init(config: Config, group: (any EventLoopGroup)? = nil) throws {
    let group = group ?? MultiThreadedEventLoopGroup.singleton
    self.config = config
    self.group = group
    self.sslContext = try config.tls.map { try NIOSSLContext(configuration: $0) }
    self.address = group.any().makePromise()
  }

  deinit {
    if self.state.withLock({ $0.settleAddress() }) {
      self.address.fail(ChannelError.ioOnClosedChannel)
    }
  }

  /// The address the transport listens on, once it does.
  public var listeningAddress: SocketAddress {
    get async throws { try await self.address.futureResult.get() }
  }

  public func configure(context: GRPCServerContext) {
    var descriptors: [String: MethodDescriptor] = [:]
    for method in context.methods {
      descriptors["/\(method.service.fullyQualifiedService)/\(method.method)"] = method
    }
    self.descriptors.withLock { $0 = descriptors }
  }

  public func listen(
    streamHandler: @escaping @Sendable (_ stream: RPCStream<Inbound, Outbound>, _ context: ServerContext) async -> Void
  ) async throws {
    let limits = ServerConnectionHandler.Limits(
      maxRequestMessageBytes: self.config.maxRequestMessageBytes,
      windowTarget: self.config.windowTarget,
      requireALPN: self.config.tls != nil,
      minClientPingInterval: self.config.minClientPingInterval,
      allowPingsWithoutCalls: self.config.allowPingsWithoutCalls,
      descriptors: self.descriptors.withLock { $0 }
    )
    // Each RPC's task runs on its connection's event loop (see `EventLoopTaskExecutor`).
    var executors: [ObjectIdentifier: EventLoopTaskExecutor] = [:]
    for loop in self.group.makeIterator() { executors[ObjectIdentifier(loop)] = EventLoopTaskExecutor(loop) }
    let loopExecutors = executors
    let spawn: ServerConnectionHandler.Spawn = { [self] stream, descriptor, remotePeer, localPeer in
      self.state.withLock { $0.rpcs += 1 }
      let executor = loopExecutors[ObjectIdentifier(stream.eventLoop)]
      Task(executorPreference: executor) {
        await PreferredExecutor.$current.withValue(executor) {
          await withServerContextRPCCancellationHandle { handle in
            stream.attach(handle)
            await streamHandler(
              RPCStream(
                descriptor: descriptor,
                inbound: RPCAsyncSequence(wrapping: ServerStreamInbound(stream: stream)),
                outbound: RPCWriter.Closable(wrapping: ServerStreamOutbound(stream: stream))),
              ServerContext(descriptor: descriptor, remotePeer: remotePeer, localPeer: localPeer, cancellation: handle)
            )
          }
        }
        self.rpcEnded()
      }
    }
    let bootstrap = ServerBootstrap(group: self.group)
      .serverChannelOption(.backlog, value: 1024)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .childChannelOption(ChannelOptions.tcpOption(.tcp_nodelay), value: 1)
      .childChannelInitializer { [self] channel in
        channel.eventLoop.makeCompletedFuture {
          try self.configure(channel, limits: limits, spawn: spawn)
        }
      }
    let server: any Channel
    do {
      server = try await bootstrap.bind(host: self.config.host, port: self.config.port).get()
    } catch {
      if self.state.withLock({ $0.settleAddress() }) { self.address.fail(error) }
      throw error
    }
    let alreadyShuttingDown = self.state.withLock { state in
      state.server = server
      return state.shuttingDown
    }
    if alreadyShuttingDown { server.close(promise: nil) }
    if self.state.withLock({ $0.settleAddress() }) {
      if let address = server.localAddress {
        self.address.succeed(address)
      } else {
        self.address.fail(ChannelError.ioOnClosedChannel)
      }
    }
    await withTaskCancellationHandler {
      try? await server.closeFuture.get()
      // Listening has stopped (a graceful shutdown); the connections and RPCs end in their time.
      self.state.withLock { $0.shuttingDown = true }
      await self.drained()
    } onCancel: {
      let connections = self.state.withLock { state in
        state.shuttingDown = true
        return Array(state.connections.values)
      }
      server.close(promise: nil)
      for connection in connections { connection.close(promise: nil) }
    }
  }

  public func beginGracefulShutdown() {
    let (server, connections) = self.state.withLock { state in
      state.shuttingDown = true
      return (state.server, Array(state.connections.values))
    }
    server?.close(promise: nil)
    // Each connection sends GOAWAY and closes once its streams end (or its grace time passes).
    for connection in connections {
      connection.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
    }
  }

  private func configure(
    _ channel: any Channel, limits: ServerConnectionHandler.Limits, spawn: @escaping ServerConnectionHandler.Spawn
  ) throws {
    let id = ObjectIdentifier(channel)
    let shuttingDown = self.state.withLock { state in
      state.connections[id] = channel
      return state.shuttingDown
    }
    channel.closeFuture.whenComplete { [self] _ in
      self.connectionClosed(id)
    }
    self.config.onAcceptConnection?()
    let sync = channel.pipeline.syncOperations
    if let sslContext = self.sslContext {
      try sync.addHandler(NIOSSLServerHandler(context: sslContext))
    }
    var connection = NIOHTTP2Handler.ConnectionConfiguration()
    connection.targetWindowSize = self.config.windowTarget
    var settings: HTTP2Settings = [
      HTTP2Setting(parameter: .initialWindowSize, value: self.config.windowTarget),
      HTTP2Setting(parameter: .maxFrameSize, value: self.config.maxFrameSize),
      HTTP2Setting(parameter: .maxHeaderListSize, value: HPACKDecoder.defaultMaxHeaderListSize),
    ]
    if let maxConcurrentStreams = self.config.maxConcurrentStreams {
      settings.append(HTTP2Setting(parameter: .maxConcurrentStreams, value: maxConcurrentStreams))
    }
    connection.initialSettings = settings
    var stream = NIOHTTP2Handler.StreamConfiguration()
    stream.targetWindowSize = self.config.windowTarget
    try sync.addHandler(
      NIOHTTP2Handler(mode: .server, connectionConfiguration: connection, streamConfiguration: stream))
    try sync.addHandler(
      NIOHTTP2ServerConnectionManagementHandler(
        eventLoop: channel.eventLoop,
        configuration: .init(
          maxIdleTime: self.config.maxConnectionIdle,
          maxAge: self.config.maxConnectionAge,
          maxGraceTime: self.config.maxConnectionAgeGrace,
          keepalive: .init(pingInterval: self.config.keepaliveTime, ackTimeout: self.config.keepaliveTimeout)
        )
      )
    )
    try sync.addHandler(ServerConnectionHandler(limits: limits, spawn: spawn))
    if shuttingDown {
      channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
    }
  }

  private func connectionClosed(_ id: ObjectIdentifier) {
    let waiters = self.state.withLock { state in
      state.connections[id] = nil
      return state.isDrained ? state.takeWaiters() : []
    }
    for waiter in waiters { waiter.resume() }
  }

  private func rpcEnded() {
    let waiters = self.state.withLock { state in
      state.rpcs -= 1
      return state.isDrained ? state.takeWaiters() : []
    }
    for waiter in waiters { waiter.resume() }
  }

  private func drained() async {
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
      let done = self.state.withLock { state in
        if state.isDrained { return true }
        state.drained.append(continuation)
        return false
      }
      if done { continuation.resume() }
    }
  }
}
