import TenderCore
import Testing

@Suite("Payment state machine")
struct PaymentLedgerTests {
  static let eur = Currency(code: "EUR")!
  static func money(_ units: Int64, _ currency: Currency = eur) -> Money {
    Money(minorUnits: units, currency: currency)
  }

  @Test("Exactly these transitions are legal")
  func transitionTable() {
    let legal: Set<[PaymentStatus]> = [
      [.processing, .requiresCapture], [.processing, .succeeded], [.processing, .failed],
      [.requiresCapture, .succeeded], [.requiresCapture, .canceled], [.requiresCapture, .failed],
    ]
    for from in PaymentStatus.allCases {
      for to in PaymentStatus.allCases {
        #expect(from.canMove(to: to) == legal.contains([from, to]), "\(from) → \(to)")
      }
      if from.isTerminal {
        #expect(PaymentStatus.allCases.allSatisfy { !from.canMove(to: $0) })
      }
    }
  }

  @Test("Manual capture: authorize holds the amount; a partial capture takes part and releases the rest")
  func partialCapture() throws {
    var ledger = PaymentLedger(amount: Self.money(100), captureMethod: .manual)
    #expect(ledger.status == .processing)
    try ledger.providerAuthorized()
    #expect(ledger.status == .requiresCapture && ledger.capturableMinorUnits == 100)
    #expect(throws: DomainError.self) { try ledger.capture(101) }
    #expect(ledger.status == .requiresCapture)
    #expect(try ledger.capture(70) == 70)
    #expect(ledger.status == .succeeded && ledger.capturedMinorUnits == 70 && ledger.capturableMinorUnits == 0)
    let again = Self.reason { try ledger.capture(10) }
    #expect(again == "PAYMENT_NOT_CAPTURABLE")
    #expect(Self.reason { try ledger.cancel() } == "PAYMENT_NOT_CANCELABLE")
  }

  @Test("Automatic capture succeeds with the full amount; cancel only before capture")
  func automaticAndCancel() throws {
    var automatic = PaymentLedger(amount: Self.money(500), captureMethod: .automatic)
    try automatic.providerAuthorized()
    #expect(automatic.status == .succeeded && automatic.capturedMinorUnits == 500)

    var manual = PaymentLedger(amount: Self.money(500), captureMethod: .manual)
    #expect(Self.reason { try manual.cancel() } == "PAYMENT_NOT_CANCELABLE")
    try manual.providerAuthorized()
    try manual.cancel()
    #expect(manual.status == .canceled && manual.capturableMinorUnits == 0)
    #expect(Self.reason { try manual.capture(nil) } == "PAYMENT_NOT_CAPTURABLE")
  }

  @Test("A decline fails the payment with its reason; a final payment cannot fail")
  func decline() throws {
    var ledger = PaymentLedger(amount: Self.money(100), captureMethod: .automatic)
    try ledger.providerFailed(.insufficientFunds)
    #expect(ledger.status == .failed && ledger.failureReason == .insufficientFunds)
    #expect(Self.reason { try ledger.providerFailed(.cardDeclined) } == "PAYMENT_ALREADY_FINAL")
    #expect(Self.reason { try ledger.reserveRefund(Self.money(1)) } == "PAYMENT_NOT_REFUNDABLE")
  }

  @Test("Refunds: only captured money, never above it, pending ones count, failed ones are released")
  func refunds() throws {
    var ledger = PaymentLedger(amount: Self.money(100), captureMethod: .automatic)
    #expect(Self.reason { try ledger.reserveRefund(Self.money(10)) } == "PAYMENT_NOT_REFUNDABLE")
    try ledger.providerAuthorized()
    try ledger.reserveRefund(Self.money(60))
    #expect(Self.reason { try ledger.reserveRefund(Self.money(60)) } == "REFUND_EXCEEDS_CAPTURED")
    #expect(Self.reason { try ledger.reserveRefund(Self.money(10, Currency(code: "USD")!)) } == "CURRENCY_MISMATCH")
    ledger.releaseRefund(Self.money(60))
    try ledger.reserveRefund(Self.money(40))
    try ledger.reserveRefund(Self.money(60))
    #expect(ledger.refundableMinorUnits == 0)
    #expect(Self.reason { try ledger.reserveRefund(Self.money(1)) } == "REFUND_EXCEEDS_CAPTURED")
  }

