import Foundation
import HTTPTypes
import Hummingbird

/// Request handling of the simulator: authentication, idempotency, then the operation.
struct SimulatedAPI: Sendable {
  enum Operation: Sendable {
    case createIntent
    case capture(String)
    case cancel(String)
    case retrieve(String)
    case createRefund
    case retrieveRefund(String)

    var faultOperation: SimulatedFault.Operation {
      switch self {
      case .createIntent: return .createPayment
      case .capture: return .capture
      case .cancel: return .cancel
      case .retrieve, .retrieveRefund: return .retrieve
      case .createRefund: return .refund
      }
    }

    var isWrite: Bool {
      switch self {
      case .retrieve, .retrieveRefund: return false
      default: return true
      }
    }
  }

  let state: SimulatorState
  let apiKey: String
  let slowDelay: Duration
  /// How long asynchronous payment methods take to finish.
  let asyncDelay: Duration
  /// Refuses connections for a while (the simulator's gate).
  let refuse: @Sendable (Duration) async -> Void
  /// Where events go.
  let webhooks: WebhookSender
  static let idempotencyKeyField = HTTPField.Name("Idempotency-Key")!
  static let replayedField = HTTPField.Name("Idempotent-Replayed")!
  static let retryAfterField = HTTPField.Name("Retry-After")!

  func handle(_ request: Request, path: String, operation: Operation) async throws -> Response {
    let method = request.method.rawValue
    let key = request.headers[Self.idempotencyKeyField]
    guard request.headers[.authorization] == "Bearer \(self.apiKey)" else {
      await self.state.record(
        LoggedRequest(method: method, path: path, idempotencyKey: key, status: 401, outcome: "unauthorized"))
      return Self.response(
        Self.error(401, type: "invalid_request_error", code: "api_key_invalid", message: "Invalid API Key provided"))
    }
    let body = try await request.body.collect(upTo: 1 << 20)
    let form = Self.parseForm(String(buffer: body))

    // An armed fault for this kind of request and payment method.
    let fault = await self.state.takeFault(
      operation: operation.faultOperation, paymentMethod: await self.paymentMethod(of: operation, form: form))
    if let fault {
      switch fault.kind {
      case .answer:
        let status = fault.status ?? 500
        await self.state.record(
          LoggedRequest(
            method: method, path: path, idempotencyKey: key, status: status, outcome: "fault", fault: fault.label))
        var response = Self.response(
          Self.error(
            status, type: status == 429 ? "rate_limit_error" : "api_error",
            code: status == 429 ? "rate_limit" : "internal_error", message: "Simulated fault.")
        )
        if let seconds = fault.retryAfterSeconds { response.headers[Self.retryAfterField] = String(seconds) }
        return response
      case .stall, .acceptThenDrop:
        break
      }
    }

    let stall = fault?.kind == .stall ? Duration.milliseconds(Int64((fault?.stallSeconds ?? 1) * 1000)) : nil
    let (answer, outcome, replayed) = await self.answer(
      operation, method: method, path: path, key: key, form: form, stall: stall)
    await self.state.record(
      LoggedRequest(
        method: method, path: path, idempotencyKey: key, status: answer.status, outcome: outcome, fault: fault?.label))
    if let seconds = fault?.thenRefuseSeconds {
      await self.refuse(.milliseconds(Int64(seconds * 1000)))
    }
    if fault?.kind == .acceptThenDrop {
      // The work is done and kept under the key; the caller never hears of it.
      return Response(
        status: .init(code: answer.status), headers: [.contentType: "application/json"],
        body: ResponseBody(contentLength: answer.body.count) { _ in throw ConnectionDropped() }
      )
    }
    return Self.response(answer, replayed: replayed)
  }

  struct ConnectionDropped: Error {}

  /// The payment method a request concerns, for matching faults.
  private func paymentMethod(of operation: Operation, form: [String: String]) async -> String? {
    switch operation {
    case .createIntent: return form["payment_method"]
    case .capture(let id), .cancel(let id), .retrieve(let id): return await self.state.intent(id)?.paymentMethod
    case .createRefund: return await form["payment_intent"].asyncFlatMap { await self.state.intent($0)?.paymentMethod }
    case .retrieveRefund(let id):
      guard let refund = await self.state.refund(id) else { return nil }
      return await self.state.intent(refund.paymentIntent)?.paymentMethod
    }
  }

