public import Foundation
import Synchronization
public import TenderAuth
public import TenderCore

/// Time for in-memory ports. A manual clock moves only when a test moves it, so lock expiry and
/// settlement delays are steps of the test, not waits; a following clock also moves with real
/// time.
public final class TestClock: Sendable {
  private let start: Date
  private let started: ContinuousClock.Instant?
  private let offset = Mutex<Double>(0)

  /// A manual clock at `start`.
  public init(_ start: Date = Date()) {
    self.start = start
    self.started = nil
  }

  /// A clock that follows real time from now on (plus whatever `advance` adds).
  public init(following clock: ContinuousClock) {
    self.start = Date()
    self.started = clock.now
  }

  public var now: Date {
    let elapsed =
      self.started.map { start in
        let duration = ContinuousClock.now - start
        return Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
      } ?? 0
    return self.start.addingTimeInterval(elapsed + self.offset.withLock { $0 })
  }

  public func advance(by duration: Duration) {
    let seconds = Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    self.offset.withLock { $0 += seconds }
  }
}

/// Tender's tables in memory, with the semantics the PostgreSQL stores give them: every method
/// is one transaction (an actor method without suspension), writes of a keyed operation are
/// fenced by its owner token, and a refused write writes nothing.
public actor InMemoryDatabase {
  public let clock: TestClock

  struct Key: Hashable {
    let merchant: MerchantID
    let key: String
  }

  struct KeyRow {
    var request: IdempotencyRequest
    var point: RecoveryPoint
    var payment: PaymentID?
    var refund: RefundID?
    var lockedUntil: Date?
    var created: Date
    var token: Int64
    var attempted: Bool
    var response: StoredResponse?

    var record: IdempotencyRecord {
      IdempotencyRecord(
        request: self.request, recoveryPoint: self.point, paymentID: self.payment, refundID: self.refund,
        lockedUntil: self.lockedUntil,
        createTime: self.created, ownerToken: self.token, providerAttempted: self.attempted
      )
    }
  }

  struct Request {
    var call: ProviderCall
    var finished: Bool
  }

  struct Check {
    var checks: Int
    var next: Date
    var abandoned: Bool
  }

  var keys: [Key: KeyRow] = [:]
  var payments: [PaymentID: PaymentRecord] = [:]
  var refunds: [RefundID: RefundRecord] = [:]
  var events: [PaymentEvent] = []
  var requests: [Int64: Request] = [:]
  var checks: [String: Check] = [:]
  var transaction: Int64 = 0
  var lastEventID: Int64 = 0
  var lastRequestID: Int64 = 0
  // Auth
  var merchants: Set<String> = []
  var clients: [String: ClientRecord] = [:]
  var signingKeys: [SigningKeyRecord] = []
  var revocations: [String: (clientID: String, expires: Date)] = [:]

  /// Wake-ups for the payment event feed, sent as PostgreSQL's triggers send them.
  public nonisolated let signals = InMemoryFeedSignals()

  public init(clock: TestClock = TestClock()) {
    self.clock = clock
  }

  var now: Date { self.clock.now }
  private var lastStamp = Date.distantPast

  /// Microseconds since 1970, the precision these tables keep.
  static func microseconds(_ date: Date) -> Int64 { Int64((date.timeIntervalSince1970 * 1_000_000).rounded()) }

  static func date(microseconds: Int64) -> Date { Date(timeIntervalSince1970: Double(microseconds) / 1_000_000) }

  /// The clock's time at the tables' precision: what operations stamp new records with.
  public nonisolated func recordTime() -> Date { Self.date(microseconds: Self.microseconds(self.clock.now)) }

  /// The time a write records: the clock's, but later than every earlier write's (as
  /// PostgreSQL's transactions each get their own `now()`), at its microsecond precision.
  func stamp() -> Date {
    let next = max(Self.microseconds(self.clock.now), Self.microseconds(self.lastStamp) + 1)
    self.lastStamp = Self.date(microseconds: next)
    return self.lastStamp
  }

  func until(_ duration: Duration) -> Date {
    self.now.addingTimeInterval(Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18)
  }

  // MARK: What tests look at

  /// Every provider call recorded, oldest first (the `provider_requests` table).
  public func providerCalls() -> [ProviderCall] {
    self.requests.sorted { $0.key < $1.key }.map(\.value.call)
  }

  /// The idempotency record of a key, if any.
  public func idempotencyRecord(merchant: MerchantID, key: String) -> IdempotencyRecord? {
    self.keys[Key(merchant: merchant, key: key)]?.record
  }

  /// The events of every merchant, in order.
  public func allEvents() -> [PaymentEvent] { self.events }

  // MARK: Transactions

  /// Throws `FencedOut` unless `owner` still owns its unfinished key.
  func fence(_ owner: KeyOwner) throws {
    guard let row = self.keys[Key(merchant: owner.merchant, key: owner.key)], row.token == owner.token,
      row.point != .finished
    else {
      throw FencedOut(owner)
    }
  }

  /// What `step` will write, worked out before anything is written (making the response may throw).
  func prepare<Record>(_ step: IdempotencyStep<Record>?, record: Record) throws -> StoredResponse? {
    guard let step else { return nil }
    try self.fence(step.owner)
    if case .finish(let makeResponse) = step.action { return try makeResponse(record) }
    return nil
  }

  func apply<Record>(_ step: IdempotencyStep<Record>?, response: StoredResponse?, payment: PaymentID, refund: RefundID?)
  {
    guard let step else { return }
    if let call = step.providerCall, let request = self.requests[call.requestID] {
      self.requests[call.requestID] = Request(call: Self.ended(request.call, call.outcome), finished: true)
    }
    let key = Key(merchant: step.owner.merchant, key: step.owner.key)
    switch step.action {
    case .finish:
      self.keys[key]?.point = .finished
      self.keys[key]?.lockedUntil = nil
      self.keys[key]?.response = response
    case .advance(let point):
      self.keys[key]?.point = point
    case .release:
      self.keys[key] = nil
      return
    }
    self.keys[key]?.payment = payment
    if let refund { self.keys[key]?.refund = refund }
  }

  static func ended(_ call: ProviderCall, _ outcome: ProviderCall.Outcome) -> ProviderCall {
    ProviderCall(
      merchant: call.merchant, payment: call.payment, refund: call.refund, operation: call.operation,
      providerKey: call.providerKey, outcome: outcome,
      amountMinorUnits: call.amountMinorUnits
    )
  }

  func appendEvent(
    merchant: MerchantID, payment: PaymentID, refund: RefundID?, type: PaymentEventType, from: PaymentStatus?,
    to: PaymentStatus?, amount: Int64?
  ) -> PaymentEvent {
    self.lastEventID += 1
    self.signals.send(.events(transaction: nil))
    let event = PaymentEvent(
      position: EventPosition(transaction: self.transaction, id: self.lastEventID), merchantID: merchant,
      paymentID: payment, refundID: refund,
      type: type, fromStatus: from, toStatus: to, amountMinorUnits: amount, createTime: self.stamp()
    )
    self.events.append(event)
    return event
  }

  func beginTransaction() { self.transaction += 1 }

  static func page<Item>(
    _ items: [Item], pageSize: Int, after: PageCursor?, created: (Item) -> Date, id: (Item) -> String
  ) -> Page<Item> {
    let ordered = items.map { (item: $0, micros: Self.microseconds(created($0)), id: id($0)) }
      .sorted { ($0.micros, $0.id) > ($1.micros, $1.id) }
      .filter { entry in after.map { (entry.micros, entry.id) < ($0.createTimeMicroseconds, $0.id) } ?? true }
    let page = Array(ordered.prefix(pageSize))
    let next =
      ordered.count > pageSize ? page.last.map { PageCursor(createTimeMicroseconds: $0.micros, id: $0.id) } : nil
    return Page(items: page.map(\.item), next: next)
  }

  // MARK: Idempotency keys

  func claim(_ request: IdempotencyRequest, lockFor: Duration) -> IdempotencyClaim {
    self.beginTransaction()
    let key = Key(merchant: request.merchant, key: request.key)
    guard var row = self.keys[key] else {
      let row = KeyRow(
        request: request, point: .started, payment: nil, refund: nil, lockedUntil: self.until(lockFor),
        created: self.now, token: 1,
        attempted: false, response: nil
      )
      self.keys[key] = row
      return .started(row.record)
    }
    guard row.request.method == request.method, row.request.fingerprint == request.fingerprint else { return .reused }
    if row.point == .finished, let response = row.response { return .replay(response) }
    if let lockedUntil = row.lockedUntil, lockedUntil > self.now { return .inUse }
    row.token += 1
    row.lockedUntil = self.until(lockFor)
    self.keys[key] = row
    return .resumed(row.record)
  }

  func finish(_ owner: KeyOwner, response: StoredResponse) throws {
    try self.fence(owner)
    let key = Key(merchant: owner.merchant, key: owner.key)
    self.keys[key]?.point = .finished
    self.keys[key]?.lockedUntil = nil
    self.keys[key]?.response = response
  }

  func release(_ owner: KeyOwner) throws {
    try self.fence(owner)
    self.keys[Key(merchant: owner.merchant, key: owner.key)] = nil
  }

  func extend(_ owner: KeyOwner, lockFor: Duration) -> Bool {
    guard (try? self.fence(owner)) != nil else { return false }
    self.keys[Key(merchant: owner.merchant, key: owner.key)]?.lockedUntil = self.until(lockFor)
    return true
  }

  func answer(merchant: MerchantID, key: String) -> StoredResponse? {
    guard let row = self.keys[Key(merchant: merchant, key: key)], row.point == .finished else { return nil }
    return row.response
  }

  func stale(methods: [String]?, limit: Int) -> [IdempotencyRecord] {
    let now = self.now
    return self.keys.values
      .filter { row in
        row.point != .finished && (row.lockedUntil.map { $0 <= now } ?? true)
          && (methods?.contains(row.request.method) ?? true)
      }
      .sorted { ($0.lockedUntil ?? .distantPast) < ($1.lockedUntil ?? .distantPast) }
      .prefix(limit)
      .map(\.record)
  }

  func reap(olderThan age: Duration) -> Int {
    let cutoff = self.now.addingTimeInterval(-max(Double(age.components.seconds), 24 * 3600))
    let old = self.keys.filter { $0.value.point == .finished && $0.value.created < cutoff }.map(\.key)
    old.forEach { self.keys[$0] = nil }
    return old.count
  }

  // MARK: Provider calls

  func begin(_ call: ProviderCall, owner: KeyOwner, lockFor: Duration) throws -> Int64 {
    try self.fence(owner)
    let key = Key(merchant: owner.merchant, key: owner.key)
    self.keys[key]?.attempted = true
    self.keys[key]?.lockedUntil = self.until(lockFor)
    self.lastRequestID += 1
    self.requests[self.lastRequestID] = Request(
      call: ProviderCall(
        merchant: call.merchant, payment: call.payment, refund: call.refund, operation: call.operation,
        providerKey: call.providerKey,
        outcome: .unknown, amountMinorUnits: call.amountMinorUnits
      ),
      finished: false
    )
    return self.lastRequestID
  }

  func end(_ call: ProviderCallEnd, owner: KeyOwner) {
    guard (try? self.fence(owner)) != nil, let request = self.requests[call.requestID], !request.finished else {
      return
    }
    self.requests[call.requestID] = Request(call: Self.ended(request.call, call.outcome), finished: true)
  }

  func latest(merchant: MerchantID, providerKey: String) -> ProviderCall? {
    self.requests.filter { $0.value.call.merchant == merchant && $0.value.call.providerKey == providerKey }.max {
      $0.key < $1.key
    }?.value.call
  }

  // MARK: Payments

  func insert(_ payment: PaymentRecord, step: IdempotencyStep<PaymentRecord>?) throws -> PaymentEvent {
    let response = try self.prepare(step, record: payment)
    guard self.payments[payment.id] == nil else { throw DuplicateRow(what: "payment \(payment.id)") }
    self.beginTransaction()
    self.payments[payment.id] = payment
    let event = self.appendEvent(
      merchant: payment.merchantID, payment: payment.id, refund: nil, type: .paymentCreated, from: nil,
      to: payment.ledger.status,
      amount: payment.ledger.amount.minorUnits
    )
    self.apply(step, response: response, payment: payment.id, refund: nil)
    return event
  }

  func payment(_ id: PaymentID, merchant: MerchantID) -> PaymentRecord? {
    self.payments[id].flatMap { $0.merchantID == merchant ? $0 : nil }
  }

  func update(
    _ id: PaymentID, merchant: MerchantID, step: IdempotencyStep<PaymentRecord>?,
    _ change: (inout PaymentRecord) throws -> Void
  ) throws -> (PaymentRecord, PaymentEvent?)? {
    if let step { try self.fence(step.owner) }
    guard let locked = self.payment(id, merchant: merchant) else { return nil }
    var record = locked
    try change(&record)
    let unchanged = record == locked
    if !unchanged { record.updateTime = self.stamp() }
    let response = try self.prepare(step, record: record)
    self.beginTransaction()
    var event: PaymentEvent?
    if !unchanged {
      self.payments[id] = record
      let (before, after) = (locked.ledger.status, record.ledger.status)
      if before != after {
        event = self.appendEvent(
          merchant: merchant, payment: id, refund: nil, type: .entering(after), from: before, to: after,
          amount: after == .succeeded ? record.ledger.capturedMinorUnits : nil
        )
      }
    }
    self.apply(step, response: response, payment: id, refund: nil)
    return (record, event)
  }

  func list(merchant: MerchantID, filter: PaymentFilter, pageSize: Int, after: PageCursor?) -> Page<PaymentRecord> {
    let matching = self.payments.values.filter { payment in
      payment.merchantID == merchant
        && (filter.statuses.isEmpty || filter.statuses.contains(payment.ledger.status))
        && (filter.customerReference.map { !$0.isEmpty && payment.customerReference == $0 } ?? true)
        && (filter.createdFrom.map { payment.createTime >= $0 } ?? true)
        && (filter.createdBefore.map { payment.createTime < $0 } ?? true)
    }
    return Self.page(Array(matching), pageSize: pageSize, after: after, created: \.createTime, id: \.id.rawValue)
  }

  /// How many times payment events were read, by anyone.
  public private(set) var eventReads = 0

  func events(merchant: MerchantID?, after position: EventPosition, limit: Int) -> [PaymentEvent] {
    self.eventReads += 1
    return Array(
      self.events.filter { (merchant == nil || $0.merchantID == merchant) && $0.position > position }.prefix(limit))
  }

  func currentPosition() -> EventPosition {
    EventPosition(transaction: self.transaction, id: Int64.max)
  }

  // MARK: Refunds

  func create(_ draft: RefundDraft, step: IdempotencyStep<RefundRecord>?) throws -> (RefundRecord, PaymentRecord)? {
    if let step { try self.fence(step.owner) }
    guard var payment = self.payment(draft.paymentID, merchant: draft.merchantID) else { return nil }
    let amount = try payment.ledger.reserveRefund(minorUnits: draft.amountMinorUnits)
    let refund = RefundRecord(
      id: draft.id, merchantID: draft.merchantID, paymentID: draft.paymentID, amount: amount, status: .pending,
      reason: draft.reason,
      failureMessage: nil, metadata: draft.metadata, providerRefundID: nil, createTime: self.stamp(),
      updateTime: self.lastStamp
    )
    let response = try self.prepare(step, record: refund)
    self.beginTransaction()
    payment.updateTime = self.lastStamp
    self.payments[payment.id] = payment
    self.refunds[refund.id] = refund
    _ = self.appendEvent(
      merchant: draft.merchantID, payment: draft.paymentID, refund: draft.id, type: .refundCreated, from: nil, to: nil,
      amount: amount.minorUnits)
    self.apply(step, response: response, payment: refund.paymentID, refund: refund.id)
    return (refund, payment)
  }

  func settle(
    _ id: RefundID, merchant: MerchantID, outcome: RefundOutcome?, step: IdempotencyStep<RefundRecord>?
  ) throws -> RefundRecord? {
    if let step { try self.fence(step.owner) }
    guard var refund = self.refund(id, merchant: merchant),
      var payment = self.payment(refund.paymentID, merchant: merchant)
    else { return nil }
    var type: PaymentEventType?
    var paymentChanged = false
    if refund.status == .pending, let outcome {
      switch outcome {
      case .succeeded(let providerID):
        refund.providerRefundID = providerID
        try refund.succeeded()
        type = .refundSucceeded
      case .pending(let providerID):
        refund.providerRefundID = providerID
      case .failed(let providerID, let message):
        refund.providerRefundID = providerID ?? refund.providerRefundID
        try refund.failed(message)
        payment.ledger.releaseRefund(refund.amount)
        payment.updateTime = self.stamp()
        paymentChanged = true
        type = .refundFailed
      }
      refund.updateTime = self.stamp()
    }
    let response = try self.prepare(step, record: refund)
    self.beginTransaction()
    if refund != self.refunds[id] { self.refunds[id] = refund }
    if paymentChanged { self.payments[payment.id] = payment }
    if let type {
      _ = self.appendEvent(
        merchant: merchant, payment: refund.paymentID, refund: id, type: type, from: nil, to: nil,
        amount: refund.amount.minorUnits)
    }
    self.apply(step, response: response, payment: refund.paymentID, refund: refund.id)
    return refund
  }

  func refund(_ id: RefundID, merchant: MerchantID) -> RefundRecord? {
    self.refunds[id].flatMap { $0.merchantID == merchant ? $0 : nil }
  }

  func listRefunds(merchant: MerchantID, payment: PaymentID?, pageSize: Int, after: PageCursor?) -> Page<RefundRecord> {
    let matching = self.refunds.values.filter {
      $0.merchantID == merchant && (payment.map { [refund = $0] in refund.paymentID == $0 } ?? true)
    }
    return Self.page(Array(matching), pageSize: pageSize, after: after, created: \.createTime, id: \.id.rawValue)
  }

  // MARK: Settlement

  func openKey(payment: PaymentID?, refund: RefundID?) -> Bool {
    self.keys.values.contains {
      $0.point != .finished && ((payment != nil && $0.payment == payment) || (refund != nil && $0.refund == refund))
    }
  }

  func due(objectID: String, updated: Date, quietFor: Duration) -> Int? {
    let quiet = self.now.addingTimeInterval(
      -(Double(quietFor.components.seconds) + Double(quietFor.components.attoseconds) / 1e18))
    guard updated < quiet else { return nil }
    guard let check = self.checks[objectID] else { return 0 }
    return !check.abandoned && check.next <= self.now ? check.checks : nil
  }

  func duePayments(quietFor: Duration, limit: Int) -> [(PaymentRecord, checks: Int)] {
    self.payments.values
      .filter {
        $0.ledger.status == .processing && $0.providerPaymentID != nil && !self.openKey(payment: $0.id, refund: nil)
      }
      .compactMap { payment in
        self.due(objectID: payment.id.rawValue, updated: payment.updateTime, quietFor: quietFor).map {
          (payment, checks: $0)
        }
      }
      .sorted { $0.0.updateTime < $1.0.updateTime }
      .prefix(limit)
      .map { $0 }
  }

  func dueRefunds(quietFor: Duration, limit: Int) -> [(RefundRecord, checks: Int)] {
    self.refunds.values
      .filter { $0.status == .pending && $0.providerRefundID != nil && !self.openKey(payment: nil, refund: $0.id) }
      .compactMap { refund in
        self.due(objectID: refund.id.rawValue, updated: refund.updateTime, quietFor: quietFor).map {
          (refund, checks: $0)
        }
      }
      .sorted { $0.0.updateTime < $1.0.updateTime }
      .prefix(limit)
      .map { $0 }
  }

  func postpone(objectID: String, checks: Int, next: Duration, abandon: Bool) {
    let abandoned = (self.checks[objectID]?.abandoned ?? false) || abandon
    self.checks[objectID] = Check(checks: checks, next: self.until(next), abandoned: abandoned)
  }

  func settled(objectID: String) {
    self.checks[objectID] = nil
  }

  func settlementBacklog() -> SettlementBacklog {
    let payments = self.payments.values.filter { $0.ledger.status == .processing }
    let refunds = self.refunds.values.filter { $0.status == .pending }
    let age: (Date?) -> Duration? = { [now = self.now] oldest in
      oldest.map { .milliseconds(Int64(max(0, now.timeIntervalSince($0)) * 1000)) }
    }
    return SettlementBacklog(
      payments: payments.count, refunds: refunds.count,
      oldestPaymentAge: age(payments.map(\.updateTime).min()), oldestRefundAge: age(refunds.map(\.updateTime).min()))
  }

  // MARK: Auth

  func ensureMerchant(id: String) { self.merchants.insert(id) }

  func insertClient(_ client: ClientRecord) throws {
    guard self.merchants.contains(client.merchantID) else { throw AuthStoreError.unknownMerchant }
    guard self.clients[client.clientID] == nil else { throw DuplicateRow(what: "client \(client.clientID)") }
    self.clients[client.clientID] = client
  }

  func client(id: String) -> ClientRecord? { self.clients[id] }

  func changeClient(_ id: String, _ change: (inout ClientRecord) -> Void) throws -> ClientRecord {
    guard var client = self.clients[id] else { throw AuthStoreError.unknownClient }
    let status = client.status
    change(&client)
    self.clients[id] = client
    if client.status != status { self.signals.send(.standing(.client(id))) }
    return client
  }

  /// Reads of the signing keys, and whether they fail (a database that is down).
  public private(set) var signingKeyReads = 0
  public private(set) var signingKeysUnavailable = false

  public func setSigningKeysUnavailable(_ unavailable: Bool) {
    self.signingKeysUnavailable = unavailable
  }

  func allSigningKeys() throws -> [SigningKeyRecord] {
    self.signingKeyReads += 1
    if self.signingKeysUnavailable { throw InMemoryUnavailable() }
    return self.signingKeys.sorted {
      ($0.state == .active ? 1 : 0, $0.createTime) > ($1.state == .active ? 1 : 0, $1.createTime)
    }
  }

  func insertFirstKey(_ key: SigningKeyRecord) -> SigningKeyRecord {
    if let active = self.signingKeys.first(where: { $0.state == .active }) { return active }
    self.signingKeys.append(key)
    return key
  }

  func rotate(to key: SigningKeyRecord) {
    for index in self.signingKeys.indices where self.signingKeys[index].state == .active {
      self.signingKeys[index].state = .retired
      self.signingKeys[index].retireTime = self.now
    }
    self.signingKeys.append(key)
  }

  func removeKey(id: String) -> Bool {
    let count = self.signingKeys.count
    self.signingKeys.removeAll { $0.keyID == id }
    return self.signingKeys.count < count
  }

  func revoke(tokenID: String, clientID: String, expireTime: Date) {
    if self.revocations[tokenID] == nil {
      self.revocations[tokenID] = (clientID, expireTime)
      self.signals.send(.standing(.token(tokenID)))
    }
  }

  func standing(clientID: String, tokenID: String) -> TokenStanding {
    TokenStanding(clientStatus: self.clients[clientID]?.status, revoked: self.revocations[tokenID] != nil)
  }

  func purgeExpiredRevocations() -> Int {
    let expired = self.revocations.filter { $0.value.expires < self.now }.map(\.key)
    expired.forEach { self.revocations[$0] = nil }
    return expired.count
  }

  /// A row that already exists (a primary key PostgreSQL would refuse).
  public struct DuplicateRow: Error, CustomStringConvertible {
    public let what: String
    public var description: String { "duplicate \(self.what)" }
  }
}

