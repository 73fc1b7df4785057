public import GRPCCore
public import NIOCore

/// A message's bytes as Tender's gRPC transport carries them: a `ByteBuffer`, handed between the
/// connection and the RPC without a copy.
public struct TransportBytes: GRPCContiguousBytes, Hashable, Sendable {
  /// The message's bytes (its readable bytes).
  public var buffer: ByteBuffer

  public init(_ buffer: ByteBuffer) {
    self.buffer = buffer
  }

  public init(repeating: UInt8, count: Int) {
    self.buffer = ByteBuffer(repeating: repeating, count: count)
  }

  public init(_ sequence: some Sequence<UInt8>) {
    self.buffer = ByteBuffer(bytes: sequence)
  }

  public var count: Int { self.buffer.readableBytes }

  public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
    try self.buffer.withUnsafeReadableBytes(body)
  }

  public mutating func withUnsafeMutableBytes<R>(_ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
    try self.buffer.withUnsafeMutableReadableBytes(body)
  }
}
