/// Identifiers of Tender's resources: a fixed prefix and 1–64 letters or digits. Parsing checks the
/// prefix, so a refund id can never be passed where a payment id is expected.
public protocol TypedIdentifier: Sendable, Hashable, CustomStringConvertible {
  static var prefix: String { get }
  var rawValue: String { get }
  init(unchecked rawValue: String)
}

extension TypedIdentifier {
  /// Parses `text`; nil unless it is `<prefix>_` followed by 1–64 ASCII letters or digits.
  public init?(_ text: String) {
    guard text.hasPrefix(Self.prefix + "_") else { return nil }
    let rest = text.utf8.dropFirst(Self.prefix.utf8.count + 1)
    guard (1...64).contains(rest.count),
      rest.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A) })
    else { return nil }
    self.init(unchecked: text)
  }

  /// A new random identifier (24 base62 characters).
  public static func random() -> Self {
    Self(unchecked: Identifiers.make(prefix: Self.prefix))
  }

  public var description: String { self.rawValue }
}

public struct PaymentID: TypedIdentifier {
  public static let prefix = "pay"
  public let rawValue: String
  public init(unchecked rawValue: String) { self.rawValue = rawValue }
}

public struct RefundID: TypedIdentifier {
  public static let prefix = "re"
  public let rawValue: String
  public init(unchecked rawValue: String) { self.rawValue = rawValue }
}

public struct MerchantID: TypedIdentifier {
  public static let prefix = "mer"
  public let rawValue: String
  public init(unchecked rawValue: String) { self.rawValue = rawValue }
}

public struct ClientID: TypedIdentifier {
  public static let prefix = "cli"
  public let rawValue: String
  public init(unchecked rawValue: String) { self.rawValue = rawValue }
}
