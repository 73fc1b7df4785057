import Foundation
public import Logging
public import ServiceLifecycle
import Synchronization
public import TenderCore

/// One reader of the payment event feed per process, fanning out to every WatchPayments stream:
/// however many streams are open, the database sees one query per wake-up, not one per stream per
/// interval. It wakes on feed signals (PostgreSQL `NOTIFY`), and reads anyway every
/// `fallbackInterval` while signals are down and every `safetyInterval` while they are up. With
/// no subscriber it reads nothing.
///
/// A subscriber first reads its own backlog from the store up to the position the feed had when
/// it subscribed, then takes the feed's events; one that cannot keep up (`bufferLimit` messages
/// waiting) is dropped and catches up from the store again, so a slow reader costs its own
/// queries, never the others' memory.
public final class PaymentEventFeed: Service, Sendable {
  /// What a subscriber receives.
  public enum Message: Sendable {
    /// Events of the subscriber's merchant, in feed order, with the payment as read after them.
    case events([Delivered])
    /// The standing of the subscriber's token, client or merchant may have changed.
    case standingChanged
  }

  /// An event and its payment.
  public struct Delivered: Sendable {
    public let event: PaymentEvent
    public let payment: PaymentRecord?
  }

  /// Why a subscription ended.
  public enum End: Sendable, Equatable {
    /// Too many messages waited: read from the store again and subscribe anew.
    case fellBehind
    /// Ended by its own stream (cancelled, the token expired, the server is draining).
    case closed
    /// The feed stopped (the server is shutting down).
    case feedStopped
  }

  /// One stream's view of the feed.
  public final class Subscription: Sendable {
    /// Every event up to this position was readable when the subscription began; the feed
    /// delivers what comes after it.
    public let position: EventPosition
    public let messages: AsyncStream<Message>
    private let continuation: AsyncStream<Message>.Continuation
    private let ended = Mutex<End?>(nil)
    private let onEnd: @Sendable () -> Void

    init(
      position: EventPosition, messages: AsyncStream<Message>, continuation: AsyncStream<Message>.Continuation,
      onEnd: @escaping @Sendable () -> Void
    ) {
      self.position = position
      self.messages = messages
      self.continuation = continuation
      self.onEnd = onEnd
    }

    /// Why it ended; nil while open.
    public var end: End? { self.ended.withLock { $0 } }

    /// Ends the subscription (the first reason given is kept); its messages finish.
    public func end(_ reason: End) {
      let first = self.ended.withLock { ended in
        guard ended == nil else { return false }
        ended = reason
        return true
      }
      guard first else { return }
      self.continuation.finish()
      self.onEnd()
    }

    func deliver(_ message: Message) {
      if case .dropped = self.continuation.yield(message) { self.end(.fellBehind) }
    }
  }

  struct Subscriber {
    let merchant: MerchantID
    let clientID: String
    let tokenID: String
    let subscription: Subscription
  }

  struct State {
    /// The last position read; nil while nobody subscribes (nothing is read then).
    var position: EventPosition?
    /// Changes whenever `position` is set from outside the reader, so a read begun before is
    /// not applied.
    var epoch = 0
    var subscribers: [Int: Subscriber] = [:]
    var nextID = 0
    /// The newest transaction a signal named whose events the reader has not yet passed.
    var pendingTransaction: Int64 = 0
    var signalsUp = false
    var stopped = false
  }

  private let store: any PaymentStore
  private let signals: (any FeedSignals)?
  private let safetyInterval: Duration
  private let fallbackInterval: Duration
  private let bufferLimit: Int
  private let batchSize: Int
  private let logger: Logger
  private let state = Mutex(State())
  private let wakeUps: AsyncStream<Void>
  private let wake: AsyncStream<Void>.Continuation

