import AsyncHTTPClient
import Foundation
public import Logging
import NIOCore
import NIOHTTP1
public import TenderCore

/// Settings of the Stripe connector.
public struct StripeConfiguration: Sendable {
  /// `https://api.stripe.com`, or the simulator's address.
  public var baseURL: String
  public var apiKey: Secret<String>
  /// Deadline of one HTTP attempt.
  public var requestTimeout: Duration
  /// Attempts per call: network errors, 409 (key in use) and 5xx are retried with the same key.
  public var maximumAttempts: Int
  public var initialBackoff: Duration

  public init(baseURL: String, apiKey: Secret<String>, requestTimeout: Duration = .seconds(10), maximumAttempts: Int = 3, initialBackoff: Duration = .milliseconds(200)) {
    self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
    self.apiKey = apiKey
    self.requestTimeout = requestTimeout
    self.maximumAttempts = maximumAttempts
    self.initialBackoff = initialBackoff
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
    self.client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: http)
  }

  /// Closes the connection pool; call once, when the connector is no longer used.
  public func shutdown() async throws {
    try await self.client.shutdown()
  }

  public func createPayment(_ request: ProviderPaymentRequest, idempotencyKey: String) async throws(ProviderError) -> ProviderPayment {
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

  public func capturePayment(providerPaymentID: String, amountMinorUnits: Int64, idempotencyKey: String) async throws(ProviderError) -> ProviderPayment {
    let (status, body) = try await self.post(
      "/v1/payment_intents/\(Self.pathComponent(providerPaymentID))/capture",
      form: [("amount_to_capture", String(amountMinorUnits))],
      idempotencyKey: idempotencyKey
    )
    return try Self.payment(status: status, body: body)
  }

  public func cancelPayment(providerPaymentID: String, idempotencyKey: String) async throws(ProviderError) -> ProviderPayment {
    let (status, body) = try await self.post("/v1/payment_intents/\(Self.pathComponent(providerPaymentID))/cancel", form: [], idempotencyKey: idempotencyKey)
    return try Self.payment(status: status, body: body)
  }

  public func createRefund(providerPaymentID: String, amountMinorUnits: Int64, idempotencyKey: String) async throws(ProviderError) -> ProviderRefund {
    let (status, body) = try await self.post(
      "/v1/refunds",
      form: [("payment_intent", providerPaymentID), ("amount", String(amountMinorUnits))],
      idempotencyKey: idempotencyKey
    )
    guard status == 200 else { throw Self.rejection(status: status, body: body) }
    guard let id = body["id"] as? String, let state = body["status"] as? String else {
      throw .outcomeUnknown("unreadable refund response")
    }
    switch state {
    case "succeeded": return ProviderRefund(providerRefundID: id, status: .succeeded)
    case "failed", "canceled": return ProviderRefund(providerRefundID: id, status: .failed((body["failure_reason"] as? String) ?? state))
    default: return ProviderRefund(providerRefundID: id, status: .pending)
    }
  }

  // MARK: HTTP

  private func post(_ path: String, form: [(String, String)], idempotencyKey: String) async throws(ProviderError) -> (Int, [String: Any]) {
    var request = HTTPClientRequest(url: self.configuration.baseURL + path)
    request.method = .POST
    request.headers.add(name: "Authorization", value: "Bearer \(self.configuration.apiKey.value)")
    request.headers.add(name: "Idempotency-Key", value: idempotencyKey)
    request.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
    let body = form.map { "\(Self.formEncode($0.0))=\(Self.formEncode($0.1))" }.joined(separator: "&")
    request.body = .bytes(ByteBuffer(string: body))

    var backoff = self.configuration.initialBackoff
    var lastProblem = ""
    var delivered = false
    for attempt in 1...max(1, self.configuration.maximumAttempts) {
      if attempt > 1 {
        try? await Task.sleep(for: backoff)
        backoff *= 2
      }
      do {
        let response = try await self.client.execute(request, timeout: .nanoseconds(Int64(self.configuration.requestTimeout.components.seconds) * 1_000_000_000 + self.configuration.requestTimeout.components.attoseconds / 1_000_000_000), logger: self.logger)
        let bytes = try await response.body.collect(upTo: 1 << 20)
        let status = Int(response.status.code)
        let json = (try? JSONSerialization.jsonObject(with: Data(bytes.readableBytesView))) as? [String: Any] ?? [:]
        delivered = true
        if status >= 500 || status == 409 {
          lastProblem = "HTTP \(status)"
          self.logger.warning("provider answered \(status); retrying with the same idempotency key", metadata: ["path": "\(path)", "attempt": "\(attempt)"])
          continue
        }
        return (status, json)
      } catch {
        if Self.isConnectFailure(error) {
          lastProblem = "cannot connect"
        } else {
          delivered = true
          lastProblem = "\(type(of: error))"
        }
        self.logger.warning("provider call failed; retrying with the same idempotency key", metadata: ["path": "\(path)", "attempt": "\(attempt)", "problem": "\(lastProblem)"])
      }
    }
    throw delivered ? .outcomeUnknown(lastProblem) : .unreachable(lastProblem)
  }

  /// Failures that happen before a request can have left: the server could not be connected to.
  static func isConnectFailure(_ error: any Error) -> Bool {
    if let error = error as? HTTPClientError, error == .connectTimeout { return true }
    let text = String(describing: error)
    return text.contains("connectTimeout") || text.contains("Connection refused") || text.contains("NIOConnectionError") || text.contains("connectionRefused")
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
    case "requires_capture": return ProviderPayment(providerPaymentID: id, status: .requiresCapture(capturableMinorUnits: capturable))
    case "succeeded": return ProviderPayment(providerPaymentID: id, status: .succeeded(capturedMinorUnits: received))
    case "processing": return ProviderPayment(providerPaymentID: id, status: .processing)
    case "canceled": return ProviderPayment(providerPaymentID: id, status: .canceled)
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
    return .rejected(status: status, code: (error["code"] as? String) ?? "unknown", message: (error["message"] as? String) ?? "HTTP \(status)")
  }

  /// Percent-encodes everything but RFC 3986's unreserved ASCII characters, byte by byte of the
  /// UTF-8 form (on every provider call, so kept cheap).
  static func formEncode(_ text: String) -> String {
    let hex = Array("0123456789ABCDEF".utf8)
    var bytes: [UInt8] = []
    bytes.reserveCapacity(text.utf8.count)
    for byte in text.utf8 {
      switch byte {
      case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
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
