/// Finds text that looks like a payment card number (PAN): 13 to 19 digits, optionally grouped by
/// single spaces or dashes, passing the Luhn check. Tender handles provider tokens only, so such
/// text is refused wherever free text is accepted (descriptions, references, metadata).
public enum CardNumbers {
  public static func containsCardNumber(_ text: String) -> Bool {
    var digits: [UInt8] = []
    var lastWasSeparator = false
    for byte in text.utf8 {
      if byte >= 0x30 && byte <= 0x39 {
        digits.append(byte - 0x30)
        lastWasSeparator = false
      } else if (byte == 0x20 || byte == 0x2D) && !digits.isEmpty && !lastWasSeparator {
        // One space or dash between digit groups keeps the run going.
        lastWasSeparator = true
      } else {
        if self.isCardNumber(digits) { return true }
        digits.removeAll(keepingCapacity: true)
        lastWasSeparator = false
      }
    }
    return self.isCardNumber(digits)
  }

  /// A run of 13–19 digits whose Luhn checksum holds.
  static func isCardNumber(_ digits: [UInt8]) -> Bool {
    guard (13...19).contains(digits.count) else { return false }
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
