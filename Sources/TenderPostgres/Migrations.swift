/// One versioned, forward-only schema change.
public struct Migration: Sendable {
  /// Strictly increasing version; never reused or renumbered.
  public let version: Int
  /// Short name, recorded beside the version.
  public let name: String
  /// The SQL statements, run in order in one transaction with the other pending migrations.
  public let statements: [String]

  public init(version: Int, name: String, statements: [String]) {
    self.version = version
    self.name = name
    self.statements = statements
  }

  /// A stable fingerprint of the SQL, so an edited migration is noticed instead of silently skipped.
  var checksum: String {
    // FNV-1a 64: stable across processes and platforms, enough to detect edits.
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in self.statements.joined(separator: "\u{0}").utf8 {
      hash ^= UInt64(byte)
      hash &*= 0x0000_0100_0000_01b3
    }
    let hex = String(hash, radix: 16)
    return String(repeating: "0", count: 16 - hex.count) + hex
  }
}

/// Tender's schema history, oldest first. Append only: never edit a migration that has shipped.
public enum Migrations {
  public static let all: [Migration] = [
    Migration(
      version: 1,
      name: "merchants",
      statements: [
        """
        CREATE TABLE merchants (
          merchant_id   text PRIMARY KEY CHECK (merchant_id ~ '^mer_[A-Za-z0-9]{1,64}$'),
          display_name  text NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 200),
          status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
          create_time   timestamptz NOT NULL DEFAULT now(),
          update_time   timestamptz NOT NULL DEFAULT now()
        )
        """,
        """
        COMMENT ON TABLE merchants IS 'Tenants: every payment, refund, client and idempotency key belongs to one.'
        """,
      ]
    )
  ]
}
