/// Random, unguessable resource identifiers: a type prefix and 24 base62 characters (~143 bits)
/// from the system's cryptographic random source, e.g. `cli_4fT0qZ…`.
public enum Identifiers {
  private static let alphabet = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".utf8)

  public static func make(prefix: String, length: Int = 24) -> String {
    var generator = SystemRandomNumberGenerator()
    var characters = [UInt8]()
    characters.reserveCapacity(length)
    for _ in 0..<length {
      characters.append(self.alphabet[Int(generator.next(upperBound: UInt64(self.alphabet.count)))])
    }
    return prefix + "_" + String(decoding: characters, as: UTF8.self)
  }
}
