import AsyncHTTPClient
import Foundation
public import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
public import TenderCore

/// Settings of the Stripe connector.
public struct StripeConfiguration: Sendable {
  /// `https://api.stripe.com`, or the simulator's address.
  public var baseURL: String
  public var apiKey: Secret<String>
  /// Deadline of one HTTP attempt.
  public var requestTimeout: Duration
  /// Attempts per call: connection failures, 409 (key in use), 429 and 5xx are retried with the same key.
  public var maximumAttempts: Int
  /// Exponential backoff with full jitter between attempts: a random wait up to
  /// `initialBackoff × 2^(n−1)`, never more than `maximumBackoff`; a 429's Retry-After is
  /// honoured up to `maximumBackoff` too.
  public var initialBackoff: Duration
  public var maximumBackoff: Duration
  /// Connections to the API kept open at most. Over HTTP/1.1 each carries one call at a time, so
  /// this many calls can be at the provider at once; the others wait for a connection (their
  /// attempt's deadline running).
  public var maximumConnections: Int

  public init(
    baseURL: String, apiKey: Secret<String>, requestTimeout: Duration = .seconds(10), maximumAttempts: Int = 3,
    initialBackoff: Duration = .milliseconds(200), maximumBackoff: Duration = .seconds(2), maximumConnections: Int = 64
  ) {
    self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
    self.apiKey = apiKey
    self.requestTimeout = requestTimeout
    self.maximumAttempts = max(1, maximumAttempts)
    self.initialBackoff = initialBackoff
    self.maximumBackoff = max(initialBackoff, maximumBackoff)
    self.maximumConnections = max(1, maximumConnections)
  }

  /// The longest one call can take, every attempt and wait included: an owner's lock on its
  /// idempotency key must outlast it.
  public var budget: Duration {
    self.requestTimeout * self.maximumAttempts + self.maximumBackoff * (self.maximumAttempts - 1)
  }
}

/// `PaymentProvider` over Stripe's HTTP API: PaymentIntents (created and confirmed at once),
/// capture, cancel, refunds. Form-encoded requests, the caller's key as `Idempotency-Key`;
/// network errors, 409 and 5xx are retried with backoff (safe: same key), 4xx are not.
public final class StripeConnector: PaymentProvider {
  private let configuration: StripeConfiguration
  private let client: HTTPClient
  private let logger: Logger

