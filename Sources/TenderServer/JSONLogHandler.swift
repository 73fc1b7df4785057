import Foundation
public import Logging

/// Writes each log record as one JSON object per line on standard error, so log pipelines can
/// index fields (`rpc.method`, `rpc.code`, …) without parsing text.
public struct JSONLogHandler: LogHandler {
  public var metadata: Logger.Metadata = [:]
  public var logLevel: Logger.Level
  private let label: String

  public init(label: String, level: Logger.Level) {
    self.label = label
    self.logLevel = level
  }

  public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
    get { self.metadata[key] }
    set { self.metadata[key] = newValue }
  }

  public func log(event: LogEvent) {
    var fields: [String: Any] = [
      "time": Self.timestamp(),
      "level": event.level.rawValue,
      "logger": self.label,
      "msg": event.message.description,
    ]
    var merged = self.metadata
    if let extra = event.metadata { merged.merge(extra) { _, new in new } }
    for (key, value) in merged { fields[key] = Self.json(value) }
    guard
      var line = try? JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys, .withoutEscapingSlashes])
    else { return }
    line.append(UInt8(ascii: "\n"))
    FileHandle.standardError.write(line)
  }

  private static func json(_ value: Logger.MetadataValue) -> Any {
    switch value {
    case .string(let string): return string
    case .stringConvertible(let convertible): return convertible.description
    case .array(let array): return array.map(json)
    case .dictionary(let dictionary): return dictionary.mapValues(json)
    }
  }

  private static func timestamp() -> String {
    Date.ISO8601FormatStyle(includingFractionalSeconds: true).format(Date())
  }
}
