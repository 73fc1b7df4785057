/// A value that must never reach logs or error messages: its descriptions are masked.
public struct Secret<Value: Sendable>: Sendable, CustomStringConvertible, CustomDebugStringConvertible {
  /// The wrapped value; read it only where it is used, never to print it.
  public let value: Value

  public init(_ value: Value) {
    self.value = value
  }

  public var description: String { "<redacted>" }
  public var debugDescription: String { "<redacted>" }
}

extension Secret: Equatable where Value: Equatable {}
extension Secret: Hashable where Value: Hashable {}
