/// Finds text that looks like a payment card number (PAN). Tender handles provider tokens only, so
/// such text is refused wherever Tender stores what a caller wrote (descriptions, references,
/// metadata, display names, idempotency keys).
///
/// Digits are read after normalising: any Unicode decimal digit counts (Arabic-Indic, fullwidth,
/// …); invisible characters between digits (combining marks, zero-width and other format
/// characters) are skipped; digit groups separated by up to four separator characters (white
/// space including tabs, `-`, `.`, `/`, `_`, `,`, `:` and other dashes) form one run. A run holds a
/// card number when consecutive whole groups of it, 13 to 19 digits together, pass the Luhn check
/// — so a PAN is found when it is grouped in any way, preceded by other numbers ("order 12 4111…")
/// or followed by a CVV or an expiry ("4111… 123", "4111…/12/27"). A group longer than 19 digits is
/// also checked for a PAN at its start and at its end (a PAN glued to other digits).
public enum CardNumbers {
  public static func containsCardNumber(_ text: String) -> Bool {
    var run = Run()
    var separators = 0
    for scalar in text.unicodeScalars {
      if let digit = Self.digit(scalar) {
        if separators > 0 { run.endGroup() }
        run.append(digit)
        separators = 0
      } else if Self.isInvisible(scalar) {
        continue
      } else if Self.isSeparator(scalar), !run.isEmpty, separators < 4 {
        separators += 1
      } else {
        if run.containsCardNumber { return true }
        run = Run()
        separators = 0
      }
    }
    return run.containsCardNumber
  }

  /// Digits in groups.
  private struct Run {
    var digits: [UInt8] = []
    /// Where each group starts in `digits`; the current group runs to the end.
    var starts: [Int] = []

    var isEmpty: Bool { self.digits.isEmpty }

    mutating func append(_ digit: UInt8) {
      if self.starts.isEmpty { self.starts.append(0) }
      self.digits.append(digit)
    }

    mutating func endGroup() {
      self.starts.append(self.digits.count)
    }

    var containsCardNumber: Bool {
      guard self.digits.count >= 13 else { return false }
      let ends = self.starts.dropFirst() + [self.digits.count]
      for (index, start) in self.starts.enumerated() {
        for end in ends.dropFirst(index) {
          let length = end - start
          if length > 19 { break }
          if length >= 13, CardNumbers.passesLuhn(self.digits[start..<end]) { return true }
        }
      }
      for (start, end) in zip(self.starts, ends) where end - start > 19 {
        for length in 13...19 {
          if CardNumbers.passesLuhn(self.digits[start..<(start + length)]) { return true }
          if CardNumbers.passesLuhn(self.digits[(end - length)..<end]) { return true }
        }
      }
      return false
    }
  }

  /// The value of a decimal digit in any script.
  private static func digit(_ scalar: Unicode.Scalar) -> UInt8? {
    if scalar.value >= 0x30 && scalar.value <= 0x39 { return UInt8(scalar.value - 0x30) }
    guard scalar.value > 0x7F, scalar.properties.numericType == .decimal,
      let value = scalar.properties.numericValue, value >= 0, value <= 9
    else { return nil }
    return UInt8(value)
  }

  /// Characters that do not show between two digits.
  private static func isInvisible(_ scalar: Unicode.Scalar) -> Bool {
    guard scalar.value > 0x7F else { return false }
    switch scalar.properties.generalCategory {
    case .nonspacingMark, .enclosingMark, .spacingMark, .format: return true
    default: return false
    }
  }

  private static func isSeparator(_ scalar: Unicode.Scalar) -> Bool {
    switch scalar {
    case " ", "\t", "\n", "\r", "-", ".", "/", "_", ",", ":": return true
    default:
      guard scalar.value > 0x7F else { return false }
      return scalar.properties.isWhitespace || scalar.properties.generalCategory == .dashPunctuation
    }
  }

  /// Whether the Luhn checksum of `digits` holds.
  static func passesLuhn(_ digits: ArraySlice<UInt8>) -> Bool {
    var sum = 0
    for (offset, digit) in digits.reversed().enumerated() {
      var value = Int(digit)
      if offset % 2 == 1 {
        value *= 2
        if value > 9 { value -= 9 }
      }
      sum += value
    }
    return sum % 10 == 0
  }
}

/// What Tender accepts in text it stores from a caller: at most a number of UTF-8 bytes (a
/// character can be many bytes: combining marks have no limit), no control characters (C0, DEL,
/// C1 — NUL included), nothing that looks like a card number.
public enum StoredText {
  public enum Problem: Error, Sendable, Equatable {
    case tooLong(maximumBytes: Int)
    case controlCharacter
    case cardNumber
  }

  /// The first rule `text` breaks, or nil.
  public static func problem(_ text: String, maximumBytes: Int) -> Problem? {
    if text.utf8.count > maximumBytes { return .tooLong(maximumBytes: maximumBytes) }
    // A card number first: it is the refusal that matters, whatever else the text holds.
    if CardNumbers.containsCardNumber(text) { return .cardNumber }
    if self.containsControlCharacter(text) { return .controlCharacter }
    return nil
  }

  public static func containsControlCharacter(_ text: String) -> Bool {
    text.unicodeScalars.contains { $0.value < 0x20 || (0x7F...0x9F).contains($0.value) }
  }
}