// MARK: - The ports

/// Payments, refunds, idempotency keys, provider calls and settlement checks in one
/// `InMemoryDatabase`, as TenderPostgres keeps them in one database.
public struct InMemoryStores: PaymentStore, ProviderCallLog, RefundStore, IdempotencyStore, SettlementStore {
  public let database: InMemoryDatabase

  public init(database: InMemoryDatabase) {
    self.database = database
  }

  public func claim(_ request: IdempotencyRequest, lockFor: Duration) async throws -> IdempotencyClaim {
    await self.database.claim(request, lockFor: lockFor)
  }
  public func finish(_ owner: KeyOwner, response: StoredResponse) async throws {
    try await self.database.finish(owner, response: response)
  }
  public func release(_ owner: KeyOwner) async throws { try await self.database.release(owner) }
  public func extend(_ owner: KeyOwner, lockFor: Duration) async throws -> Bool {
    await self.database.extend(owner, lockFor: lockFor)
  }
  public func answer(merchant: MerchantID, key: String) async throws -> StoredResponse? {
    await self.database.answer(merchant: merchant, key: key)
  }
  public func stale(methods: [String]?, limit: Int) async throws -> [IdempotencyRecord] {
    await self.database.stale(methods: methods, limit: limit)
  }
  public func reap(olderThan age: Duration) async throws -> Int { await self.database.reap(olderThan: age) }

