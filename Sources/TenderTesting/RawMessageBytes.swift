public import GRPCCore

/// Messages as the bytes they are on the wire: for calls that send bytes no generated client
/// would (undecodable, oversized, fuzzed) and read answers undecoded.
public struct RawMessageBytes: MessageSerializer, MessageDeserializer {
  public init() {}

  public func serialize<Bytes: GRPCContiguousBytes>(_ message: [UInt8]) throws -> Bytes { Bytes(message) }

  public func deserialize<Bytes: GRPCContiguousBytes>(_ bytes: Bytes) throws -> [UInt8] {
    bytes.withUnsafeBytes { Array($0) }
  }
}