  public init(
    store: any PaymentStore,
    signals: (any FeedSignals)?,
    safetyInterval: Duration = .seconds(5),
    fallbackInterval: Duration = .milliseconds(250),
    bufferLimit: Int = 256,
    batchSize: Int = 500,
    logger: Logger
  ) {
    self.store = store
    self.signals = signals
    self.safetyInterval = safetyInterval
    self.fallbackInterval = fallbackInterval
    self.bufferLimit = bufferLimit
    self.batchSize = batchSize
    self.logger = logger
    (self.wakeUps, self.wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
  }

  /// How many streams are subscribed (a stream that fell behind is not, until it subscribes again).
  public var subscriberCount: Int { self.state.withLock { $0.subscribers.count } }

  /// Subscribes a stream of `merchant` acting with the token `tokenID` of `clientID`.
  public func subscribe(merchant: MerchantID, clientID: String, tokenID: String) async throws -> Subscription {
    var position = self.state.withLock { $0.position }
    if position == nil {
      let now = try await self.store.currentPosition()
      position = self.state.withLock { state in
        if state.position == nil {
          state.position = now
          state.epoch += 1
        }
        return state.position
      }
    }
    let (messages, continuation) = AsyncStream.makeStream(
      of: Message.self, bufferingPolicy: .bufferingOldest(self.bufferLimit))
    let (subscription, stopped) = self.state.withLock { state in
      state.nextID += 1
      let id = state.nextID
      if state.position == nil {
        // Everyone left meanwhile: the feed resumes from this subscriber's position.
        state.position = position
        state.epoch += 1
      }
      // The position is read again under the lock: the reader may have moved on, and what it
      // delivered meanwhile did not reach this subscriber.
      let subscription = Subscription(
        position: state.position!, messages: messages, continuation: continuation,
        onEnd: { [weak self] in self?.remove(id) })
      if !state.stopped {
        state.subscribers[id] = Subscriber(
          merchant: merchant, clientID: clientID, tokenID: tokenID, subscription: subscription)
      }
      return (subscription, state.stopped)
    }
    if stopped { subscription.end(.feedStopped) }
    return subscription
  }

  private func remove(_ id: Int) {
    self.state.withLock { state in
      state.subscribers[id] = nil
      if state.subscribers.isEmpty {
        state.position = nil
        state.epoch += 1
      }
    }
  }

  public func run() async throws {
    await withTaskGroup(of: Void.self) { group in
      if let signals = self.signals {
        group.addTask { await self.listen(signals) }
      }
      group.addTask { await self.read() }
      // Streams end when the server drains; the feed stops with them.
      await withGracefulShutdownHandler {
        await group.next()
      } onGracefulShutdown: {
        self.stop()
      }
      self.stop()
      group.cancelAll()
    }
  }

  private func stop() {
    let subscribers = self.state.withLock { state in
      state.stopped = true
      return Array(state.subscribers.values)
    }
    for subscriber in subscribers { subscriber.subscription.end(.feedStopped) }
    self.wake.finish()
  }

  /// Listens for signals until the feed stops, again after a pause whenever the connection fails.
  private func listen(_ signals: any FeedSignals) async {
    var pause = Duration.milliseconds(100)
    while !Task.isCancelled && !self.state.withLock({ $0.stopped }) {
      do {
        try await signals.listen { signal in self.receive(signal) }
      } catch {
        if Task.isCancelled { break }
        self.logger.warning(
          "payment event signals lost; reading the feed every \(self.fallbackInterval) until they are back",
          metadata: ["error": "\(String(reflecting: error))"])
      }
      self.state.withLock { $0.signalsUp = false }
      self.wake.yield()
      try? await Task.sleep(for: pause)
      pause = min(pause * 2, .seconds(5))
    }
  }

  private func receive(_ signal: FeedSignal) {
    switch signal {
    case .events(let transaction):
      if let transaction {
        self.state.withLock { $0.pendingTransaction = max($0.pendingTransaction, transaction) }
      }
      self.wake.yield()
    case .standing(let change):
      let affected = self.state.withLock { state in
        state.subscribers.values.filter { subscriber in
          switch change {
          case .token(let id): subscriber.tokenID == id
          case .client(let id): subscriber.clientID == id
          case .merchant(let id): subscriber.merchant.rawValue == id
          }
        }
      }
      for subscriber in affected { subscriber.subscription.deliver(.standingChanged) }
    case .resynchronize:
      // Whatever was missed while not listening: every standing and the feed are read again.
      let everyone = self.state.withLock { state in
        state.signalsUp = true
        return Array(state.subscribers.values)
      }
      for subscriber in everyone { subscriber.subscription.deliver(.standingChanged) }
      self.wake.yield()
    }
  }

  /// The reader: after each wake-up (or interval), reads until caught up and fans out.
  private func read() async {
    var retry = Duration.milliseconds(10)
    var timer: Task<Void, Never>?
    defer { timer?.cancel() }
    self.wake.yield()
    for await _ in self.wakeUps {
      timer?.cancel()
      var waiting = false
      do {
        waiting = try await self.readUntilCaughtUp()
      } catch {
        if Task.isCancelled { return }
        self.logger.warning(
          "could not read the payment event feed", metadata: ["error": "\(String(reflecting: error))"])
      }
      let signalsUp = self.state.withLock { $0.signalsUp }
      // A signalled transaction not yet readable (an older one is still open): look again soon.
      let interval: Duration
      if waiting {
        interval = retry
        retry = min(retry * 2, self.fallbackInterval)
      } else {
        interval = signalsUp ? self.safetyInterval : self.fallbackInterval
        retry = .milliseconds(10)
      }
      timer = Task { [wake] in
        guard (try? await Task.sleep(for: interval)) != nil else { return }
        wake.yield()
      }
    }
  }

  /// Reads every readable event after the feed's position and delivers it; whether a signalled
  /// transaction is still to come.
  private func readUntilCaughtUp() async throws -> Bool {
    while true {
      let (start, epoch, pending) = self.state.withLock { ($0.position, $0.epoch, $0.pendingTransaction) }
      guard let start else { return false }
      let events = try await self.store.events(merchant: nil, after: start, limit: self.batchSize)
      var byMerchant: [MerchantID: [Delivered]] = [:]
      func fetch(_ merchants: Set<MerchantID>) async throws {
        for event in events where merchants.contains(event.merchantID) {
          let payment = try await self.store.payment(event.paymentID, merchant: event.merchantID)
          byMerchant[event.merchantID, default: []].append(Delivered(event: event, payment: payment))
        }
      }
      try await fetch(self.state.withLock { Set($0.subscribers.values.map(\.merchant)) })
      // Every subscriber present once the position moves gets this batch (it subscribed at or
      // before its start); one that came during the fetch needs its merchant's payments too.
      let subscribers: [Subscriber]? = self.state.withLock { state in
        guard state.epoch == epoch else { return nil }
        if let last = events.last { state.position = last.position }
        return Array(state.subscribers.values)
      }
      guard let subscribers else { continue }
      let missing = Set(subscribers.map(\.merchant)).subtracting(byMerchant.keys)
      do {
        if !missing.isEmpty { try await fetch(missing) }
      } catch {
        // The position has moved on without them: they read their merchant's events themselves.
        for subscriber in subscribers where missing.contains(subscriber.merchant) {
          subscriber.subscription.end(.fellBehind)
        }
      }
      for subscriber in subscribers {
        if let delivered = byMerchant[subscriber.merchant] { subscriber.subscription.deliver(.events(delivered)) }
      }
      if events.count == self.batchSize { continue }
      let reached = self.state.withLock { $0.position?.transaction ?? Int64.max }
      return pending > reached
    }
  }
}