  public func begin(_ call: ProviderCall, owner: KeyOwner, lockFor: Duration) async throws -> Int64 {
    try await self.database.begin(call, owner: owner, lockFor: lockFor)
  }
  public func end(_ call: ProviderCallEnd, owner: KeyOwner) async throws { await self.database.end(call, owner: owner) }
  public func latest(merchant: MerchantID, providerKey: String) async throws -> ProviderCall? {
    await self.database.latest(merchant: merchant, providerKey: providerKey)
  }

  public func insert(_ payment: PaymentRecord, step: IdempotencyStep<PaymentRecord>?) async throws -> PaymentEvent {
    try await self.database.insert(payment, step: step)
  }
  public func payment(_ id: PaymentID, merchant: MerchantID) async throws -> PaymentRecord? {
    await self.database.payment(id, merchant: merchant)
  }
  public func update(
    _ id: PaymentID, merchant: MerchantID, step: IdempotencyStep<PaymentRecord>?,
    _ change: @escaping @Sendable (inout PaymentRecord) throws -> Void
  ) async throws -> (PaymentRecord, PaymentEvent?)? {
    try await self.database.update(id, merchant: merchant, step: step, change)
  }
  public func list(
    merchant: MerchantID, filter: PaymentFilter, pageSize: Int, after: PageCursor?
  ) async throws -> Page<PaymentRecord> {
    await self.database.list(merchant: merchant, filter: filter, pageSize: pageSize, after: after)
  }
  public func events(merchant: MerchantID?, after position: EventPosition, limit: Int) async throws -> [PaymentEvent] {
    await self.database.events(merchant: merchant, after: position, limit: limit)
  }
  public func currentPosition() async throws -> EventPosition { await self.database.currentPosition() }

