import Foundation
import NIOCore
import NIOPosix
import Synchronization

/// The simulator's public port: a TCP relay in front of its HTTP server that can stop accepting
/// connections for a while (the listener is closed, so callers get "connection refused", as from
/// a provider that is down) and then come back on the same port.
final class ConnectionGate: Sendable {
  private struct State {
    var listener: (any Channel)?
    var relays: [ObjectIdentifier: any Channel] = [:]
    var reopenAt: ContinuousClock.Instant?
  }

  private let group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
  private let host: String
  private let backendPort: Int
  private let state = Mutex(State())
  private let boundPort = Atomic<Int>(0)

  init(host: String, backendPort: Int) {
    self.host = host
    self.backendPort = backendPort
  }

  /// Whether the gate listens now.
  var isOpen: Bool { self.state.withLock { $0.listener != nil } }

  /// The port the gate listens on (fixed once first bound).
  var port: Int { self.boundPort.load(ordering: .relaxed) }

  /// Starts listening on `port` — 0: a free port of the gates' own (`GatePorts`) — and returns
  /// the port.
  func open(port: Int) async throws -> Int {
    guard port == 0 else { return try await self.bind(port: port) }
    return try await GatePorts.shared.claim { candidate in try await self.bind(port: candidate) }
  }

  private func bind(port: Int) async throws -> Int {
    let backendPort = self.backendPort
    let host = self.host
    let group = self.group
    let channel = try await ServerBootstrap(group: group)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .childChannelOption(.autoRead, value: false)
      .childChannelInitializer { inbound in
        let gate = self
        return ClientBootstrap(group: inbound.eventLoop)
          .connect(host: "127.0.0.1", port: backendPort)
          .flatMap { outbound in
            let (left, right) = GlueHandler.pair()
            gate.track(inbound)
            inbound.closeFuture.whenComplete { _ in
              gate.untrack(inbound)
              outbound.close(promise: nil)
            }
            outbound.closeFuture.whenComplete { _ in inbound.close(promise: nil) }
            // Reading starts once both ends are glued, so no byte arrives before there is
            // somewhere to send it.
            return inbound.pipeline.addHandler(left).flatMap { outbound.pipeline.addHandler(right) }.flatMap {
              inbound.setOption(ChannelOptions.autoRead, value: true)
            }
          }
      }
      .bind(host: host, port: port)
      .get()
    let bound = channel.localAddress?.port ?? port
    self.boundPort.store(bound, ordering: .relaxed)
    self.state.withLock { $0.listener = channel }
    return bound
  }

  /// Refuses connections for `duration`: the listener closes and every open connection is cut;
  /// then the gate listens again on the same port.
  func refuse(for duration: Duration) async {
    let (listener, relays) = self.state.withLock { state -> ((any Channel)?, [any Channel]) in
      let listener = state.listener
      state.listener = nil
      state.reopenAt = .now + duration
      let relays = Array(state.relays.values)
      state.relays = [:]
      return (listener, relays)
    }
    try? await listener?.close()
    for relay in relays { try? await relay.close() }
    let port = self.port
    Task {
      try? await Task.sleep(for: duration)
      let due = self.state.withLock { state in
        guard state.listener == nil, let at = state.reopenAt, at <= .now else { return false }
        state.reopenAt = nil
        return true
      }
      // Another refusal may have moved the reopening later; that one reopens.
      if due { await self.listenAgain(on: port) }
    }
  }

  private func listenAgain(on port: Int) async {
    do {
      _ = try await self.bind(port: port)
    } catch {
      // Nothing can take a gate's port while it refuses (see GatePorts), so this is a fault of
      // the machine; the gate stays closed and says so.
      FileHandle.standardError.write(
        Data("tender-provider-sim: could not listen again on port \(port): \(error)\n".utf8))
    }
  }

  /// Ends a refusal now: listening again on the same port.
  func reopen() async {
    let due = self.state.withLock { state -> Bool in
      guard state.listener == nil, state.reopenAt != nil else { return false }
      state.reopenAt = nil
      return true
    }
    if due { await self.listenAgain(on: self.port) }
  }

  func close() async {
    let (listener, relays) = self.state.withLock { state -> ((any Channel)?, [any Channel]) in
      defer {
        state.listener = nil
        state.relays = [:]
        state.reopenAt = nil
      }
      return (state.listener, Array(state.relays.values))
    }
    try? await listener?.close()
    for relay in relays { try? await relay.close() }
  }

  private func track(_ channel: any Channel) {
    self.state.withLock { $0.relays[ObjectIdentifier(channel)] = channel }
  }

  private func untrack(_ channel: any Channel) {
    _ = self.state.withLock { $0.relays.removeValue(forKey: ObjectIdentifier(channel)) }
  }
}

/// Copies bytes between two channels (both on one event loop) and closes each when the other closes.
private final class GlueHandler: ChannelInboundHandler, @unchecked Sendable {
  typealias InboundIn = NIOAny

  private var partner: GlueHandler?
  private var context: ChannelHandlerContext?

  static func pair() -> (GlueHandler, GlueHandler) {
    let first = GlueHandler()
    let second = GlueHandler()
    first.partner = second
    second.partner = first
    return (first, second)
  }

  func handlerAdded(context: ChannelHandlerContext) {
    self.context = context
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    self.context = nil
    self.partner = nil
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    guard let other = self.partner?.context else { return }
    other.eventLoop.execute { other.write(data, promise: nil) }
  }

  func channelReadComplete(context: ChannelHandlerContext) {
    guard let other = self.partner?.context else { return }
    other.eventLoop.execute { other.flush() }
  }

  func channelInactive(context: ChannelHandlerContext) {
    guard let other = self.partner?.context else { return }
    other.eventLoop.execute { other.close(promise: nil) }
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    context.close(promise: nil)
  }
}

/// The ports gates listen on when none is configured. A gate that refuses connections closes its
/// listener and must come back on the same port, so no other socket may take the port meanwhile:
/// the ports come from below the kernel's ephemeral range, which outgoing connections and binds
/// to port 0 never use, and each is claimed once in this process, so no other gate takes it.
final class GatePorts: Sendable {
  static let shared = GatePorts()

  private let claimed = Mutex<Set<Int>>([])
  /// Ports that are neither ephemeral nor privileged, or nil when the ephemeral range leaves none.
  private let range: Range<Int>?

  init() {
    let text = (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8)) ?? ""
    let ephemeralStart = text.split(whereSeparator: \.isWhitespace).first.flatMap { Int($0) } ?? 32768
    let start = max(10_000, ephemeralStart - 12_000)
    self.range = start < ephemeralStart ? start..<ephemeralStart : nil
  }

  /// Binds with `bind` a port nobody has claimed, trying others while one is taken; falls back to
  /// any free port (0) where there is no such range.
  func claim(_ bind: (Int) async throws -> Int) async throws -> Int {
    guard let range = self.range else { return try await bind(0) }
    var lastError: (any Error)?
    for _ in 0..<50 {
      let candidate = Int.random(in: range)
      let fresh = self.claimed.withLock { $0.insert(candidate).inserted }
      guard fresh else { continue }
      do {
        return try await bind(candidate)
      } catch {
        // Taken by something else on the machine: it stays claimed (and unused) here.
        lastError = error
      }
    }
    throw lastError ?? GatePortsExhausted()
  }

  struct GatePortsExhausted: Error {}
}
