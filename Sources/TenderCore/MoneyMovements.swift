import Synchronization

/// A status a payment or refund entered in a committed transaction, with its currency and the
/// amount that status concerns: for a payment, what was asked for (processing, failed, canceled),
/// held (requires capture) or captured (succeeded); for a refund, its amount.
public struct MoneyMovement: Sendable, Hashable {
  public enum Kind: String, Sendable, Hashable {
    case payment
    case refund
  }

  public let kind: Kind
  /// The status entered, as the schema spells it (`requires_capture`, `succeeded`, `pending`, …).
  public let status: String
  /// ISO 4217 code.
  public let currency: String
  public let amountMinorUnits: Int64

  public init(kind: Kind, status: String, currency: String, amountMinorUnits: Int64) {
    self.kind = kind
    self.status = status
    self.currency = currency
    self.amountMinorUnits = amountMinorUnits
  }

  /// `payment` entering its current status.
  public static func payment(_ payment: PaymentRecord) -> MoneyMovement {
    let ledger = payment.ledger
    let amount: Int64
    switch ledger.status {
    case .requiresCapture: amount = ledger.capturableMinorUnits
    case .succeeded: amount = ledger.capturedMinorUnits
    case .processing, .failed, .canceled: amount = ledger.amount.minorUnits
    }
    return MoneyMovement(
      kind: .payment, status: ledger.status.rawValue, currency: ledger.amount.currency.code, amountMinorUnits: amount)
  }

  /// `refund` entering its current status.
  public static func refund(_ refund: RefundRecord) -> MoneyMovement {
    MoneyMovement(
      kind: .refund, status: refund.status.rawValue, currency: refund.amount.currency.code,
      amountMinorUnits: refund.amount.minorUnits)
  }
}

/// Where the stores report the movements of each transaction once it has committed: exactly once
/// per movement, by the process that committed it (a transaction whose commit is not confirmed,
/// such as one left behind past the call's time limit, is not reported). The server connects
/// its metrics; until then reports go nowhere.
public final class MoneyMovements: Sendable {
  /// The closure is held in a struct: a bare closure type as the lock's generic value would be
  /// wrapped in a new pair of reabstraction thunks by every `withLock` that touches it, so each
  /// report would run through one more layer than the last.
  private struct Sink: Sendable {
    let report: @Sendable ([MoneyMovement]) -> Void
  }

  private let sink = Mutex<Sink?>(nil)

  public init() {}

  public func connect(_ sink: @escaping @Sendable ([MoneyMovement]) -> Void) {
    self.sink.withLock { $0 = Sink(report: sink) }
  }

  public func committed(_ movements: [MoneyMovement]) {
    guard !movements.isEmpty, let sink = self.sink.withLock({ $0 }) else { return }
    sink.report(movements)
  }

  /// Runs one store call, collecting what it records (`MoneyMovements.record`) and reporting it
  /// when the call returns; nothing when it throws.
  public func collecting<T: Sendable>(_ body: () async throws -> T) async throws -> T {
    let journal = Journal()
    let result = try await Journal.$current.withValue(journal) { try await body() }
    self.committed(journal.drain())
    return result
  }

  /// Notes a movement written by the current store call's transaction.
  public static func record(_ movement: MoneyMovement) {
    Journal.current?.append(movement)
  }

  final class Journal: Sendable {
    @TaskLocal static var current: Journal?
    private let entries = Mutex<[MoneyMovement]>([])

    func append(_ movement: MoneyMovement) { self.entries.withLock { $0.append(movement) } }

    func drain() -> [MoneyMovement] {
      self.entries.withLock { entries in
        defer { entries = [] }
        return entries
      }
    }
  }
}
