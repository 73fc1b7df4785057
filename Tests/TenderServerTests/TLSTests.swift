import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import Synchronization
import TenderAPI
import SwiftProtobuf
import TenderServer
import TenderDevSupport
import TenderTesting
import Testing

@Suite("TLS on the gRPC listener")
struct TLSTests {
  /// Calls Health/Check with a short deadline and returns the failure, if any.
  /// The error of a health check, nil when it was served. Refusals come within `timeout`; a call
  /// expected to be served gets a generous one, since a loaded machine slows the handshake.
  static func checkFailure(
    _ client: GRPCClient<HTTP2ClientTransport.Posix>, timeout: Duration = .seconds(3)
  ) async -> RPCError? {
    var options = CallOptions.defaults
    options.timeout = timeout
    do {
      _ = try await Grpc_Health_V1_Health.Client(wrapping: client).check(.init(), options: options)
      return nil
    } catch let error as RPCError {
      return error
    } catch {
      return RPCError(code: .unknown, message: "\(error)")
    }
  }

  @Test("TLS 1.2 and 1.3 handshakes succeed and negotiate h2")
  func modernTLSAccepted() async throws {
    try await TestServer.with(rpc: .tls) { server in
      for version in [TLSVersion.tlsv12, .tlsv13] {
        let outcome = await TLSHandshake.attempt(server: server, minimum: version, maximum: version)
        #expect(outcome == .succeeded(alpn: "h2"), "\(version)")
      }
    }
  }

  @Test("A client offering only TLS 1.0 or 1.1 is refused")
  func oldTLSRefused() async throws {
    try await TestServer.with(rpc: .tls) { server in
      for version in [TLSVersion.tlsv1, .tlsv11] {
        let outcome = await TLSHandshake.attempt(server: server, minimum: version, maximum: version)
        #expect(outcome == .failed, "\(version)")
      }
    }
  }

  @Test("A plaintext HTTP/2 client on the TLS port gets no HTTP/2 and no RPC")
  func plaintextRefused() async throws {
    try await TestServer.with(rpc: .tls) { server in
      // Raw bytes: the HTTP/2 preface and an empty SETTINGS frame, as a prior-knowledge client sends.
      let reply = try await RawTCP.exchange(
        host: server.host,
        port: server.port,
        send: Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8) + [0, 0, 0, 4, 0, 0, 0, 0, 0]
      )
      // Anything but a TLS record (0x15 alert or nothing) would mean the server spoke HTTP/2.
      #expect(reply.isEmpty || reply.first == 0x15)

      try await server.withTLSClient(plaintext: true) { client in
        let failure = await Self.checkFailure(client)
        #expect(failure != nil)
        #expect(failure?.code == .unavailable || failure?.code == .deadlineExceeded)
      }
    }
  }

  @Test("A client that does not trust the server's CA fails")
  func untrustedCAFails() async throws {
    try await TestServer.with(rpc: .tls) { server in
      let stranger = try DevCertificateAuthority(name: "Some other CA")
      try await server.withTLSClient(
        trustRoots: .certificates([.bytes(Array(stranger.certificatePEM.utf8), format: .pem)])
      ) { client in
        let failure = await Self.checkFailure(client)
        #expect(failure?.code == .unavailable || failure?.code == .deadlineExceeded)
      }
    }
  }

  @Test("With mTLS on, a client without a certificate fails and one with a certificate is served")
  func mutualTLS() async throws {
    try await TestServer.with(
      rpc: .tls,
      configure: { flags, certificates in
        flags[.tlsClientCA] = certificates.caPath
      }
    ) { server in
      try await server.withTLSClient { client in
        let failure = await Self.checkFailure(client)
        #expect(failure?.code == .unavailable || failure?.code == .deadlineExceeded)
      }
      let outsider = try DevCertificateAuthority(name: "Outsider CA").issueClientCertificate(commonName: "intruder")
      try await server.withTLSClient(clientCertificate: outsider) { client in
        let failure = await Self.checkFailure(client)
        #expect(failure?.code == .unavailable || failure?.code == .deadlineExceeded)
      }
      try await server.withTLSClient(clientCertificate: server.certificates.client) { client in
        #expect(await Self.checkFailure(client, timeout: .seconds(30)) == nil)
      }
    }
  }
}

