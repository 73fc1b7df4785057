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
    Migration(
      version: 3,
      name: "payments",
      statements: [
        """
        CREATE TABLE payments (
          payment_id          text PRIMARY KEY CHECK (payment_id ~ '^pay_[A-Za-z0-9]{1,64}$'),
          merchant_id         text NOT NULL REFERENCES merchants (merchant_id),
          status              text NOT NULL CHECK (status IN ('processing', 'requires_capture', 'succeeded', 'failed', 'canceled')),
          capture_method      text NOT NULL CHECK (capture_method IN ('automatic', 'manual')),
          currency            text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
          amount_minor        bigint NOT NULL CHECK (amount_minor > 0),
          capturable_minor    bigint NOT NULL DEFAULT 0 CHECK (capturable_minor >= 0),
          captured_minor      bigint NOT NULL DEFAULT 0 CHECK (captured_minor >= 0),
          refunded_minor      bigint NOT NULL DEFAULT 0 CHECK (refunded_minor >= 0),
          failure_reason      text CHECK (failure_reason IN ('card_declined', 'insufficient_funds', 'expired_card', 'fraud_suspected', 'provider_error', 'authorization_expired')),
          payment_method      text NOT NULL CHECK (char_length(payment_method) BETWEEN 1 AND 255),
          customer_reference  text NOT NULL DEFAULT '' CHECK (char_length(customer_reference) <= 255),
          description         text NOT NULL DEFAULT '' CHECK (char_length(description) <= 1000),
          metadata            jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
          provider_payment_id text,
          create_time         timestamptz NOT NULL DEFAULT now(),
          update_time         timestamptz NOT NULL DEFAULT now(),
          CHECK (captured_minor + capturable_minor <= amount_minor),
          CHECK (refunded_minor <= captured_minor),
          CHECK ((status = 'failed') = (failure_reason IS NOT NULL)),
          CHECK (status = 'succeeded' OR (captured_minor = 0 AND refunded_minor = 0)),
          CHECK (status = 'requires_capture' OR capturable_minor = 0)
        )
        """,
        // Keyset pagination: a page is an index range scan, as cheap at row 10 million as at row 10.
        "CREATE INDEX payments_page ON payments (merchant_id, create_time DESC, payment_id DESC)",
        "CREATE INDEX payments_page_by_status ON payments (merchant_id, status, create_time DESC, payment_id DESC)",
        "CREATE INDEX payments_page_by_customer ON payments (merchant_id, customer_reference, create_time DESC, payment_id DESC) WHERE customer_reference <> ''",
        """
        CREATE TABLE refunds (
          refund_id           text PRIMARY KEY CHECK (refund_id ~ '^re_[A-Za-z0-9]{1,64}$'),
          merchant_id         text NOT NULL REFERENCES merchants (merchant_id),
          payment_id          text NOT NULL REFERENCES payments (payment_id),
          status              text NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
          currency            text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
          amount_minor        bigint NOT NULL CHECK (amount_minor > 0),
          reason              text NOT NULL CHECK (reason IN ('requested_by_customer', 'duplicate', 'fraudulent')),
          failure_reason      text,
          metadata            jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
          provider_refund_id  text,
          create_time         timestamptz NOT NULL DEFAULT now(),
          update_time         timestamptz NOT NULL DEFAULT now(),
          CHECK ((status = 'failed') = (failure_reason IS NOT NULL))
        )
        """,
        "CREATE INDEX refunds_page ON refunds (merchant_id, create_time DESC, refund_id DESC)",
        "CREATE INDEX refunds_by_payment ON refunds (payment_id, create_time DESC, refund_id DESC)",
        // Events get a gap-free sequence per merchant: taking the next number locks the merchant's
        // counter row until commit, so a merchant's events become visible in sequence order and a
        // watcher resuming after sequence N misses nothing. (Replaced by the feed of migration 5.)
        """
        CREATE TABLE merchant_event_counters (
          merchant_id  text PRIMARY KEY REFERENCES merchants (merchant_id),
          last_seq     bigint NOT NULL DEFAULT 0 CHECK (last_seq >= 0)
        )
        """,
        """
        CREATE TABLE payment_events (
          merchant_id   text NOT NULL REFERENCES merchants (merchant_id),
          seq           bigint NOT NULL CHECK (seq > 0),
          payment_id    text NOT NULL REFERENCES payments (payment_id),
          refund_id     text REFERENCES refunds (refund_id),
          type          text NOT NULL CHECK (type IN ('payment_created', 'payment_requires_capture', 'payment_succeeded', 'payment_failed', 'payment_canceled', 'refund_created', 'refund_succeeded', 'refund_failed')),
          from_status   text,
          to_status     text,
          amount_minor  bigint,
          create_time   timestamptz NOT NULL DEFAULT now(),
          PRIMARY KEY (merchant_id, seq)
        )
        """,
        "CREATE INDEX payment_events_by_payment ON payment_events (payment_id, seq)",
        """
        CREATE FUNCTION tender_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'restrict_violation';
        END
        $$
        """,
        """
        CREATE TRIGGER payment_events_append_only BEFORE UPDATE OR DELETE ON payment_events
        FOR EACH ROW EXECUTE FUNCTION tender_refuse_change()
        """,
        // Stripe-style idempotency keys with recovery points: one record per (merchant, key); the
        // lock says who is working on it and until when; the stored response is replayed as is.
        """
        CREATE TABLE idempotency_keys (
          merchant_id          text NOT NULL REFERENCES merchants (merchant_id),
          idempotency_key      text NOT NULL CHECK (char_length(idempotency_key) BETWEEN 1 AND 255),
          method               text NOT NULL,
          request_fingerprint  bytea NOT NULL CHECK (octet_length(request_fingerprint) = 32),
          recovery_point       text NOT NULL CHECK (recovery_point IN ('started', 'payment_created', 'refund_created', 'provider_called', 'finished')),
          locked_until         timestamptz,
          payment_id           text REFERENCES payments (payment_id),
          refund_id            text REFERENCES refunds (refund_id),
          response_code        integer,
          response_message     bytea,
          response_details     bytea,
          create_time          timestamptz NOT NULL DEFAULT now(),
          update_time          timestamptz NOT NULL DEFAULT now(),
          PRIMARY KEY (merchant_id, idempotency_key),
          CHECK ((recovery_point = 'finished') = (response_code IS NOT NULL)),
          CHECK (recovery_point <> 'finished' OR locked_until IS NULL)
        )
        """,
        "CREATE INDEX idempotency_keys_by_age ON idempotency_keys (create_time)",
        "CREATE INDEX idempotency_keys_unfinished ON idempotency_keys (locked_until) WHERE recovery_point <> 'finished'",
        """
        CREATE TABLE provider_requests (
          request_id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
          merchant_id               text NOT NULL REFERENCES merchants (merchant_id),
          payment_id                text REFERENCES payments (payment_id),
          refund_id                 text REFERENCES refunds (refund_id),
          operation                 text NOT NULL CHECK (operation IN ('create_payment', 'capture_payment', 'cancel_payment', 'create_refund')),
          provider_idempotency_key  text NOT NULL,
          outcome                   text NOT NULL CHECK (outcome IN ('sent', 'succeeded', 'declined', 'failed', 'unknown')),
          http_status               integer,
          attempt                   integer NOT NULL DEFAULT 1 CHECK (attempt > 0),
          create_time               timestamptz NOT NULL DEFAULT now(),
          finish_time               timestamptz
        )
        """,
        "CREATE INDEX provider_requests_by_payment ON provider_requests (payment_id, request_id)",
      ]
    ),
    Migration(
      version: 4,
      name: "refund_listing",
      statements: [
        // A refund's reason is optional (REFUND_REASON_UNSPECIFIED means none given).
        "ALTER TABLE refunds ALTER COLUMN reason DROP NOT NULL",
        // A merchant's refunds of one payment, newest first, as one index range scan.
        "DROP INDEX refunds_by_payment",
        "CREATE INDEX refunds_page_by_payment ON refunds (merchant_id, payment_id, create_time DESC, refund_id DESC)",
        "CREATE INDEX provider_requests_by_refund ON provider_requests (refund_id, request_id) WHERE refund_id IS NOT NULL",
      ]
    ),
    Migration(
      version: 5,
      name: "event_feed",
      statements: [
        // Events are ordered by (writing transaction, event id) instead of a per-merchant counter
        // whose row lock serialized every write of a merchant until commit. A reader takes only
        // events of transactions older than its snapshot's xmin — all finished — so nothing can
        // later appear before what it has already read: resuming after a position misses nothing.
        "ALTER TABLE payment_events ADD COLUMN event_id bigint GENERATED ALWAYS AS IDENTITY",
        "ALTER TABLE payment_events ADD COLUMN tx xid8 NOT NULL DEFAULT pg_current_xact_id()",
        "ALTER TABLE payment_events DROP CONSTRAINT payment_events_pkey",
        "ALTER TABLE payment_events ADD PRIMARY KEY (event_id)",
        "ALTER TABLE payment_events DROP COLUMN seq",
        "CREATE INDEX payment_events_feed ON payment_events (merchant_id, tx, event_id)",
        "DROP TABLE merchant_event_counters",
      ]
    ),
    Migration(
      version: 6,
      name: "fenced_operations",
      statements: [
        // Every claim and takeover of a key gets a new owner token; every later write of the
        // operation is conditional on it, so an owner whose lock expired changes nothing.
        "ALTER TABLE idempotency_keys ADD COLUMN owner_token bigint NOT NULL DEFAULT 1 CHECK (owner_token > 0)",
        // Set (before the call) once any owner asked the provider: from then on only a definitive
        // provider answer ends the operation.
        "ALTER TABLE idempotency_keys ADD COLUMN provider_attempted boolean NOT NULL DEFAULT false",
        // Operations interrupted before this column existed may have reached the provider.
        "UPDATE idempotency_keys SET provider_attempted = true WHERE recovery_point <> 'finished'",
        "ALTER TABLE provider_requests DROP CONSTRAINT provider_requests_outcome_check",
        "ALTER TABLE provider_requests ADD CONSTRAINT provider_requests_outcome_check CHECK (outcome IN ('sent', 'succeeded', 'declined', 'failed', 'unknown', 'unreachable'))",
        // What was asked for, so an interrupted call can be made again exactly as before.
        "ALTER TABLE provider_requests ADD COLUMN amount_minor bigint CHECK (amount_minor > 0)",
        "CREATE INDEX provider_requests_by_key ON provider_requests (merchant_id, provider_idempotency_key, request_id)",
      ]
    ),
    Migration(
      version: 7,
      name: "settlement_checks",
      statements: [
        // The reconciler's checks of payments and refunds the provider has not finished: how
        // many, when the next is due, and when it gave up on the object.
        """
        CREATE TABLE settlement_checks (
          object_id          text PRIMARY KEY,
          checks             integer NOT NULL CHECK (checks > 0),
          next_check_time    timestamptz NOT NULL,
          abandon_time       timestamptz,
          update_time        timestamptz NOT NULL DEFAULT now()
        )
        """,
        "CREATE INDEX payments_open ON payments (update_time) WHERE status = 'processing'",
        "CREATE INDEX refunds_open ON refunds (update_time) WHERE status = 'pending'",
        "CREATE INDEX idempotency_keys_open_refunds ON idempotency_keys (refund_id) WHERE recovery_point <> 'finished' AND refund_id IS NOT NULL",
        "CREATE INDEX idempotency_keys_open_payments ON idempotency_keys (payment_id) WHERE recovery_point <> 'finished' AND payment_id IS NOT NULL",
      ]
    ),
    Migration(
      version: 8,
      name: "webhook_inbox",
      statements: [
        // Every verified provider callback, once per provider and event id, with what applying
        // it did; the raw bytes are kept as they were signed.
        """
        CREATE TABLE webhook_inbox (
          provider           text NOT NULL CHECK (char_length(provider) BETWEEN 1 AND 64),
          event_id           text NOT NULL CHECK (char_length(event_id) BETWEEN 1 AND 255),
          event_type         text NOT NULL,
          body               bytea NOT NULL,
          signed_time        timestamptz NOT NULL,
          receive_time       timestamptz NOT NULL DEFAULT now(),
          state              text NOT NULL DEFAULT 'received' CHECK (state IN ('received', 'done', 'parked')),
          outcome            text CHECK (outcome IN ('applied', 'already', 'stale', 'ignored')),
          attempts           integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
          next_attempt_time  timestamptz NOT NULL DEFAULT now(),
          apply_time         timestamptz,
          PRIMARY KEY (provider, event_id),
          CHECK ((state = 'done') = (outcome IS NOT NULL))
        )
        """,
        "CREATE INDEX webhook_inbox_due ON webhook_inbox (next_attempt_time) WHERE state = 'received'",
        // Events name the provider's objects.
        "CREATE INDEX payments_by_provider_id ON payments (provider_payment_id) WHERE provider_payment_id IS NOT NULL",
        "CREATE INDEX refunds_by_provider_id ON refunds (provider_refund_id) WHERE provider_refund_id IS NOT NULL",
      ]
    ),
    Migration(
      version: 9,
      name: "feed_signals",
      statements: [
        // One reader per process follows every merchant's events in feed order.
        "CREATE INDEX payment_events_in_order ON payment_events (tx, event_id)",
        // Wake-ups for that reader, once per writing transaction (NOTIFY folds equal payloads).
        """
        CREATE FUNCTION tender_notify_payment_events() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          PERFORM pg_notify('tender_payment_events', pg_current_xact_id()::text);
          RETURN NULL;
        END
        $$
        """,
        """
        CREATE TRIGGER payment_events_notify AFTER INSERT ON payment_events
          FOR EACH STATEMENT EXECUTE FUNCTION tender_notify_payment_events()
        """,
        // Open streams end when their token is revoked or their client or merchant disabled,
        // whichever replica, or the operator CLI, changed it.
        """
        CREATE FUNCTION tender_notify_standing() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF TG_TABLE_NAME = 'revoked_tokens' THEN
            PERFORM pg_notify('tender_standing', 'token:' || NEW.token_id);
          ELSIF TG_TABLE_NAME = 'api_clients' THEN
            PERFORM pg_notify('tender_standing', 'client:' || NEW.client_id);
          ELSE
            PERFORM pg_notify('tender_standing', 'merchant:' || NEW.merchant_id);
          END IF;
          RETURN NULL;
        END
        $$
        """,
        """
        CREATE TRIGGER revoked_tokens_notify AFTER INSERT ON revoked_tokens
          FOR EACH ROW EXECUTE FUNCTION tender_notify_standing()
        """,
        """
        CREATE TRIGGER api_clients_notify AFTER UPDATE OF status ON api_clients
          FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION tender_notify_standing()
        """,
        """
        CREATE TRIGGER merchants_notify AFTER UPDATE OF status ON merchants
          FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION tender_notify_standing()
        """,
      ]
    ),
    Migration(
      version: 10,
      name: "lean_payment_writes",
      statements: [
        // A NOTIFY takes one lock for the whole database from its transaction's commit until the
        // commit is flushed, so every payment transaction waited for the flush of the one before:
        // no two commits shared a flush. The replica that commits events announces them once
        // committed instead (PostgresEventAnnouncer), at most once per interval.
        "DROP TRIGGER payment_events_notify ON payment_events",
        "DROP FUNCTION tender_notify_payment_events()",
        // A foreign key to merchants locks the merchant's row (FOR KEY SHARE) for every inserted
        // row; concurrent writers of one merchant then share that lock through a new multixact
        // per insert. These tables take their merchant from the payment or the caller's
        // authenticated merchant in the same statement; payments and refunds keep theirs.
        "ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_merchant_id_fkey",
        "ALTER TABLE provider_requests DROP CONSTRAINT provider_requests_merchant_id_fkey",
        "ALTER TABLE payment_events DROP CONSTRAINT payment_events_merchant_id_fkey",
        // No statement looks provider calls up by payment or refund.
        "DROP INDEX provider_requests_by_payment",
        "DROP INDEX provider_requests_by_refund",
        // Feed order is the key: one index instead of the event id's and the order's.
        "ALTER TABLE payment_events DROP CONSTRAINT payment_events_pkey",
        "DROP INDEX payment_events_in_order",
        "ALTER TABLE payment_events ADD PRIMARY KEY (tx, event_id)",
        // One index of the few unfinished operations serves the completer (all of them, sorted
        // by lock) and the reconciler (those of a payment, refunds included: a refund's key names
        // its payment too), instead of three written on every claim.
        "DROP INDEX idempotency_keys_unfinished",
        "DROP INDEX idempotency_keys_open_payments",
        "DROP INDEX idempotency_keys_open_refunds",
        "CREATE INDEX idempotency_keys_open ON idempotency_keys (payment_id) WHERE recovery_point <> 'finished'",
      ]
    ),
  ]
}