  @Test(
    "A refund of no stated amount takes everything still refundable; with nothing left it is refused, naming the field")
  func refundOfTheRest() throws {
    var ledger = PaymentLedger(amount: Self.money(100), captureMethod: .automatic)
    #expect(Self.reason { _ = try ledger.reserveRefund(minorUnits: nil) } == "REFUND_EXCEEDS_CAPTURED")
    try ledger.providerAuthorized()
    #expect(try ledger.reserveRefund(minorUnits: 30) == Self.money(30))
    #expect(try ledger.reserveRefund(minorUnits: nil) == Self.money(70))
    #expect(ledger.refundableMinorUnits == 0)
    do {
      _ = try ledger.reserveRefund(minorUnits: nil)
      Issue.record("nothing was left to refund")
    } catch {
      #expect(error.reason == "REFUND_EXCEEDS_CAPTURED" && error.field == "amount_minor")
    }
  }

  @Test("Random operation sequences never break the invariants")
  func randomSequences() {
    var generator = SystemRandomNumberGenerator()
    for _ in 0..<2000 {
      var ledger = PaymentLedger(
        amount: Self.money(Int64.random(in: 1...1000, using: &generator)),
        captureMethod: Bool.random(using: &generator) ? .manual : .automatic)
      var reserved: [Money] = []
      for _ in 0..<12 {
        switch Int.random(in: 0..<6, using: &generator) {
        case 0: try? ledger.providerAuthorized()
        case 1: try? ledger.providerFailed(.cardDeclined)
        case 2:
          try? ledger.capture(Bool.random(using: &generator) ? nil : Int64.random(in: -5...1100, using: &generator))
        case 3: try? ledger.cancel()
        case 4:
          let refund = Self.money(Int64.random(in: 1...600, using: &generator))
          if (try? ledger.reserveRefund(refund)) != nil { reserved.append(refund) }
        default:
          if let refund = reserved.popLast() { ledger.releaseRefund(refund) }
        }
        #expect(ledger.refundedMinorUnits <= ledger.capturedMinorUnits)
        #expect(ledger.capturedMinorUnits + ledger.capturableMinorUnits <= ledger.amount.minorUnits)
        #expect(ledger.refundedMinorUnits >= 0 && ledger.capturableMinorUnits >= 0)
        #expect(ledger.capturedMinorUnits == 0 || ledger.status == .succeeded)
      }
    }
  }

  @Test("A stored ledger that breaks an invariant is refused")
  func storedLedger() {
    #expect(
      PaymentLedger(
        status: .succeeded, amount: Self.money(100), captureMethod: .automatic, capturableMinorUnits: 0,
        capturedMinorUnits: 100, refundedMinorUnits: 40, failureReason: nil) != nil)
    #expect(
      PaymentLedger(
        status: .succeeded, amount: Self.money(100), captureMethod: .automatic, capturableMinorUnits: 0,
        capturedMinorUnits: 100, refundedMinorUnits: 101, failureReason: nil) == nil)
    #expect(
      PaymentLedger(
        status: .requiresCapture, amount: Self.money(100), captureMethod: .manual, capturableMinorUnits: 101,
        capturedMinorUnits: 0, refundedMinorUnits: 0, failureReason: nil) == nil)
    #expect(
      PaymentLedger(
        status: .failed, amount: Self.money(100), captureMethod: .manual, capturableMinorUnits: 0,
        capturedMinorUnits: 0, refundedMinorUnits: 0, failureReason: nil) == nil)
  }

  static func reason(_ body: () throws -> Void) -> String? {
    do {
      try body()
      return nil
    } catch {
      return (error as? DomainError)?.reason ?? "not a DomainError: \(error)"
    }
  }

  static func reason(_ body: () throws -> Int64) -> String? {
    self.reason { () throws -> Void in _ = try body() }
  }
}
