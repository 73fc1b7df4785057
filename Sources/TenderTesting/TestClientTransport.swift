public import GRPCCore
public import GRPCInProcessTransport
public import GRPCNIOTransportHTTP2

/// A client transport to a `TestServer`, whichever way it serves RPCs: over grpc-swift's
/// in-process transport, or over HTTP/2 and TLS. A test body takes this one type and runs against
/// either; only the wire tests need the HTTP/2 transport itself (`TestServer.withTLSClient`).
public struct TestClientTransport: ClientTransport {
  public typealias Bytes = [UInt8]

  private enum Base: Sendable {
    case inProcess(InProcessTransport.Client)
    case http2(HTTP2ClientTransport.Posix)
  }

  private let base: Base

  /// A client of an in-process server.
  public init(_ transport: InProcessTransport.Client) {
    self.base = .inProcess(transport)
  }

  /// A client over HTTP/2: messages are copied between the transport's buffers and `[UInt8]`.
  public init(_ transport: HTTP2ClientTransport.Posix) {
    self.base = .http2(transport)
  }

  public var retryThrottle: RetryThrottle? {
    switch self.base {
    case .inProcess(let transport): transport.retryThrottle
    case .http2(let transport): transport.retryThrottle
    }
  }

  public func connect() async throws {
    switch self.base {
    case .inProcess(let transport): try await transport.connect()
    case .http2(let transport): try await transport.connect()
    }
  }

  public func beginGracefulShutdown() {
    switch self.base {
    case .inProcess(let transport): transport.beginGracefulShutdown()
    case .http2(let transport): transport.beginGracefulShutdown()
    }
  }

  public func config(forMethod descriptor: MethodDescriptor) -> MethodConfig? {
    switch self.base {
    case .inProcess(let transport): transport.config(forMethod: descriptor)
    case .http2(let transport): transport.config(forMethod: descriptor)
    }
  }

  public func withStream<T: Sendable>(
    descriptor: MethodDescriptor,
    options: CallOptions,
    _ closure: (_ stream: RPCStream<Inbound, Outbound>, _ context: ClientContext) async throws -> T
  ) async throws -> T {
    switch self.base {
    case .inProcess(let transport):
      return try await transport.withStream(descriptor: descriptor, options: options, closure)
    case .http2(let transport):
      return try await transport.withStream(descriptor: descriptor, options: options) { stream, context in
        let inbound = RPCAsyncSequence<RPCResponsePart<Bytes>, any Error>(
          wrapping: stream.inbound.map { part -> RPCResponsePart<Bytes> in
            switch part {
            case .metadata(let metadata): .metadata(metadata)
            case .message(let bytes): .message(bytes.withUnsafeBytes { Array($0) })
            case .status(let status, let metadata): .status(status, metadata)
            }
          }
        )
        let outbound = RPCWriter<RPCRequestPart<Bytes>>.Closable(wrapping: RequestBytesWriter(base: stream.outbound))
        return try await closure(
          RPCStream(descriptor: stream.descriptor, inbound: inbound, outbound: outbound), context)
      }
    }
  }
}

/// Writes `[UInt8]` request parts to an HTTP/2 stream as the transport's own buffers.
private struct RequestBytesWriter: ClosableRPCWriterProtocol {
  typealias Element = RPCRequestPart<[UInt8]>
  let base: HTTP2ClientTransport.Posix.Outbound

  func write(_ element: Element) async throws {
    try await self.base.write(Self.converted(element))
  }

  func write(contentsOf elements: some Sequence<Element>) async throws {
    try await self.base.write(contentsOf: elements.map(Self.converted))
  }

  func finish() async {
    await self.base.finish()
  }

  func finish(throwing error: any Error) async {
    await self.base.finish(throwing: error)
  }

  private static func converted(_ part: Element) -> HTTP2ClientTransport.Posix.Outbound.Element {
    switch part {
    case .metadata(let metadata): .metadata(metadata)
    case .message(let bytes): .message(HTTP2ClientTransport.Posix.Bytes(bytes))
    }
  }
}
