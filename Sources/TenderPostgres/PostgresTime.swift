public import Foundation

/// Times at the precision PostgreSQL keeps them: whole microseconds since 2000-01-01, turned into
/// a `Date` exactly as PostgresNIO does, so a record built in memory equals the record read back.
/// `now` is the clock the payment operations run on over these stores.
public enum PostgresTime {
  static let epoch = Date(timeIntervalSince1970: 946_684_800)

  public static func now() -> Date { self.date(microseconds: self.microseconds(Date())) }

  /// Microseconds since 2000-01-01 (nearest: a `Date` near today resolves about 0.1 µs).
  public static func microseconds(_ date: Date) -> Int64 {
    Int64((date.timeIntervalSince(self.epoch) * 1_000_000).rounded())
  }

  public static func date(microseconds: Int64) -> Date {
    Date(timeInterval: Double(microseconds) / 1_000_000, since: self.epoch)
  }
}
