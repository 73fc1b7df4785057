public import Foundation
public import Logging
public import PostgresNIO
public import TenderAuth
public import Tracing

/// `AuthStore` on PostgreSQL.
public struct PostgresAuthStore: AuthStore {
  private let client: PostgresClient
  private let logger: Logger
  private let database: DatabaseCalls

  /// - Parameter tracer: receives a client span per store operation, a child of the current span.
  public init(
    client: PostgresClient, logger: Logger, tracer: any Tracer = NoOpTracer(),
    callTimeout: Duration? = PostgresStores.defaultCallTimeout
  ) {
    self.client = client
    self.logger = logger
    self.database = DatabaseCalls(tracer: tracer, timeout: callTimeout)
  }

  private func traced<T: Sendable>(
    _ operation: String, _ body: @escaping @Sendable () async throws -> T
  ) async throws
    -> T
  {
    try await self.database.run(operation, body)
  }

  public func ensureMerchant(id: String, displayName: String) async throws {
    try await self.traced("auth.ensure_merchant") {
      try await self.client.query(
        "INSERT INTO merchants (merchant_id, display_name) VALUES (\(id), \(displayName)) ON CONFLICT (merchant_id) DO NOTHING",
        logger: self.logger
      )
    }
  }

  public func insertClient(_ c: ClientRecord) async throws {
    try await self.traced("auth.insert_client") {
      let rows = try await self.client.query(
        """
        INSERT INTO api_clients (client_id, merchant_id, display_name, secret_hash, scopes, status, create_time)
        SELECT \(c.clientID), m.merchant_id, \(c.displayName), \(c.secretHash), \(c.scopes), \(c.status.rawValue), \(c.createTime)
        FROM merchants m WHERE m.merchant_id = \(c.merchantID) AND m.status = 'active'
        RETURNING client_id
        """,
        logger: self.logger
      )
      var inserted = false
      for try await _ in rows.decode(String.self) { inserted = true }
      guard inserted else { throw AuthStoreError.unknownMerchant }
    }
  }

  private func clients(_ query: PostgresQuery) async throws -> [ClientRecord] {
    let rows = try await self.client.query(query, logger: self.logger)
    var result: [ClientRecord] = []
    for try await (id, merchant, name, scopes, status, hash, created, rotated) in rows.decode(
      (String, String, String, [String], String, String, Date, Date?).self)
    {
      result.append(
        ClientRecord(
          clientID: id, merchantID: merchant, displayName: name, scopes: scopes,
          status: ClientRecord.Status(rawValue: status) ?? .disabled, secretHash: hash, createTime: created,
          rotateTime: rotated))
    }
    return result
  }

  public func client(id: String) async throws -> ClientRecord? {
    try await self.traced("auth.client") {
      try await self.clients(
        "SELECT client_id, merchant_id, display_name, scopes, status, secret_hash, create_time, rotate_time FROM api_clients WHERE client_id = \(id)"
      ).first
    }
  }

  public func replaceSecret(clientID: String, secretHash: String) async throws -> ClientRecord {
    try await self.traced("auth.replace_secret") {
      let updated = try await self.clients(
        """
        UPDATE api_clients SET secret_hash = \(secretHash), rotate_time = now() WHERE client_id = \(clientID)
        RETURNING client_id, merchant_id, display_name, scopes, status, secret_hash, create_time, rotate_time
        """
      )
      guard let record = updated.first else { throw AuthStoreError.unknownClient }
      return record
    }
  }

  public func setStatus(clientID: String, status: ClientRecord.Status) async throws -> ClientRecord {
    try await self.traced("auth.set_status") {
      let updated = try await self.clients(
        """
        UPDATE api_clients SET status = \(status.rawValue) WHERE client_id = \(clientID)
        RETURNING client_id, merchant_id, display_name, scopes, status, secret_hash, create_time, rotate_time
        """
      )
      guard let record = updated.first else { throw AuthStoreError.unknownClient }
      return record
    }
  }

  public func signingKeys() async throws -> [SigningKeyRecord] {
    try await self.traced("auth.signing_keys") {
      let rows = try await self.client.query(
        """
        SELECT key_id, algorithm, public_key, private_key, state, create_time, retire_time
        FROM signing_keys ORDER BY (state = 'active') DESC, create_time DESC
        """,
        logger: self.logger
      )
      var keys: [SigningKeyRecord] = []
      for try await (id, algorithm, publicKey, privateKey, state, created, retired) in rows.decode(
        (String, String, ByteBuffer, ByteBuffer, String, Date, Date?).self)
      {
        keys.append(
          SigningKeyRecord(
            keyID: id, algorithm: algorithm, publicKey: Array(buffer: publicKey),
            sealedPrivateKey: Array(buffer: privateKey), state: SigningKeyRecord.State(rawValue: state) ?? .retired,
            createTime: created, retireTime: retired))
      }
      return keys
    }
  }