  public func create(
    _ draft: RefundDraft, step: IdempotencyStep<RefundRecord>?
  ) async throws -> (RefundRecord, PaymentRecord)? {
    try await self.database.create(draft, step: step)
  }
  public func settle(
    _ id: RefundID, merchant: MerchantID, outcome: RefundOutcome?, step: IdempotencyStep<RefundRecord>?
  ) async throws -> RefundRecord? {
    try await self.database.settle(id, merchant: merchant, outcome: outcome, step: step)
  }
  public func refund(_ id: RefundID, merchant: MerchantID) async throws -> RefundRecord? {
    await self.database.refund(id, merchant: merchant)
  }
  public func list(
    merchant: MerchantID, payment: PaymentID?, pageSize: Int, after: PageCursor?
  ) async throws -> Page<RefundRecord> {
    await self.database.listRefunds(merchant: merchant, payment: payment, pageSize: pageSize, after: after)
  }

  public func duePayments(quietFor: Duration, limit: Int) async throws -> [(PaymentRecord, checks: Int)] {
    await self.database.duePayments(quietFor: quietFor, limit: limit)
  }
  public func dueRefunds(quietFor: Duration, limit: Int) async throws -> [(RefundRecord, checks: Int)] {
    await self.database.dueRefunds(quietFor: quietFor, limit: limit)
  }
  public func postpone(objectID: String, checks: Int, next: Duration, abandon: Bool) async throws {
    await self.database.postpone(objectID: objectID, checks: checks, next: next, abandon: abandon)
  }
  public func settled(objectID: String) async throws { await self.database.settled(objectID: objectID) }
  public func backlog() async throws -> SettlementBacklog { await self.database.settlementBacklog() }
}