  /// Idempotency as Stripe does it, then the operation: the answer, the log's outcome, and
  /// whether it was replayed.
  /// A stall holds the request after its key is claimed, as a provider busy with it would: a
  /// concurrent request with the key meanwhile gets 409.
  private func answer(
    _ operation: Operation, method: String, path: String, key: String?, form: [String: String], stall: Duration?
  ) async -> (SimulatorResponse, String, Bool) {
    // Reads ignore idempotency keys.
    guard let key, operation.isWrite else {
      if let stall { await self.state.hold(for: stall) }
      let (response, outcome) = await self.perform(operation, form: form, key: key)
      return (response, outcome, false)
    }
    let fingerprint =
      method + " " + path + "?" + form.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: "&")
    switch await self.state.claim(key: key, fingerprint: fingerprint) {
    case .replay(let stored):
      return (stored, "replayed", true)
    case .mismatch:
      return (
        Self.error(
          400, type: "idempotency_error", code: "idempotency_key_reused",
          message: "Keys for idempotent requests can only be used with the same parameters they were first used with."),
        "idempotency_mismatch", false
      )
    case .inUse:
      return (
        Self.error(
          409, type: "idempotency_error", code: "idempotency_key_in_use",
          message: "There is currently another in-progress request using this Idempotent Key."),
        "idempotency_in_use", false
      )
    case .proceed:
      if let stall { await self.state.hold(for: stall) }
      let (response, outcome) = await self.perform(operation, form: form, key: key)
      await self.state.finish(key: key, fingerprint: fingerprint, response: response)
      return (response, outcome, false)
    }
  }

  /// Finishes asynchronous payments and refunds that are due, and tells the webhook endpoint.
  func settle() async {
    let (intents, refunds) = await self.state.settleAsynchronous(after: self.asyncDelay)
    for intent in intents {
      self.webhooks.send(
        type: intent.status == "succeeded" ? "payment_intent.succeeded" : "payment_intent.amount_capturable_updated",
        object: Self.json(intent))
    }
    for refund in refunds {
      await self.announce(refund)
    }
  }

  /// The events of a refund's state.
  func announce(_ refund: SimulatorState.Refund) async {
    guard let intent = await self.state.intent(refund.paymentIntent) else { return }
    let object = Self.json(refund, currency: intent.currency)
    switch refund.status {
    case "succeeded":
      self.webhooks.send(type: "refund.updated", object: object)
      self.webhooks.send(
        type: "charge.refunded",
        object: [
          "id": "ch_" + intent.id.dropFirst(3), "object": "charge", "payment_intent": intent.id,
          "refunds": ["object": "list", "data": [object]],
        ]
      )
    case "failed": self.webhooks.send(type: "refund.failed", object: object)
    default: self.webhooks.send(type: "refund.created", object: object)
    }
  }

  private func perform(
    _ operation: Operation, form: [String: String], key: String?
  ) async -> (SimulatorResponse, String) {
    await self.settle()
    switch operation {
    case .createIntent: return await self.createIntent(form, key: key)
    case .capture(let id): return await self.capture(id, form)
    case .cancel(let id): return await self.cancel(id)
    case .retrieve(let id):
      guard let intent = await self.state.intent(id) else { return (Self.missing("payment_intent", id), "missing") }
      return (Self.ok(Self.json(intent)), "retrieved")
    case .createRefund: return await self.createRefund(form)
    case .retrieveRefund(let id):
      guard let refund = await self.state.refund(id), let intent = await self.state.intent(refund.paymentIntent) else {
        return (Self.missing("refund", id), "missing")
      }
      return (Self.ok(Self.json(refund, currency: intent.currency)), "retrieved")
    }
  }

  private func createIntent(_ form: [String: String], key: String?) async -> (SimulatorResponse, String) {
    guard let amountText = form["amount"], let amount = Int64(amountText), amount > 0 else {
      return (Self.invalid("amount", "Invalid positive integer"), "invalid")
    }
    guard let currency = form["currency"], currency.count == 3, currency == currency.lowercased() else {
      return (Self.invalid("currency", "Invalid currency"), "invalid")
    }
    guard let paymentMethod = form["payment_method"], !paymentMethod.isEmpty else {
      return (Self.invalid("payment_method", "Missing required param: payment_method."), "invalid")
    }
    let captureMethod = form["capture_method"] ?? "automatic"
    guard ["automatic", "manual"].contains(captureMethod) else {
      return (Self.invalid("capture_method", "Invalid capture_method"), "invalid")
    }
    guard form["confirm"] == "true" else {
      return (Self.invalid("confirm", "Tender's simulator only confirms at creation"), "invalid")
    }
    var metadata: [String: String] = [:]
    for (name, value) in form where name.hasPrefix("metadata[") && name.hasSuffix("]") {
      metadata[String(name.dropFirst(9).dropLast())] = value
    }

    switch paymentMethod {
    case "pm_card_flaky":
      if let key, await self.state.firstFlakyAttempt(key: key) {
        return (
          Self.error(500, type: "api_error", code: "internal_error", message: "An unexpected error occurred."),
          "server_error"
        )
      }
    case "pm_card_slow":
      try? await Task.sleep(for: self.slowDelay)
    default:
      break
    }

    var intent = SimulatorState.Intent(
      id: await self.state.nextID("pi"), amount: amount, currency: currency, captureMethod: captureMethod,
      paymentMethod: paymentMethod, metadata: metadata, status: "requires_payment_method",
      amountCapturable: 0, amountReceived: 0, lastError: nil
    )
    let declines = [
      "pm_card_chargeDeclined": "generic_decline",
      "pm_card_chargeDeclinedInsufficientFunds": "insufficient_funds",
      "pm_card_chargeDeclinedExpiredCard": "expired_card",
    ]
    if let decline = declines[paymentMethod] {
      let code = decline == "expired_card" ? "expired_card" : "card_declined"
      intent.lastError = [
        "type": "card_error", "code": code, "decline_code": decline, "message": "Your card was declined.",
      ]
      await self.state.store(intent)
      self.webhooks.send(type: "payment_intent.payment_failed", object: Self.json(intent))
      var error: [String: Any] = intent.lastError ?? [:]
      error["payment_intent"] = Self.json(intent)
      return (SimulatorResponse(status: 402, body: Self.encode(["error": error])), "declined")
    }
    if paymentMethod == "pm_card_authenticationRequired" {
      // The card needs 3-D Secure, which a server-side confirmation cannot give.
      intent.status = "requires_action"
    } else if paymentMethod == "pm_card_async" || paymentMethod == "pm_card_asyncStuck" {
      intent.status = "processing"
    } else if captureMethod == "manual" {
      intent.status = "requires_capture"
      intent.amountCapturable = amount
    } else {
      intent.status = "succeeded"
      intent.amountReceived = amount
    }
    await self.state.store(intent)
    let events = [
      "processing": "payment_intent.processing", "requires_capture": "payment_intent.amount_capturable_updated",
      "succeeded": "payment_intent.succeeded", "requires_action": "payment_intent.requires_action",
    ]
    if let type = events[intent.status] { self.webhooks.send(type: type, object: Self.json(intent)) }
    return (Self.ok(Self.json(intent)), "created")
  }

  /// What a capture or cancel found, decided in one step of the state.
  enum Transition: Sendable {
    case done(SimulatorState.Intent)
    case refused(status: String)
    case amountTooLarge
  }

  private func capture(_ id: String, _ form: [String: String]) async -> (SimulatorResponse, String) {
    let requested = form["amount_to_capture"].flatMap { Int64($0) }
    let transition = await self.state.modify(id) { intent -> Transition in
      guard intent.status == "requires_capture" else { return .refused(status: intent.status) }
      let amount = requested ?? intent.amountCapturable
      guard amount > 0, amount <= intent.amountCapturable else { return .amountTooLarge }
      intent.status = "succeeded"
      intent.amountReceived = amount
      intent.amountCapturable = 0
      return .done(intent)
    }
    return self.respond(
      transition, id: id, refusal: { "This PaymentIntent could not be captured because it has a status of \($0)." },
      event: "payment_intent.succeeded", outcome: "captured")
  }

  private func cancel(_ id: String) async -> (SimulatorResponse, String) {
    let transition = await self.state.modify(id) { intent -> Transition in
      guard ["requires_capture", "requires_payment_method", "processing"].contains(intent.status) else {
        return .refused(status: intent.status)
      }
      intent.status = "canceled"
      intent.amountCapturable = 0
      return .done(intent)
    }
    return self.respond(
      transition, id: id, refusal: { "You cannot cancel this PaymentIntent because it has a status of \($0)." },
      event: "payment_intent.canceled", outcome: "canceled")
  }

  /// The answer to a capture or cancel: the intent and its event, or why not.
  private func respond(
    _ transition: Transition?, id: String, refusal: (String) -> String, event: String, outcome: String
  ) -> (SimulatorResponse, String) {
    switch transition {
    case nil:
      return (Self.missing("payment_intent", id), "missing")
    case .refused(let status):
      return (
        Self.error(
          400, type: "invalid_request_error", code: "payment_intent_unexpected_state", message: refusal(status)),
        "refused"
      )
    case .amountTooLarge:
      return (Self.invalid("amount_to_capture", "amount_to_capture is greater than the capturable amount"), "invalid")
    case .done(let updated):
      self.webhooks.send(type: event, object: Self.json(updated))
      return (Self.ok(Self.json(updated)), outcome)
    }
  }

  private func createRefund(_ form: [String: String]) async -> (SimulatorResponse, String) {
    guard let id = form["payment_intent"], let intent = await self.state.intent(id) else {
      return (Self.missing("payment_intent", form["payment_intent"] ?? ""), "missing")
    }
    if intent.paymentMethod == "pm_card_refundSlow" { try? await Task.sleep(for: self.slowDelay) }
    // Checked against what is left and recorded in one step: concurrent refunds of one charge
    // never add up to more than it.
    switch await self.state.refund(paymentIntent: id, amount: form["amount"].flatMap { Int64($0) }) {
    case .notCaptured:
      return (
        Self.error(
          400, type: "invalid_request_error", code: "charge_not_refundable",
          message: "This PaymentIntent has no captured charge to refund."), "refused"
      )
    case .tooLarge:
      return (
        Self.error(
          400, type: "invalid_request_error", code: "amount_too_large",
          message: "Refund amount is greater than the unrefunded amount."), "refused"
      )
    case .created(let refund):
      await self.announce(refund)
      return (
        Self.ok(Self.json(refund, currency: intent.currency)),
        refund.status == "failed" ? "refund_failed" : refund.status == "pending" ? "refund_pending" : "refunded"
      )
    }
  }

  // MARK: Encoding

  static func json(_ refund: SimulatorState.Refund, currency: String) -> [String: Any] {
    var body: [String: Any] = [
      "id": refund.id, "object": "refund", "amount": refund.amount, "currency": currency,
      "payment_intent": refund.paymentIntent, "status": refund.status,
    ]
    if refund.status == "failed" { body["failure_reason"] = "expired_or_canceled_card" }
    return body
  }

  static func json(_ intent: SimulatorState.Intent) -> [String: Any] {
    [
      "id": intent.id, "object": "payment_intent", "amount": intent.amount, "currency": intent.currency,
      "status": intent.status, "capture_method": intent.captureMethod, "amount_capturable": intent.amountCapturable,
      "amount_received": intent.amountReceived, "payment_method": intent.paymentMethod, "metadata": intent.metadata,
      "last_payment_error": intent.lastError.map { $0 as [String: Any] } ?? NSNull(),
    ]
  }

  /// JSON with sorted keys, for the few value types the simulator answers with (strings,
  /// integers, booleans, null, nested objects). Written by hand: it runs on every request.
  static func encode(_ object: [String: Any]) -> Data {
    var out: [UInt8] = []
    out.reserveCapacity(512)
    Self.write(object, into: &out)
    return Data(out)
  }

  private static func write(_ value: Any, into out: inout [UInt8]) {
    switch value {
    case let text as String:
      Self.write(string: text, into: &out)
    case let number as Int64:
      out += Array(String(number).utf8)
    case let number as Int:
      out += Array(String(number).utf8)
    case let flag as Bool:
      out += Array((flag ? "true" : "false").utf8)
    case let object as [String: Any]:
      // [String: String] values match here too.
      out.append(UInt8(ascii: "{"))
      for (index, key) in object.keys.sorted().enumerated() {
        if index > 0 { out.append(UInt8(ascii: ",")) }
        Self.write(string: key, into: &out)
        out.append(UInt8(ascii: ":"))
        Self.write(object[key]!, into: &out)
      }
      out.append(UInt8(ascii: "}"))
    default:
      out += Array("null".utf8)
    }
  }

  private static func write(string: String, into out: inout [UInt8]) {
    let hex = Array("0123456789abcdef".utf8)
    out.append(UInt8(ascii: "\""))
    for byte in string.utf8 {
      switch byte {
      case UInt8(ascii: "\""), UInt8(ascii: "\\"): out += [UInt8(ascii: "\\"), byte]
      case 0x0A: out += [UInt8(ascii: "\\"), UInt8(ascii: "n")]
      case 0x0D: out += [UInt8(ascii: "\\"), UInt8(ascii: "r")]
      case 0x09: out += [UInt8(ascii: "\\"), UInt8(ascii: "t")]
      case 0..<0x20: out += Array("\\u00".utf8) + [hex[Int(byte >> 4)], hex[Int(byte & 0x0F)]]
      default: out.append(byte)
      }
    }
    out.append(UInt8(ascii: "\""))
  }

  static func ok(_ object: [String: Any]) -> SimulatorResponse {
    SimulatorResponse(status: 200, body: self.encode(object))
  }

  static func error(
    _ status: Int, type: String, code: String, message: String, param: String? = nil
  ) -> SimulatorResponse {
    var error: [String: Any] = ["type": type, "code": code, "message": message]
    if let param { error["param"] = param }
    return SimulatorResponse(status: status, body: self.encode(["error": error]))
  }

  static func invalid(_ param: String, _ message: String) -> SimulatorResponse {
    self.error(400, type: "invalid_request_error", code: "parameter_invalid", message: message, param: param)
  }

  static func missing(_ kind: String, _ id: String) -> SimulatorResponse {
    self.error(404, type: "invalid_request_error", code: "resource_missing", message: "No such \(kind): '\(id)'")
  }

  static func response(_ stored: SimulatorResponse, replayed: Bool = false) -> Response {
    var headers: HTTPFields = [.contentType: "application/json"]
    if replayed { headers[Self.replayedField] = "true" }
    return Response(
      status: .init(code: stored.status), headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: stored.body)))
  }

  /// `application/x-www-form-urlencoded`, as Stripe's API takes it.
  static func parseForm(_ text: String) -> [String: String] {
    var form: [String: String] = [:]
    for pair in text.utf8.split(separator: UInt8(ascii: "&")) {
      let parts = pair.split(separator: UInt8(ascii: "="), maxSplits: 1, omittingEmptySubsequences: false)
      form[Self.formDecode(parts[0])] = parts.count > 1 ? Self.formDecode(parts[1]) : ""
    }
    return form
  }

  /// `+` is a space, `%XX` a byte; the bytes are UTF-8.
  static func formDecode(_ encoded: Substring.UTF8View.SubSequence) -> String {
    func nibble(_ byte: UInt8) -> UInt8? {
      switch byte {
      case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
      case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
      case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
      default: return nil
      }
    }
    let input = Array(encoded)
    var bytes: [UInt8] = []
    bytes.reserveCapacity(input.count)
    var index = 0
    while index < input.count {
      let byte = input[index]
      if byte == UInt8(ascii: "+") {
        bytes.append(UInt8(ascii: " "))
      } else if byte == UInt8(ascii: "%"), index + 2 < input.count, let high = nibble(input[index + 1]),
        let low = nibble(input[index + 2])
      {
        bytes.append(high << 4 | low)
        index += 2
      } else {
        bytes.append(byte)
      }
      index += 1
    }
    return String(decoding: bytes, as: UTF8.self)
  }
}

extension Optional {
  fileprivate func asyncFlatMap<Result>(_ transform: (Wrapped) async -> Result?) async -> Result? {
    guard let self else { return nil }
    return await transform(self)
  }
}
