public import Logging
import Synchronization

/// Keeps log records in memory so tests can assert what was (and was not) logged.
public struct RecordingLogHandler: LogHandler {
  /// One log record with its metadata flattened to strings.
  public struct Record: Sendable {
    public let level: Logger.Level
    public let message: String
    public let metadata: [String: String]
  }

  /// Shared storage for the records of every logger made from one recorder.
  public final class Store: Sendable {
    private let records = Mutex<[Record]>([])

    public init() {}

    public var all: [Record] { self.records.withLock { $0 } }

    func append(_ record: Record) { self.records.withLock { $0.append(record) } }

    /// A logger that records into this store at `level`.
    public func logger(label: String = "tender.test", level: Logger.Level = .trace) -> Logger {
      var logger = Logger(label: label) { _ in RecordingLogHandler(store: self) }
      logger.logLevel = level
      return logger
    }
  }

  public var metadata: Logger.Metadata = [:]
  public var logLevel: Logger.Level = .trace
  private let store: Store

  init(store: Store) {
    self.store = store
  }

  public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
    get { self.metadata[key] }
    set { self.metadata[key] = newValue }
  }

  public func log(event: LogEvent) {
    var merged = self.metadata
    if let extra = event.metadata { merged.merge(extra) { _, new in new } }
    self.store.append(
      Record(level: event.level, message: event.message.description, metadata: merged.mapValues { "\($0)" })
    )
  }
}
