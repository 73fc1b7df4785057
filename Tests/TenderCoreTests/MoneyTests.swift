import TenderCore
import Testing

@Suite("Money and currencies")
struct MoneyTests {
  @Test("The ISO 4217 table has the right exponents, exact codes only, and no metals or test codes")
  func currencyTable() {
    #expect(Currency(code: "JPY")?.exponent == 0)
    #expect(Currency(code: "KRW")?.exponent == 0)
    #expect(Currency(code: "EUR")?.exponent == 2)
    #expect(Currency(code: "USD")?.exponent == 2)
    #expect(Currency(code: "KWD")?.exponent == 3)
    #expect(Currency(code: "BHD")?.exponent == 3)
    #expect(Currency(code: "CLF")?.exponent == 4)
    for code in ["eur", "EURO", "", "XAU", "XTS", "XDR", "ABC"] {
      #expect(Currency(code: code) == nil, "\(code)")
    }
    let codes = Currency.allCodes
    #expect(codes.count >= 150)
    #expect(Set(codes).count == codes.count)
    for code in codes {
      #expect(code.count == 3 && code.allSatisfy { $0.isUppercase && $0.isASCII }, "\(code)")
    }
  }

  @Test("Amounts must be positive, at most the maximum, in an accepted currency; the error names the field")
  func validation() throws {
    let ok = try Money.validated(minorUnits: 1050, currencyCode: "EUR", field: "amount")
    #expect(ok.minorUnits == 1050 && ok.currency.code == "EUR")
    let cases: [(Int64, String, String, String)] = [
      (0, "EUR", "AMOUNT_INVALID", "amount.amount_minor"),
      (-5, "EUR", "AMOUNT_INVALID", "amount.amount_minor"),
      (Money.defaultMaximumMinorUnits + 1, "EUR", "AMOUNT_INVALID", "amount.amount_minor"),
      (100, "EUX", "CURRENCY_UNSUPPORTED", "amount.currency"),
      (100, "", "CURRENCY_UNSUPPORTED", "amount.currency"),
    ]
    for (units, code, reason, field) in cases {
      #expect(throws: DomainError.self) { try Money.validated(minorUnits: units, currencyCode: code, field: "amount") }
      do {
        _ = try Money.validated(minorUnits: units, currencyCode: code, field: "amount")
      } catch {
        #expect(error.reason == reason, "\(units) \(code)")
        #expect(error.field == field, "\(units) \(code)")
        #expect(error.kind == .invalidArgument)
      }
    }
    #expect(
      (try? Money.validated(minorUnits: Money.defaultMaximumMinorUnits, currencyCode: "EUR", field: "amount")) != nil)
    #expect((try? Money.validated(minorUnits: 500, currencyCode: "EUR", field: "amount", maximum: 499)) == nil)
  }

  @Test("Money prints with its currency's exponent")
  func description() throws {
    #expect(Money(minorUnits: 1234, currency: try #require(Currency(code: "EUR"))).description == "12.34 EUR")
    #expect(Money(minorUnits: 5, currency: try #require(Currency(code: "EUR"))).description == "0.05 EUR")
    #expect(Money(minorUnits: 1000, currency: try #require(Currency(code: "JPY"))).description == "1000 JPY")
    #expect(Money(minorUnits: 1234, currency: try #require(Currency(code: "KWD"))).description == "1.234 KWD")
  }
}

@Suite("Card numbers in free text")
struct CardNumberTests {
  @Test(
    "Luhn-valid 13–19 digit runs are found, grouped or not",
    arguments: [
      "4242424242424242", "4242 4242 4242 4242", "4242-4242-4242-4242", "card: 4000056655665556 thanks",
      "378282246310005", "6011111111111117", "4222222222222", "6200000000000005",
      // Glued to letters it is still card data.
      "ref4242424242424242x",
      // Other separators, and several of them.
      "4242.4242.4242.4242", "4242/4242/4242/4242", "4242\t4242\t4242\t4242", "4242  4242  4242  4242",
      "4242   4242 _ 4242 4242", "4242\u{00A0}4242\u{2009}4242\u{2013}4242", "3782 822463 10005",
      // Followed by a CVV or an expiry, after other numbers, glued to other digits.
      "4242424242424242 123", "4242 4242 4242 4242 123", "4242424242424242/12/27", "4242424242424242 exp 12/27",
      "order 12 4242424242424242", "2024-11-22 4242 4242 4242 4242", "42424242424242424242", "0004242424242424242000",
      // Digits of other scripts, and invisible characters between digits.
      "٤٢٤٢٤٢٤٢٤٢٤٢٤٢٤٢", "４２４２４２４２４２４２４２４２", "४२४२४२४२४२४२४२४२",
      "4\u{0301}242424242424242", "4242\u{200B}4242\u{200B}4242\u{200B}4242", "4242\u{2060}4242\u{FEFF}42424242",
    ])
  func detected(_ text: String) {
    #expect(CardNumbers.containsCardNumber(text))
  }

  @Test(
    "Other numbers are left alone",
    arguments: [
      "4242424242424241", "424242424242", "order 2024-11-22", "+49 30 1234567", "", "invoice 12345678901",
      // Five separators end a run; letters do too.
      "4242     4242     4242     4242", "4242x4242y4242z4242",
      // A 16-digit number that fails the check, grouped or followed by more digits.
      "4242 4242 4242 4241", "4242424242424241 12",
      // Random identifiers.
      "550e8400-e29b-41d4-a716-446655440000",
    ])
  func notDetected(_ text: String) {
    #expect(!CardNumbers.containsCardNumber(text))
  }
}

@Suite("Typed identifiers")
struct IdentifierTests {
  @Test("An id parses only with its own prefix and 1–64 letters or digits")
  func parsing() {
    #expect(PaymentID("pay_abc123")?.rawValue == "pay_abc123")
    #expect(PaymentID("re_abc123") == nil)
    #expect(RefundID("re_abc123") != nil)
    #expect(PaymentID("pay_") == nil)
    #expect(PaymentID("pay_" + String(repeating: "a", count: 65)) == nil)
    #expect(PaymentID("pay_abc-123") == nil)
    #expect(PaymentID("pay_abc 123") == nil)
    #expect(MerchantID("mer_dev") != nil)
    #expect(ClientID("cli_x") != nil)
  }

  @Test("Random ids parse back and do not repeat")
  func random() {
    var seen = Set<PaymentID>()
    for _ in 0..<1000 {
      let id = PaymentID.random()
      #expect(PaymentID(id.rawValue) == id)
      seen.insert(id)
    }
    #expect(seen.count == 1000)
  }
}