/// What an in-memory store throws while it is made unavailable.
public struct InMemoryUnavailable: Error {}

/// Merchants, clients, signing keys and revocations in an `InMemoryDatabase`.
public struct InMemoryAuthStore: AuthStore {
  public let database: InMemoryDatabase

  public init(database: InMemoryDatabase) {
    self.database = database
  }

  public func ensureMerchant(id: String, displayName: String) async throws {
    await self.database.ensureMerchant(id: id)
  }
  public func insertClient(_ client: ClientRecord) async throws { try await self.database.insertClient(client) }
  public func client(id: String) async throws -> ClientRecord? { await self.database.client(id: id) }
  public func replaceSecret(clientID: String, secretHash: String) async throws -> ClientRecord {
    let now = self.database.clock.now
    return try await self.database.changeClient(clientID) {
      $0.secretHash = secretHash
      $0.rotateTime = now
    }
  }
  public func setStatus(clientID: String, status: ClientRecord.Status) async throws -> ClientRecord {
    try await self.database.changeClient(clientID) { $0.status = status }
  }
  public func signingKeys() async throws -> [SigningKeyRecord] { try await self.database.allSigningKeys() }
  public func insertFirstKey(_ key: SigningKeyRecord) async throws -> SigningKeyRecord {
    await self.database.insertFirstKey(key)
  }
  public func rotate(to key: SigningKeyRecord) async throws { await self.database.rotate(to: key) }
  public func removeKey(id: String) async throws -> Bool { await self.database.removeKey(id: id) }
  public func revoke(tokenID: String, clientID: String, expireTime: Date, revokedBy: String) async throws {
    await self.database.revoke(tokenID: tokenID, clientID: clientID, expireTime: expireTime)
  }
  public func standing(clientID: String, tokenID: String) async throws -> TokenStanding {
    await self.database.standing(clientID: clientID, tokenID: tokenID)
  }
  public func purgeExpiredRevocations() async throws -> Int { await self.database.purgeExpiredRevocations() }
}