/// Performs a bare TLS handshake with chosen protocol versions.
enum TLSHandshake {
  enum Outcome: Equatable {
    case succeeded(alpn: String?)
    case failed
  }

  static func attempt(server: TestServer, minimum: TLSVersion, maximum: TLSVersion) async -> Outcome {
    do {
      var configuration = TLSConfiguration.makeClientConfiguration()
      configuration.minimumTLSVersion = minimum
      configuration.maximumTLSVersion = maximum
      configuration.trustRoots = .certificates(
        try NIOSSLCertificate.fromPEMBytes(Array(server.certificates.authority.certificatePEM.utf8)))
      configuration.applicationProtocols = ["h2"]
      let completed = try await Self.handshake(host: server.host, port: server.port, configuration: configuration)
      return .succeeded(alpn: completed.alpn)
    } catch {
      return .failed
    }
  }

  /// What a completed handshake gave: the negotiated protocol and the server's leaf certificate.
  struct Completed: Sendable {
    let alpn: String?
    let peerCertificate: NIOSSLCertificate?
  }

  /// A TLS handshake with `configuration` (server name localhost); throws if it fails.
  static func handshake(host: String, port: Int, configuration: TLSConfiguration) async throws -> Completed {
    let context = try NIOSSLContext(configuration: configuration)
    let box = Mutex<EventLoopPromise<Completed>?>(nil)
    let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
      .connectTimeout(.seconds(5))
      .channelInitializer { channel in
        let promise = channel.eventLoop.makePromise(of: Completed.self)
        box.withLock { $0 = promise }
        return channel.eventLoop.makeCompletedFuture {
          let handler = try NIOSSLClientHandler(context: context, serverHostname: "localhost")
          try channel.pipeline.syncOperations.addHandler(handler)
          try channel.pipeline.syncOperations.addHandler(
            HandshakeObserver(promise: promise) { Completed(alpn: $0, peerCertificate: handler.peerCertificate) })
        }
      }
      .connect(host: host, port: port).get()
    defer { channel.close(promise: nil) }
    guard let promise = box.withLock({ $0 }) else { throw ChannelError.ioOnClosedChannel }
    return try await promise.futureResult.get()
  }

  /// Completes `promise` with `completed`'s value when the TLS handshake is done (the negotiated
  /// protocol, the peer's certificate), or fails it when the connection fails first.
  final class HandshakeObserver<Value: Sendable>: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    private let promise: EventLoopPromise<Value>
    private let completed: (_ negotiated: String?) -> Value

    init(promise: EventLoopPromise<Value>, completed: @escaping (_ negotiated: String?) -> Value) {
      self.promise = promise
      self.completed = completed
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
      if case .handshakeCompleted(let negotiated) = event as? TLSUserEvent {
        self.promise.succeed(self.completed(negotiated))
      }
      context.fireUserInboundEventTriggered(event)
    }
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
      self.promise.fail(error)
      context.close(promise: nil)
    }
    func channelInactive(context: ChannelHandlerContext) {
      self.promise.fail(ChannelError.ioOnClosedChannel)
      context.fireChannelInactive()
    }
  }

}

/// Sends bytes on a plain TCP connection and collects what comes back until the peer closes.
enum RawTCP {
  static func exchange(host: String, port: Int, send: [UInt8]) async throws -> [UInt8] {
    let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
      .connect(host: host, port: port) { channel in
        channel.eventLoop.makeCompletedFuture {
          try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
        }
      }
    return try await channel.executeThenClose { inbound, outbound in
      try await outbound.write(ByteBuffer(bytes: send))
      var received: [UInt8] = []
      do {
        for try await var chunk in inbound {
          received += chunk.readBytes(length: chunk.readableBytes) ?? []
          if received.count > 64 * 1024 { break }
        }
      } catch {
        // A reset is as good as a close here.
      }
      return received
    }
  }
}
