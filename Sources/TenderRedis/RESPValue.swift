import CHiredis
public import NIOCore

/// A value of the Redis serialization protocol, as hiredis parses it.
public enum RESPValue: Sendable, Hashable {
  case simpleString(String)
  case error(String)
  case integer(Int64)
  case bulkString([UInt8])
  case null
  case array([RESPValue])

  /// The value as text, for simple and bulk strings.
  public var string: String? {
    switch self {
    case .simpleString(let text): return text
    case .bulkString(let bytes): return String(decoding: bytes, as: UTF8.self)
    default: return nil
    }
  }

  /// The value as an integer, for integer replies (and bulk strings holding a number).
  public var integer: Int64? {
    switch self {
    case .integer(let value): return value
    case .bulkString: return self.string.flatMap { Int64($0) }
    default: return nil
    }
  }

  /// Converts a hiredis reply tree.
  init(reply: UnsafePointer<redisReply>) {
    let node = reply.pointee
    switch node.type {
    case REDIS_REPLY_STATUS:
      self = .simpleString(String(decoding: UnsafeRawBufferPointer(start: node.str, count: node.len), as: UTF8.self))
    case REDIS_REPLY_ERROR:
      self = .error(String(decoding: UnsafeRawBufferPointer(start: node.str, count: node.len), as: UTF8.self))
    case REDIS_REPLY_INTEGER:
      self = .integer(Int64(node.integer))
    case REDIS_REPLY_STRING:
      self = .bulkString(Array(UnsafeRawBufferPointer(start: node.str, count: node.len)))
    case REDIS_REPLY_ARRAY:
      var elements: [RESPValue] = []
      elements.reserveCapacity(node.elements)
      for index in 0..<node.elements {
        if let element = node.element[index] {
          elements.append(RESPValue(reply: element))
        } else {
          elements.append(.null)
        }
      }
      self = .array(elements)
    default:
      self = .null
    }
  }
}

/// Encodes a command as RESP with hiredis (binary-safe arguments).
enum RESPCommand {
  static func encode(_ arguments: [[UInt8]], into buffer: inout ByteBuffer) {
    var pointers: [UnsafePointer<CChar>?] = []
    var lengths: [Int] = []
    // Each argument is copied once into C memory for the duration of the call.
    let copies = arguments.map { argument -> UnsafeMutablePointer<CChar> in
      let copy = UnsafeMutablePointer<CChar>.allocate(capacity: max(argument.count, 1))
      argument.withUnsafeBytes { raw in
        if let base = raw.baseAddress {
          UnsafeMutableRawPointer(copy).copyMemory(from: base, byteCount: argument.count)
        }
      }
      return copy
    }
    defer { copies.forEach { $0.deallocate() } }
    for (copy, argument) in zip(copies, arguments) {
      pointers.append(UnsafePointer(copy))
      lengths.append(argument.count)
    }
    var target: UnsafeMutablePointer<CChar>? = nil
    let length = pointers.withUnsafeMutableBufferPointer { pointerBuffer in
      lengths.withUnsafeBufferPointer { lengthBuffer in
        redisFormatCommandArgv(&target, Int32(arguments.count), pointerBuffer.baseAddress, lengthBuffer.baseAddress)
      }
    }
    guard length >= 0, let target else { return }
    defer { redisFreeCommand(target) }
    buffer.writeBytes(UnsafeRawBufferPointer(start: target, count: Int(length)))
  }
}
