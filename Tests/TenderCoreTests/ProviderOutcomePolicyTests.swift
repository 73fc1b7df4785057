import TenderCore
import Testing

@Suite("The provider-outcome policy")
struct ProviderOutcomePolicyTests {
  /// The whole table, written out: every history against every kind of attempt.
  static let table: [(ProviderHistory, ProviderAttempt, ProviderOutcomePolicy.Next)] = [
    (.nothingSent, .answered, .apply),
    (.nothingSent, .refused, .apply),
    (.nothingSent, .notProcessed, .failForSure),
    (.nothingSent, .unknown, .wait),
    (.maybeSent, .answered, .apply),
    (.maybeSent, .refused, .apply),
    (.maybeSent, .notProcessed, .wait),
    (.maybeSent, .unknown, .wait),
  ]

  @Test("Every history × attempt pair has the decision of the table, and the table covers them all")
  func exhaustiveTable() {
    #expect(Self.table.count == ProviderHistory.allCases.count * ProviderAttempt.allCases.count)
    for history in ProviderHistory.allCases {
      for attempt in ProviderAttempt.allCases {
        let expected = Self.table.first { $0.0 == history && $0.1 == attempt }?.2
        #expect(ProviderOutcomePolicy.next(history: history, attempt: attempt) == expected, "\(history) × \(attempt)")
      }
    }
  }

  @Test("Once a call may have been delivered, no later connect failure ends the operation")
  func noGuessingAfterDelivery() {
    // Any sequence of attempts: failing for sure is possible only while nothing may have been sent.
    let attempts = ProviderAttempt.allCases
    for first in attempts {
      for second in attempts {
        for third in attempts {
          var history = ProviderHistory.nothingSent
          for attempt in [first, second, third] {
            let next = ProviderOutcomePolicy.next(history: history, attempt: attempt)
            if next == .failForSure { #expect(history == .nothingSent) }
            if history == .maybeSent && attempt != .answered && attempt != .refused { #expect(next == .wait) }
            if next != .wait { break }
            history = ProviderOutcomePolicy.history(after: attempt, before: history)
          }
        }
      }
    }
  }

  @Test("Connector failures map to attempt kinds: authentication refusals say nothing was done")
  func connectorErrors() {
    #expect(ProviderAttempt(.unreachable("cannot connect")) == .notProcessed)
    #expect(ProviderAttempt(.outcomeUnknown("timeout")) == .unknown)
    #expect(ProviderAttempt(.rejected(status: 401, code: "api_key_invalid", message: "")) == .notProcessed)
    #expect(ProviderAttempt(.rejected(status: 403, code: "forbidden", message: "")) == .notProcessed)
    #expect(ProviderAttempt(.rejected(status: 400, code: "parameter_invalid", message: "")) == .refused)
    #expect(ProviderAttempt(.rejected(status: 404, code: "resource_missing", message: "")) == .refused)
  }

  @Test(
    "History only grows: a call that may have been delivered makes it maybe-sent; one that was not processed leaves it")
  func historyAfterAttempts() {
    #expect(ProviderOutcomePolicy.history(after: .notProcessed, before: .nothingSent) == .nothingSent)
    #expect(ProviderOutcomePolicy.history(after: .notProcessed, before: .maybeSent) == .maybeSent)
    #expect(ProviderOutcomePolicy.history(after: .unknown, before: .nothingSent) == .maybeSent)
    #expect(ProviderOutcomePolicy.history(after: .answered, before: .nothingSent) == .maybeSent)
  }
}