  public func insertFirstKey(_ key: SigningKeyRecord) async throws -> SigningKeyRecord {
    try await self.traced("auth.insert_first_key") {
      // The partial unique index allows one active key: a replica that loses the race inserts nothing.
      try await self.client.query(
        """
        INSERT INTO signing_keys (key_id, algorithm, public_key, private_key, state, create_time)
        VALUES (\(key.keyID), \(key.algorithm), \(ByteBuffer(bytes: key.publicKey)), \(ByteBuffer(bytes: key.sealedPrivateKey)), 'active', \(key.createTime))
        ON CONFLICT DO NOTHING
        """,
        logger: self.logger
      )
      guard let active = try await self.signingKeys().first(where: { $0.state == .active }) else {
        throw KeyRingError.noActiveKey
      }
      return active
    }
  }

  public func rotate(to key: SigningKeyRecord) async throws {
    try await self.traced("auth.rotate_key") {
      let logger = self.logger
      try await self.client.withTransaction(logger: logger) { connection in
        try await connection.query(
          "UPDATE signing_keys SET state = 'retired', retire_time = now() WHERE state = 'active'", logger: logger)
        try await connection.query(
          """
          INSERT INTO signing_keys (key_id, algorithm, public_key, private_key, state, create_time)
          VALUES (\(key.keyID), \(key.algorithm), \(ByteBuffer(bytes: key.publicKey)), \(ByteBuffer(bytes: key.sealedPrivateKey)), 'active', \(key.createTime))
          """,
          logger: logger
        )
      }
    }
  }

  public func removeKey(id: String) async throws -> Bool {
    try await self.traced("auth.remove_key") {
      let rows = try await self.client.query(
        "DELETE FROM signing_keys WHERE key_id = \(id) RETURNING key_id", logger: self.logger)
      var removed = false
      for try await _ in rows.decode(String.self) { removed = true }
      return removed
    }
  }

  public func revoke(tokenID: String, clientID: String, expireTime: Date, revokedBy: String) async throws {
    try await self.traced("auth.revoke") {
      try await self.insertRevocation(
        tokenID: tokenID, clientID: clientID, expireTime: expireTime, revokedBy: revokedBy)
    }
  }

  private func insertRevocation(tokenID: String, clientID: String, expireTime: Date, revokedBy: String) async throws {
    try await self.client.query(
      """
      INSERT INTO revoked_tokens (token_id, client_id, expire_time, revoked_by)
      VALUES (\(tokenID), \(clientID), \(expireTime), \(revokedBy))
      ON CONFLICT (token_id) DO NOTHING
      """,
      logger: self.logger
    )
  }

  public func standing(clientID: String, tokenID: String) async throws -> TokenStanding {
    try await self.traced("auth.token_standing") { try await self.queryStanding(clientID: clientID, tokenID: tokenID) }
  }

  private func queryStanding(clientID: String, tokenID: String) async throws -> TokenStanding {
    let rows = try await self.client.query(
      """
      SELECT (SELECT CASE WHEN m.status = 'active' THEN c.status ELSE 'disabled' END
              FROM api_clients c JOIN merchants m ON m.merchant_id = c.merchant_id
              WHERE c.client_id = \(clientID)),
             EXISTS (SELECT 1 FROM revoked_tokens WHERE token_id = \(tokenID))
      """,
      logger: self.logger
    )
    for try await (status, revoked) in rows.decode((String?, Bool).self) {
      return TokenStanding(clientStatus: status.flatMap(ClientRecord.Status.init(rawValue:)), revoked: revoked)
    }
    return TokenStanding(clientStatus: nil, revoked: false)
  }

  public func purgeExpiredRevocations() async throws -> Int {
    try await self.traced("auth.purge_revocations") {
      let rows = try await self.client.query(
        "DELETE FROM revoked_tokens WHERE expire_time < now() - interval '1 hour' RETURNING token_id",
        logger: self.logger
      )
      var count = 0
      for try await _ in rows.decode(String.self) { count += 1 }
      return count
    }
  }
}