  public init(configuration: StripeConfiguration, logger: Logger) {
    self.configuration = configuration
    self.logger = logger
    var http = HTTPClient.Configuration()
    http.timeout = .init(connect: .seconds(2))
    // A connection that cannot be made fails the attempt at once, with the connect error, so the
    // connector knows for certain that this attempt never left (and retries it itself).
    http.connectionPool.retryConnectionEstablishment = false
    http.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = configuration.maximumConnections
    self.client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: http)
  }

  /// Closes the connection pool; call once, when the connector is no longer used.
  public func shutdown() async throws {
    try await self.client.shutdown()
  }

  public func createPayment(
    _ request: ProviderPaymentRequest, idempotencyKey: String
  ) async throws(ProviderError) -> ProviderPayment {
    let (status, body) = try await self.post(
      "/v1/payment_intents",
      form: [
        ("amount", String(request.amount.minorUnits)),
        ("currency", request.amount.currency.code.lowercased()),
        ("payment_method", request.paymentMethod),
        ("capture_method", request.captureMethod.rawValue),
        ("confirm", "true"),
        ("metadata[tender_payment_id]", request.paymentID.rawValue),
      ],
      idempotencyKey: idempotencyKey
    )
    return try Self.payment(status: status, body: body)
  }

  public func capturePayment(
    providerPaymentID: String, amountMinorUnits: Int64, idempotencyKey: String
  ) async throws(ProviderError) -> ProviderPayment {
    let (status, body) = try await self.post(
      "/v1/payment_intents/\(Self.pathComponent(providerPaymentID))/capture",
      form: [("amount_to_capture", String(amountMinorUnits))],
      idempotencyKey: idempotencyKey
    )
    return try Self.payment(status: status, body: body)
  }

  public func cancelPayment(
    providerPaymentID: String, idempotencyKey: String
  ) async throws(ProviderError) -> ProviderPayment {
    let (status, body) = try await self.post(
      "/v1/payment_intents/\(Self.pathComponent(providerPaymentID))/cancel", form: [], idempotencyKey: idempotencyKey)
    return try Self.payment(status: status, body: body)
  }

  public func createRefund(
    providerPaymentID: String, amountMinorUnits: Int64, idempotencyKey: String
  ) async throws(ProviderError) -> ProviderRefund {
    let (status, body) = try await self.post(
      "/v1/refunds",
      form: [("payment_intent", providerPaymentID), ("amount", String(amountMinorUnits))],
      idempotencyKey: idempotencyKey
    )
    return try Self.refund(status: status, body: body)
  }

  public func retrievePayment(providerPaymentID: String) async throws(ProviderError) -> ProviderPayment {
    let (status, body) = try await self.send(
      .GET, "/v1/payment_intents/\(Self.pathComponent(providerPaymentID))", form: [], idempotencyKey: nil)
    return try Self.payment(status: status, body: body)
  }

  public func retrieveRefund(providerRefundID: String) async throws(ProviderError) -> ProviderRefund {
    let (status, body) = try await self.send(
      .GET, "/v1/refunds/\(Self.pathComponent(providerRefundID))", form: [], idempotencyKey: nil)
    return try Self.refund(status: status, body: body)
  }

  static func refund(status: Int, body: [String: Any]) throws(ProviderError) -> ProviderRefund {
    guard status == 200 else { throw Self.rejection(status: status, body: body) }
    guard let id = body["id"] as? String, let state = body["status"] as? String else {
      throw .outcomeUnknown("unreadable refund response")
    }
    switch state {
    case "succeeded": return ProviderRefund(providerRefundID: id, status: .succeeded)
    case "failed", "canceled":
      return ProviderRefund(providerRefundID: id, status: .failed((body["failure_reason"] as? String) ?? state))
    default: return ProviderRefund(providerRefundID: id, status: .pending)
    }
  }

  // MARK: HTTP

  private func post(
    _ path: String, form: [(String, String)], idempotencyKey: String
  ) async throws(ProviderError) -> (Int, [String: Any]) {
    try await self.send(.POST, path, form: form, idempotencyKey: idempotencyKey)
  }

  /// One call: up to `maximumAttempts` attempts within the budget, the same idempotency key on
  /// each. The call fails `unreachable` only when no attempt can have been acted on (no
  /// connection, or 429 each time); once any attempt may have been, `outcomeUnknown`.
  private func send(
    _ method: HTTPMethod, _ path: String, form: [(String, String)], idempotencyKey: String?
  ) async throws(ProviderError) -> (Int, [String: Any]) {
    var request = HTTPClientRequest(url: self.configuration.baseURL + path)
    request.method = method
    request.headers.add(name: "Authorization", value: "Bearer \(self.configuration.apiKey.value)")
    if let idempotencyKey { request.headers.add(name: "Idempotency-Key", value: idempotencyKey) }
    if method == .POST {
      request.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
      let body = form.map { "\(Self.formEncode($0.0))=\(Self.formEncode($0.1))" }.joined(separator: "&")
      request.body = .bytes(ByteBuffer(string: body))
    }

    var lastProblem = ""
    var delivered = false
    var retryAfter: Duration?
    let timeout = TimeAmount.nanoseconds(
      self.configuration.requestTimeout.components.seconds * 1_000_000_000 + self.configuration.requestTimeout
        .components.attoseconds / 1_000_000_000
    )
    for attempt in 1...self.configuration.maximumAttempts {
      if attempt > 1 {
        guard let wait = Self.backoff(attempt: attempt - 1, retryAfter: retryAfter, configuration: self.configuration)
        else {
          // The provider asked for a longer pause than the budget allows.
          break
        }
        try? await Task.sleep(for: wait)
      }
      retryAfter = nil
      do {
        let response = try await self.client.execute(request, timeout: timeout, logger: self.logger)
        let bytes = try await response.body.collect(upTo: 1 << 20)
        let status = Int(response.status.code)
        let json = (try? JSONSerialization.jsonObject(with: Data(bytes.readableBytesView))) as? [String: Any] ?? [:]
        switch Self.classify(status: status) {
        case .answer:
          return (status, json)
        case .notProcessed:
          // Rate limited: the provider did nothing with this attempt.
          lastProblem = "HTTP \(status)"
          retryAfter = response.headers.first(name: "Retry-After").flatMap(Self.retryAfter)
        case .unknown:
          delivered = true
          lastProblem = "HTTP \(status)"
          retryAfter = response.headers.first(name: "Retry-After").flatMap(Self.retryAfter)
        }
        self.logger.warning(
          "provider answered \(status); retrying with the same idempotency key",
          metadata: ["path": "\(path)", "attempt": "\(attempt)"])
      } catch {
        if Self.isConnectFailure(error) {
          lastProblem = "cannot connect"
        } else {
          delivered = true
          lastProblem = "\(type(of: error))"
        }
        self.logger.warning(
          "provider call failed; retrying with the same idempotency key",
          metadata: ["path": "\(path)", "attempt": "\(attempt)", "problem": "\(lastProblem)"])
      }
    }
    throw delivered ? .outcomeUnknown(lastProblem) : .unreachable(lastProblem)
  }

  enum StatusClass: Equatable {
    /// An answer to act on (2xx, a decline, a refusal of the request).
    case answer
    /// Rate limited (429): not processed; retried after Retry-After.
    case notProcessed
    /// 5xx, or 409 (the key is in use by an earlier attempt): may have been processed; retried
    /// (after Retry-After when the provider sends one).
    case unknown
  }

  static func classify(status: Int) -> StatusClass {
    if status == 429 { return .notProcessed }
    if status >= 500 || status == 409 { return .unknown }
    return .answer
  }

  /// The wait before retry `retry` (1 for the first): the provider's Retry-After when it gave one
  /// (nil when that is longer than the maximum backoff: the call gives up), else a full-jitter
  /// exponential backoff.
  static func backoff(
    attempt retry: Int, retryAfter: Duration?, configuration: StripeConfiguration,
    random: Double = Double.random(in: 0...1)
  ) -> Duration? {
    if let retryAfter {
      return retryAfter <= configuration.maximumBackoff ? retryAfter : nil
    }
    let ceiling = Backoff.doubling(configuration.initialBackoff, attempt: retry, cap: configuration.maximumBackoff)
    return ceiling * random
  }

  /// Retry-After as Stripe and most providers send it: whole seconds.
  static func retryAfter(_ text: String) -> Duration? {
    guard let seconds = Double(text.trimmingCharacters(in: .whitespaces)), seconds >= 0, seconds.isFinite else {
      return nil
    }
    return .milliseconds(Int64(seconds * 1000))
  }

  /// Failures that happen before a request can have left: no connection could be made. Only
  /// connect errors qualify; anything after the connection was made may have been received.
  static func isConnectFailure(_ error: any Error) -> Bool {
    if error is NIOConnectionError { return true }
    if let error = error as? HTTPClientError, error == .connectTimeout { return true }
    if let error = error as? ChannelError, case .connectTimeout = error { return true }
    if let error = error as? IOError,
      [ECONNREFUSED, ENETUNREACH, EHOSTUNREACH, EADDRNOTAVAIL].contains(error.errnoCode)
    {
      return true
    }
    return false
  }

  // MARK: Decoding

  static func payment(status: Int, body: [String: Any]) throws(ProviderError) -> ProviderPayment {
    if status == 402, let error = body["error"] as? [String: Any] {
      guard let intent = error["payment_intent"] as? [String: Any], let id = intent["id"] as? String else {
        throw .outcomeUnknown("decline without a payment intent")
      }
      return ProviderPayment(providerPaymentID: id, status: .failed(Self.failureReason(error)))
    }
    guard status == 200 else { throw self.rejection(status: status, body: body) }
    guard let id = body["id"] as? String, let state = body["status"] as? String else {
      throw .outcomeUnknown("unreadable payment intent")
    }
    let capturable = (body["amount_capturable"] as? NSNumber)?.int64Value ?? 0
    let received = (body["amount_received"] as? NSNumber)?.int64Value ?? 0
    switch state {
    case "requires_capture":
      return ProviderPayment(providerPaymentID: id, status: .requiresCapture(capturableMinorUnits: capturable))
    case "succeeded": return ProviderPayment(providerPaymentID: id, status: .succeeded(capturedMinorUnits: received))
    case "processing": return ProviderPayment(providerPaymentID: id, status: .processing)
    case "canceled": return ProviderPayment(providerPaymentID: id, status: .canceled)
    case "requires_action", "requires_confirmation":
      // Tender confirms server-side with a saved payment method and has no way to bring the
      // customer in (3-D Secure): the payment cannot complete and nothing is taken.
      return ProviderPayment(providerPaymentID: id, status: .failed(.cardDeclined))
    case "requires_payment_method":
      let error = body["last_payment_error"] as? [String: Any] ?? [:]
      return ProviderPayment(providerPaymentID: id, status: .failed(Self.failureReason(error)))
    default:
      throw .outcomeUnknown("payment intent in state \(state)")
    }
  }

  static func failureReason(_ error: [String: Any]) -> FailureReason {
    switch (error["decline_code"] as? String) ?? (error["code"] as? String) {
    case "insufficient_funds": return .insufficientFunds
    case "expired_card": return .expiredCard
    case "fraudulent", "stolen_card", "lost_card": return .fraudSuspected
    default: return .cardDeclined
    }
  }

  static func rejection(status: Int, body: [String: Any]) -> ProviderError {
    let error = body["error"] as? [String: Any] ?? [:]
    return .rejected(
      status: status, code: (error["code"] as? String) ?? "unknown",
      message: (error["message"] as? String) ?? "HTTP \(status)")
  }

  /// Percent-encodes everything but RFC 3986's unreserved ASCII characters, byte by byte of the
  /// UTF-8 form (on every provider call, so kept cheap).
  static func formEncode(_ text: String) -> String {
    let hex = Array("0123456789ABCDEF".utf8)
    var bytes: [UInt8] = []
    bytes.reserveCapacity(text.utf8.count)
    for byte in text.utf8 {
      switch byte {
      case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
        UInt8(ascii: "0")...UInt8(ascii: "9"),
        UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
        bytes.append(byte)
      default:
        bytes += [UInt8(ascii: "%"), hex[Int(byte >> 4)], hex[Int(byte & 0x0F)]]
      }
    }
    return String(decoding: bytes, as: UTF8.self)
  }

  static func pathComponent(_ text: String) -> String {
    self.formEncode(text)
  }
}