/// Token buckets in memory, on a `TestClock`: refill happens when the test moves the clock.
public final class InMemoryRateLimiter: RateLimiter {
  private let clock: TestClock
  private let buckets = Mutex<[String: (tokens: Double, at: Date)]>([:])

  public init(clock: TestClock) {
    self.clock = clock
  }

  public func acquire(key: String, policy: RateLimitPolicy, cost: Int) async throws -> RateLimitDecision {
    let now = self.clock.now
    return self.buckets.withLock { buckets in
      var (tokens, at) = buckets[key] ?? (Double(policy.capacity), now)
      tokens = min(Double(policy.capacity), tokens + max(0, now.timeIntervalSince(at)) * policy.refillPerSecond)
      guard tokens >= 1 else {
        buckets[key] = (tokens, now)
        let wait = (1 - tokens) / policy.refillPerSecond
        return .limited(retryAfter: .milliseconds(Int64((wait * 1000).rounded(.up))))
      }
      buckets[key] = (tokens - Double(cost), now)
      return .allowed(remaining: Int(tokens - Double(cost)))
    }
  }
}

extension InMemoryDatabase {
  /// The tables tests count rows of.
  public enum Table: Sendable {
    case payments, refunds, idempotencyKeys, paymentEvents, providerRequests
  }

