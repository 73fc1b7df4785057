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
    ),
    Migration(
      version: 2,
      name: "auth",
      statements: [
        """
        CREATE TABLE api_clients (
          client_id     text PRIMARY KEY CHECK (client_id ~ '^cli_[A-Za-z0-9]{1,64}$'),
          merchant_id   text NOT NULL REFERENCES merchants (merchant_id),
          display_name  text NOT NULL DEFAULT '' CHECK (char_length(display_name) <= 200),
          secret_hash   text NOT NULL CHECK (secret_hash LIKE '$scrypt$%'),
          scopes        text[] NOT NULL CHECK (cardinality(scopes) > 0),
          status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
          create_time   timestamptz NOT NULL DEFAULT now(),
          rotate_time   timestamptz
        )
        """,
        "CREATE INDEX api_clients_by_merchant ON api_clients (merchant_id)",
        """
        COMMENT ON COLUMN api_clients.secret_hash IS 'scrypt PHC string with its own parameters and salt; the secret itself is never stored.'
        """,
        """
        CREATE TABLE signing_keys (
          key_id        text PRIMARY KEY,
          algorithm     text NOT NULL CHECK (algorithm IN ('EdDSA')),
          public_key    bytea NOT NULL,
          private_key   bytea NOT NULL,
          state         text NOT NULL CHECK (state IN ('active', 'retired')),
          create_time   timestamptz NOT NULL DEFAULT now(),
          retire_time   timestamptz,
          CHECK ((state = 'retired') = (retire_time IS NOT NULL))
        )
        """,
        "CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys ((true)) WHERE state = 'active'",
        """
        COMMENT ON COLUMN signing_keys.private_key IS 'AES-256-GCM sealed with the key-encryption key, key_id as associated data.'
        """,
        """
        CREATE TABLE revoked_tokens (
          token_id      text PRIMARY KEY,
          client_id     text NOT NULL,
          expire_time   timestamptz NOT NULL,
          revoke_time   timestamptz NOT NULL DEFAULT now(),
          revoked_by    text NOT NULL
        )
        """,
        "CREATE INDEX revoked_tokens_by_expiry ON revoked_tokens (expire_time)",
      ]
    ),
  ]
}
