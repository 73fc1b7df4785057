import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import SwiftProtobuf
import Synchronization
import TenderAPI

/// Callers that each, until told to stop, create a payment, wait for its money to be captured
/// and refund part of it, as Tender's clients are told to: every operation has its own
/// idempotency key and is retried with that key on a retryable status (UNAVAILABLE,
/// DEADLINE_EXCEEDED, ABORTED) until it succeeds, for at most `patience`.
///
/// It prints `operations <n>` as operations complete and, at the end, writes every call's status
/// and every operation's payment and refund ids as JSON, so a caller can check them against the
/// provider (the chaos suite does).
final class OperationsLoad: Sendable {
  typealias Transport = HTTP2ClientTransport.Posix

  struct Report: Codable, Sendable {
    /// Calls by status, every attempt counted.
    var codes: [String: Int] = [:]
    /// Each finished operation: the payment's id, and its refund's (nil if the refund was not made).
    var operations: [[String?]] = []
    /// Calls answered with a status that is not retryable.
    var unretryable: [String] = []
    /// Operations still failing when their patience ran out.
    var abandoned: [String] = []
    /// Successful calls by method (CreatePayment, GetPayment, CreateRefund).
    var succeeded: [String: Int] = [:]
    /// Payments whose read-back after the refund did not show it: SUCCEEDED, captured and
    /// refunded as asked.
    var mismatches: [String] = []
  }

  let payments: [Tender_Payments_V1_PaymentService.Client<Transport>]
  let refunds: [Tender_Refunds_V1_RefundService.Client<Transport>]
  let auth: Metadata
  let amountMinor: Int64
  let refundMinor: Int64
  let paymentMethod: String
  let patience: Duration = .seconds(120)
  let report = Mutex(Report())
  private let stopped = Atomic(false)

  init(
    payments: [Tender_Payments_V1_PaymentService.Client<Transport>],
    refunds: [Tender_Refunds_V1_RefundService.Client<Transport>], auth: Metadata, amountMinor: Int64,
    refundMinor: Int64, paymentMethod: String
  ) {
    self.payments = payments
    self.refunds = refunds
    self.auth = auth
    self.amountMinor = amountMinor
    self.refundMinor = refundMinor
    self.paymentMethod = paymentMethod
  }

  /// Callers finish the operation they are in, then stop.
  func stop() {
    self.stopped.store(true, ordering: .relaxed)
  }

  static let retryable: Set<RPCError.Code> = [.unavailable, .deadlineExceeded, .aborted]

  /// Runs `callers` callers until `stop()`.
  func run(callers: Int) async {
    await withDiscardingTaskGroup { group in
      for caller in 0..<callers {
        group.addTask {
          while !self.stopped.load(ordering: .relaxed) {
            await self.operation(caller: caller)
          }
        }
      }
    }
  }

  /// A status as gRPC writes it: UNAVAILABLE, DEADLINE_EXCEEDED.
  static func name(_ code: RPCError.Code) -> String {
    String(describing: code).reduce(into: "") { name, character in
      if character.isUppercase { name += "_" }
      name += character.uppercased()
    }
  }

  private func count(_ code: String) {
    self.report.withLock { $0.codes[code, default: 0] += 1 }
  }

  private func options() -> CallOptions {
    var options = CallOptions.defaults
    options.timeout = .seconds(10)
    return options
  }

  /// One call, with one key on every attempt until it succeeds; nil if it cannot.
  private func keyed<Response: Sendable>(
    _ method: String, _ call: @Sendable (Metadata, CallOptions) async throws -> Response
  ) async -> Response? {
    var metadata = self.auth
    metadata.addString(UUID().uuidString, forKey: "idempotency-key")
    return await self.retried(method, metadata: metadata, call)
  }

  /// One call, attempted again on a retryable status until it succeeds; nil if it cannot.
  private func retried<Response: Sendable>(
    _ method: String, metadata: Metadata, _ call: @Sendable (Metadata, CallOptions) async throws -> Response
  ) async -> Response? {
    let giveUp = ContinuousClock.now + self.patience
    var attempt = 0
    while true {
      attempt += 1
      do {
        let response = try await call(metadata, self.options())
        self.report.withLock {
          $0.codes["OK", default: 0] += 1
          $0.succeeded[method, default: 0] += 1
        }
        return response
      } catch {
        let code = (error as? RPCError)?.code
        let name = code.map(Self.name) ?? "\(type(of: error))"
        self.count(name)
        guard let code, Self.retryable.contains(code) else {
          self.report.withLock { $0.unretryable.append("\(name): \(error)") }
          return nil
        }
        if ContinuousClock.now > giveUp {
          self.report.withLock { $0.abandoned.append("\(name): \(error)") }
          return nil
        }
        try? await Task.sleep(for: .milliseconds(min(1000, 100 * attempt)))
      }
    }
  }

  private func operation(caller: Int) async {
    let payments = self.payments[caller % self.payments.count]
    let refunds = self.refunds[caller % self.refunds.count]
    let request = Tender_Payments_V1_CreatePaymentRequest.with {
      $0.amount = .with {
        $0.amountMinor = self.amountMinor
        $0.currency = "EUR"
      }
      $0.captureMethod = .automatic
      $0.paymentMethodToken = self.paymentMethod
    }
    guard
      let created = await self.keyed(
        "CreatePayment",
        { metadata, options in try await payments.createPayment(request, metadata: metadata, options: options) })
    else { return }
    // A payment whose outcome the provider has not told yet is PROCESSING, and Tender settles it.
    // Only captured money can be refunded: wait for it, as a client would.
    var payment = created.payment
    let giveUp = ContinuousClock.now + self.patience
    while payment.status == .processing && ContinuousClock.now < giveUp {
      try? await Task.sleep(for: .milliseconds(500))
      do {
        payment = try await payments.getPayment(
          .with { $0.paymentID = payment.paymentID }, metadata: self.auth, options: self.options()
        ).payment
      } catch {
        self.count((error as? RPCError).map { Self.name($0.code) } ?? "\(type(of: error))")
      }
    }
    let refund = Tender_Refunds_V1_CreateRefundRequest.with {
      $0.paymentID = created.payment.paymentID
      $0.amountMinor = self.refundMinor
      $0.reason = .requestedByCustomer
    }
    let refunded = await self.keyed(
      "CreateRefund",
      { metadata, options in try await refunds.createRefund(refund, metadata: metadata, options: options) })
    // Read back, as a client showing the result would: the refund is on the payment.
    if let refunded {
      let id = created.payment.paymentID
      let read = await self.retried("GetPayment", metadata: self.auth) { metadata, options in
        try await payments.getPayment(.with { $0.paymentID = id }, metadata: metadata, options: options).payment
      }
      if let read,
        read.status != .succeeded || read.amountCapturedMinor != self.amountMinor
          || read.amountRefundedMinor != refunded.refund.amount.amountMinor
      {
        self.report.withLock {
          $0.mismatches.append(
            "\(id): \(read.status) captured \(read.amountCapturedMinor) refunded \(read.amountRefundedMinor)")
        }
      }
    }
    let done = self.report.withLock { report -> Int in
      report.operations.append([created.payment.paymentID, refunded?.refund.refundID])
      return report.operations.count
    }
    // Unbuffered, so a caller reading the pipe sees each at once.
    FileHandle.standardOutput.write(Data("operations \(done)\n".utf8))
  }
}