  /// How many idempotency keys of `method` (`package.Service/Method`, or its end) there are.
  public func count(idempotencyKeysOf method: String) -> Int {
    self.keys.values.filter { $0.request.method.hasSuffix(method) }.count
  }

  /// Every payment, of every merchant.
  public func allPayments() -> [PaymentRecord] { Array(self.payments.values) }

  /// Every refund, of every merchant.
  public func allRefunds() -> [RefundRecord] { Array(self.refunds.values) }

  /// Every idempotency record, with its stored answer once finished.
  public func idempotencyRecords() -> [(IdempotencyRecord, StoredResponse?)] {
    self.keys.values.map { ($0.record, $0.response) }
  }

  /// Every unfinished key's lock runs out now, as if its owner had stalled past it.
  public func expireLocks() {
    let past = self.now.addingTimeInterval(-1)
    for (key, row) in self.keys where row.point != .finished { self.keys[key]?.lockedUntil = past }
  }

  /// The stored answers of finished keys, by key.
  public func storedAnswers() -> [String: StoredResponse] {
    Dictionary(uniqueKeysWithValues: self.keys.compactMap { key, row in row.response.map { (key.key, $0) } })
  }

  /// How many API clients exist, of every merchant.
  public func clientCount() -> Int { self.clients.count }

