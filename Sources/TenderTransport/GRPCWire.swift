import GRPCCore
import NIOCore
import NIOHPACK

/// Splits a request's DATA into gRPC's length-prefixed messages.
///
/// A declared length over the limit is refused from its 5-byte prefix, before its body is
/// buffered. A message within one DATA frame is handed on as a slice of that frame, not copied.
struct MessageDeframer {
  enum Next: Equatable {
    case message(ByteBuffer)
    /// More bytes are needed.
    case none
    /// The message declares more bytes than the limit.
    case tooLarge(Int)
    /// The message says it is compressed; Tender accepts no `grpc-encoding`.
    case compressed
  }

  let limit: Int
  private var buffer: ByteBuffer?

  init(limit: Int) {
    self.limit = limit
  }

  /// Bytes received and not yet handed on as a message.
  var pendingBytes: Int { self.buffer?.readableBytes ?? 0 }

  mutating func append(_ data: ByteBuffer) {
    guard data.readableBytes > 0 else { return }
    if self.buffer == nil {
      self.buffer = data
    } else {
      self.buffer!.writeImmutableBuffer(data)
    }
  }

  mutating func next() -> Next {
    guard var buffer = self.buffer, buffer.readableBytes >= 5,
      let flag = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self),
      let length = buffer.getInteger(at: buffer.readerIndex + 1, as: UInt32.self)
    else { return .none }
    if flag != 0 { return .compressed }
    guard length <= self.limit else { return .tooLarge(Int(length)) }
    guard buffer.readableBytes >= 5 + Int(length) else { return .none }
    buffer.moveReaderIndex(forwardBy: 5)
    let message = buffer.readSlice(length: Int(length))!
    self.buffer = buffer.readableBytes == 0 ? nil : buffer
    return .message(message)
  }
}

enum GRPCWire {
  /// `content-type` values a gRPC request may carry.
  static func isGRPCContentType(_ value: String) -> Bool {
    value == "application/grpc" || value.hasPrefix("application/grpc+") || value.hasPrefix("application/grpc;")
  }

  /// The request's headers as gRPC metadata: every header, with `-bin` values decoded from base64
  /// (kept as text when they do not decode), as grpc-swift's own transport hands them on.
  static func metadata(_ headers: HPACKHeaders) -> Metadata {
    var metadata = Metadata()
    metadata.reserveCapacity(headers.count)
    for header in headers {
      if header.name.hasSuffix("-bin"), let bytes = Base64.decode(header.value) {
        metadata.addBinary(bytes, forKey: header.name)
      } else {
        metadata.addString(header.value, forKey: header.name)
      }
    }
    return metadata
  }

  static func responseHeaders(_ metadata: Metadata) -> HPACKHeaders {
    var headers = HPACKHeaders()
    headers.reserveCapacity(2 + metadata.count)
    headers.add(name: ":status", value: "200")
    headers.add(name: "content-type", value: "application/grpc")
    self.add(metadata, to: &headers)
    return headers
  }

  /// The trailers ending a response; `trailersOnly` when no headers were sent before them.
  static func trailers(_ status: Status, _ metadata: Metadata, trailersOnly: Bool) -> HPACKHeaders {
    var headers = HPACKHeaders()
    headers.reserveCapacity(4 + metadata.count)
    if trailersOnly {
      headers.add(name: ":status", value: "200")
      headers.add(name: "content-type", value: "application/grpc")
    }
    headers.add(name: "grpc-status", value: String(status.code.rawValue))
    if !status.message.isEmpty {
      headers.add(name: "grpc-message", value: self.percentEncoded(status.message))
    }
    self.add(metadata, to: &headers)
    return headers
  }

  static func trailers(_ code: Status.Code, _ message: String) -> HPACKHeaders {
    self.trailers(Status(code: code, message: message), [:], trailersOnly: true)
  }

  private static func add(_ metadata: Metadata, to headers: inout HPACKHeaders) {
    for (key, value) in metadata {
      switch value {
      case .string(let text): headers.add(name: key.lowercased(), value: text)
      case .binary(let bytes): headers.add(name: key.lowercased(), value: Base64.encode(bytes))
      }
    }
  }

  /// `grpc-message`'s encoding: printable ASCII but `%` as is, every other byte as `%XX`.
  static func percentEncoded(_ message: String) -> String {
    let utf8 = message.utf8
    if utf8.allSatisfy({ (0x20...0x7E).contains($0) && $0 != UInt8(ascii: "%") }) { return message }
    let hex = Array("0123456789ABCDEF".utf8)
    var bytes: [UInt8] = []
    bytes.reserveCapacity(utf8.count * 3)
    for byte in utf8 {
      if (0x20...0x7E).contains(byte) && byte != UInt8(ascii: "%") {
        bytes.append(byte)
      } else {
        bytes.append(UInt8(ascii: "%"))
        bytes.append(hex[Int(byte >> 4)])
        bytes.append(hex[Int(byte & 0xF)])
      }
    }
    return String(decoding: bytes, as: UTF8.self)
  }
}

/// Standard base64, for binary metadata (`-bin` headers): padded when written, padding optional
/// when read.
enum Base64 {
  private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
  private static let values: [UInt8] = {
    var table = [UInt8](repeating: 0xFF, count: 256)
    for (index, byte) in alphabet.enumerated() { table[Int(byte)] = UInt8(index) }
    return table
  }()

  static func encode(_ bytes: [UInt8]) -> String {
    var out: [UInt8] = []
    out.reserveCapacity((bytes.count + 2) / 3 * 4)
    var index = 0
    while index + 3 <= bytes.count {
      let value = UInt32(bytes[index]) << 16 | UInt32(bytes[index + 1]) << 8 | UInt32(bytes[index + 2])
      out.append(self.alphabet[Int(value >> 18 & 63)])
      out.append(self.alphabet[Int(value >> 12 & 63)])
      out.append(self.alphabet[Int(value >> 6 & 63)])
      out.append(self.alphabet[Int(value & 63)])
      index += 3
    }
    let rest = bytes.count - index
    if rest > 0 {
      let value = UInt32(bytes[index]) << 16 | (rest == 2 ? UInt32(bytes[index + 1]) << 8 : 0)
      out.append(self.alphabet[Int(value >> 18 & 63)])
      out.append(self.alphabet[Int(value >> 12 & 63)])
      out.append(rest == 2 ? self.alphabet[Int(value >> 6 & 63)] : UInt8(ascii: "="))
      out.append(UInt8(ascii: "="))
    }
    return String(decoding: out, as: UTF8.self)
  }

  static func decode(_ text: String) -> [UInt8]? {
    var input = Array(text.utf8)
    while input.last == UInt8(ascii: "=") { input.removeLast() }
    guard input.count % 4 != 1 else { return nil }
    var out: [UInt8] = []
    out.reserveCapacity(input.count * 3 / 4)
    var accumulator: UInt32 = 0
    var bits = 0
    for byte in input {
      let value = self.values[Int(byte)]
      guard value != 0xFF else { return nil }
      accumulator = accumulator << 6 | UInt32(value)
      bits += 6
      if bits >= 8 {
        bits -= 8
        out.append(UInt8(truncatingIfNeeded: accumulator >> UInt32(bits)))
      }
    }
    return out
  }
}
