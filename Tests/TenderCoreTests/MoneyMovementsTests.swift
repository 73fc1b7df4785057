import Synchronization
import TenderCore
import Testing

@Suite("Money movements: reported once per committed store call, at the same cost every time")
struct MoneyMovementsTests {
  static let movement = MoneyMovement(kind: .payment, status: "succeeded", currency: "EUR", amountMinorUnits: 1000)

  @Test("What a store call records is reported when it returns, and nothing when it throws")
  func reportedAfterTheCall() async throws {
    let movements = MoneyMovements()
    let reported = Mutex<[[MoneyMovement]]>([])
    movements.connect { batch in reported.withLock { $0.append(batch) } }
    try await movements.collecting { MoneyMovements.record(Self.movement) }
    await #expect(throws: CancellationError.self) {
      try await movements.collecting {
        MoneyMovements.record(Self.movement)
        throw CancellationError()
      }
    }
    #expect(reported.withLock { $0 } == [[Self.movement]])
  }

  /// A report reaches the sink through the same frames however many came before it: the sink
  /// is not re-wrapped on each use (which made every report slower than the last, and the stack
  /// deeper, until the server crashed).
  @Test("The ten-thousandth report reaches the sink at the same stack depth as the first")
  func constantDepth() {
    let movements = MoneyMovements()
    let depths = Mutex<[UInt]>([])
    movements.connect { _ in
      var marker = 0
      let address = withUnsafeMutablePointer(to: &marker) { UInt(bitPattern: $0) }
      depths.withLock { $0.append(address) }
    }
    for _ in 0..<10_000 { movements.committed([Self.movement]) }
    let seen = depths.withLock { $0 }
    #expect(seen.count == 10_000)
    #expect(Set(seen).count == 1, "the sink was reached at \(Set(seen).count) different stack depths")
  }
}
