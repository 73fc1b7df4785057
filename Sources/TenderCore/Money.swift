/// An ISO 4217 currency with its minor-unit exponent.
public struct Currency: Sendable, Hashable, CustomStringConvertible {
  /// Three upper-case letters, e.g. `EUR`.
  public let code: String
  /// Digits after the decimal point: 0 (JPY), 2 (EUR), 3 (KWD) or 4 (CLF).
  public let exponent: Int

  private init(code: String, exponent: Int) {
    self.code = code
    self.exponent = exponent
  }

  public var description: String { self.code }

  /// The currency of `code`, or nil when it is not an active ISO 4217 currency Tender accepts.
  /// Codes are matched exactly: `eur` is not `EUR`.
  public init?(code: String) {
    guard let exponent = Self.exponents[code] else { return nil }
    self.init(code: code, exponent: exponent)
  }

  /// Every accepted code, sorted.
  public static var allCodes: [String] { self.exponents.keys.sorted() }

  /// Active ISO 4217 currencies (list one, as amended to 2025) with their minor units; precious
  /// metals, testing and settlement codes (XAU, XTS, XDR, …) are not money a payment can be in.
  static let exponents: [String: Int] = {
    let zero = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
    let three = "BHD IQD JOD KWD LYD OMR TND"
    let four = "CLF UYW"
    let two = """
      AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP BYN BZD \
      CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS \
      GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR LRD LSL \
      MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK \
      PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS \
      TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS VED VES WST XCD XCG YER ZAR ZMW ZWG
      """
    var table: [String: Int] = [:]
    for (codes, exponent) in [(zero, 0), (two, 2), (three, 3), (four, 4)] {
      for code in codes.split(whereSeparator: { $0 == " " || $0 == "\n" }) {
        table[String(code)] = exponent
      }
    }
    return table
  }()
}

/// An amount of money: a count of the currency's minor units (cents, yen, fils), never a float.
public struct Money: Sendable, Hashable, CustomStringConvertible {
  public let minorUnits: Int64
  public let currency: Currency

  public init(minorUnits: Int64, currency: Currency) {
    self.minorUnits = minorUnits
    self.currency = currency
  }

  /// The largest amount Tender takes in one payment by default: 10^12 minor units.
  public static let defaultMaximumMinorUnits: Int64 = 1_000_000_000_000

  /// A positive amount no larger than `maximum`, in a currency Tender accepts; the errors name
  /// `field` (e.g. `amount`) and its parts.
  public static func validated(
    minorUnits: Int64,
    currencyCode: String,
    field: String,
    maximum: Int64 = Money.defaultMaximumMinorUnits
  ) throws(DomainError) -> Money {
    guard let currency = Currency(code: currencyCode) else {
      throw .currencyUnsupported(field: field + ".currency", currencyCode)
    }
    guard minorUnits > 0 else {
      throw .amountInvalid(field: field + ".amount_minor", "\(field) must be greater than zero")
    }
    guard minorUnits <= maximum else {
      throw .amountInvalid(field: field + ".amount_minor", "\(field) must be at most \(maximum) minor units")
    }
    return Money(minorUnits: minorUnits, currency: currency)
  }

  /// `12.34 EUR`, `1000 JPY`, `1.234 KWD`.
  public var description: String {
    let exponent = self.currency.exponent
    guard exponent > 0 else { return "\(self.minorUnits) \(self.currency.code)" }
    var scale: Int64 = 1
    for _ in 0..<exponent { scale *= 10 }
    let sign = self.minorUnits < 0 ? "-" : ""
    let magnitude = self.minorUnits.magnitude
    let fraction = String(magnitude % UInt64(scale))
    return
      "\(sign)\(magnitude / UInt64(scale)).\(String(repeating: "0", count: exponent - fraction.count))\(fraction) \(self.currency.code)"
  }
}