  /// How many rows `table` has.
  public func count(_ table: Table) -> Int {
    switch table {
    case .payments: return self.payments.count
    case .refunds: return self.refunds.count
    case .idempotencyKeys: return self.keys.count
    case .paymentEvents: return self.events.count
    case .providerRequests: return self.requests.count
    }
  }
}

/// Feed signals of an `InMemoryDatabase`; `interrupt()` drops every listener, as a lost
/// connection would.
public final class InMemoryFeedSignals: FeedSignals {
  private let listeners = Mutex<(next: Int, all: [Int: AsyncStream<FeedSignal>.Continuation])>((0, [:]))

  public init() {}

  public func listen(_ receive: @escaping @Sendable (FeedSignal) -> Void) async throws {
    let (signals, continuation) = AsyncStream.makeStream(of: FeedSignal.self)
    let id = self.listeners.withLock { listeners in
      listeners.next += 1
      listeners.all[listeners.next] = continuation
      return listeners.next
    }
    defer { _ = self.listeners.withLock { $0.all.removeValue(forKey: id) } }
    receive(.resynchronize)
    for await signal in signals { receive(signal) }
    try Task.checkCancellation()
    throw InMemoryFeedSignalsInterrupted()
  }

  func send(_ signal: FeedSignal) {
    for listener in self.listeners.withLock({ Array($0.all.values) }) { listener.yield(signal) }
  }

  /// Ends every listener's connection.
  public func interrupt() {
    for listener in self.listeners.withLock({ Array($0.all.values) }) { listener.finish() }
  }
}

struct InMemoryFeedSignalsInterrupted: Error {}
