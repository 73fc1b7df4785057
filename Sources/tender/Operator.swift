import ArgumentParser
import Foundation
import GRPCCore
import SwiftProtobuf
import Synchronization
import TenderAPI

/// `key=value` metadata options.
func parseMetadata(_ entries: [String]) throws -> [String: String] {
  var metadata: [String: String] = [:]
  for entry in entries {
    guard let equals = entry.firstIndex(of: "="), equals != entry.startIndex else {
      throw ValidationError("--metadata takes key=value, not '\(entry)'")
    }
    metadata[String(entry[..<equals])] = String(entry[entry.index(after: equals)...])
  }
  return metadata
}

/// Prints a message as JSON or through `table`.
func emit<M: SwiftProtobuf.Message>(_ message: M, json: Bool, _ table: (M) -> String) throws {
  print(json ? try OperatorFormat.json(message) : table(message))
}

/// Column widths of `payments watch`: a timestamp, the longest event name, and ids.
private let watchWidths = [20, 24, 28, 27]

/// Where a watch stands: the last cursor printed and how many events.
private final class WatchProgress: Sendable {
  private let state: Mutex<(cursor: String, printed: Int)>

  init(cursor: String) { self.state = Mutex((cursor, 0)) }

  var cursor: String { self.state.withLock { $0.cursor } }
  var printed: Int { self.state.withLock { $0.printed } }

  func advance(to cursor: String) -> Int {
    self.state.withLock {
      $0 = (cursor, $0.printed + 1)
      return $0.printed
    }
  }
}

/// A money amount given as a decimal (`--amount 10.50`) or in minor units (`--amount-minor 1050`).
struct AmountOptions: ParsableArguments {
  @Option(help: "Amount as a decimal in the currency's units, e.g. 10.50.")
  var amount: String?

  @Option(name: .customLong("amount-minor"), help: "Amount in minor units, e.g. 1050.")
  var amountMinor: Int64?

  func validate() throws {
    if self.amount != nil && self.amountMinor != nil {
      throw ValidationError("give --amount or --amount-minor, not both")
    }
  }

  var isGiven: Bool { self.amount != nil || self.amountMinor != nil }

  /// The amount for the payment `id`: a decimal one is in the payment's currency (read first).
  func minorUnits(of id: String, _ session: OperatorSession) async throws -> Int64 {
    guard self.amount != nil else { return self.amountMinor ?? 0 }
    let payment = try await session.payments.getPayment(
      .with { $0.paymentID = id }, metadata: session.metadata(), options: session.options
    ).payment
    return try self.minorUnits(currency: payment.amount.currency)
  }

  func minorUnits(currency: String) throws -> Int64 {
    if let amountMinor { return amountMinor }
    if let amount { return try OperatorFormat.minorUnits(amount, currency: currency) }
    return 0
  }
}

struct Payments: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Create, capture, cancel, read and watch payments (over TLS, as a client: see --credentials).",
    discussion:
      "Exit status: 0 on success, else the gRPC status code of the failure (3 INVALID_ARGUMENT, 5 NOT_FOUND, 7 PERMISSION_DENIED, 9 FAILED_PRECONDITION, 14 UNAVAILABLE, 16 UNAUTHENTICATED, …); errors are printed with their reason and field.",
    subcommands: [Create.self, Get.self, List.self, Capture.self, Cancel.self, Watch.self]
  )

  struct Create: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Charge (capture automatic) or authorize (capture manual) a payment method.")
    @OptionGroup var connection: OperatorOptions
    @OptionGroup var amount: AmountOptions
    @Option(help: "ISO 4217 code, e.g. EUR.") var currency: String
    @Option(name: .customLong("payment-method"), help: "The provider's payment method token, e.g. pm_card_visa.")
    var paymentMethod: String
    @Option(help: "automatic or manual.") var capture: String = "automatic"
    @Option var description: String = ""
    @Option(name: .customLong("customer-reference")) var customerReference: String = ""
    @Option(help: "key=value, repeatable.") var metadata: [String] = []
    @Option(
      name: .customLong("idempotency-key"),
      help: "Key of this payment (a new UUID if not given); every retry sends the same one.")
    var idempotencyKey: String?

    func validate() throws {
      guard ["automatic", "manual"].contains(self.capture) else {
        throw ValidationError("--capture is automatic or manual")
      }
      guard self.amount.isGiven else { throw ValidationError("give --amount or --amount-minor") }
    }

    func run() async throws {
      let minor = try self.amount.minorUnits(currency: self.currency)
      let request = try Tender_Payments_V1_CreatePaymentRequest.with {
        $0.amount = .with {
          $0.currency = self.currency
          $0.amountMinor = minor
        }
        $0.paymentMethodToken = self.paymentMethod
        $0.captureMethod = self.capture == "manual" ? .manual : .automatic
        $0.description_p = self.description
        $0.customerReference = self.customerReference
        $0.metadata = try parseMetadata(self.metadata)
      }
      let key = self.idempotencyKey ?? UUID().uuidString.lowercased()
      try await OperatorConnection.run(self.connection) { session in
        let response = try await session.keyed(key) {
          try await session.payments.createPayment(request, metadata: $0, options: session.options)
        }
        try emit(response.payment, json: session.json, OperatorFormat.payment)
      }
    }
  }

  struct Get: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a payment.")
    @OptionGroup var connection: OperatorOptions
    @Argument(help: "The payment's id (pay_…).") var paymentID: String

    func run() async throws {
      let id = self.paymentID
      try await OperatorConnection.run(self.connection) { session in
        let response = try await session.payments.getPayment(
          .with { $0.paymentID = id }, metadata: session.metadata(), options: session.options)
        try emit(response.payment, json: session.json, OperatorFormat.payment)
      }
    }
  }

  struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List payments, newest first.")
    @OptionGroup var connection: OperatorOptions
    @Option(help: "Only these statuses (processing, requires_capture, succeeded, failed, canceled), repeatable.")
    var status: [String] = []
    @Option(name: .customLong("customer-reference")) var customerReference: String = ""
    @Option(help: "At most this many (all pages are followed up to it).") var limit: Int = 50

    func run() async throws {
      let statuses: [Tender_Payments_V1_PaymentStatus] = try self.status.map { name in
        let all: [Tender_Payments_V1_PaymentStatus] = [.processing, .requiresCapture, .succeeded, .failed, .canceled]
        guard let status = all.first(where: { OperatorFormat.constant($0) == name.uppercased() }) else {
          throw ValidationError("unknown --status '\(name)'")
        }
        return status
      }
      let (reference, limit) = (self.customerReference, self.limit)
      try await OperatorConnection.run(self.connection) { session in
        var found: [Tender_Payments_V1_Payment] = []
        var request = Tender_Payments_V1_ListPaymentsRequest.with {
          $0.statuses = statuses
          $0.customerReference = reference
          $0.pageSize = Int32(min(100, max(1, limit)))
        }
        repeat {
          let page = try await session.payments.listPayments(
            request, metadata: session.metadata(), options: session.options)
          found += page.payments
          request.pageToken = page.nextPageToken
        } while !request.pageToken.isEmpty && found.count < limit
        found = Array(found.prefix(limit))
        if session.json {
          print(try OperatorFormat.json(Tender_Payments_V1_ListPaymentsResponse.with { $0.payments = found }))
          return
        }
        print(
          OperatorFormat.table(
            ["PAYMENT", "STATUS", "AMOUNT", "CAPTURED", "REFUNDED", "CUSTOMER", "CREATED"],
            found.map { p in
              [
                p.paymentID, OperatorFormat.constant(p.status),
                OperatorFormat.amount(p.amount.amountMinor, p.amount.currency),
                OperatorFormat.amount(p.amountCapturedMinor, p.amount.currency),
                OperatorFormat.amount(p.amountRefundedMinor, p.amount.currency),
                p.customerReference.isEmpty ? "-" : p.customerReference,
                OperatorFormat.time(p.createTime),
              ]
            }))
      }
    }
  }

  struct Capture: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Capture an authorized payment, all of it or part.")
    @OptionGroup var connection: OperatorOptions
    @Argument(help: "The payment's id.") var paymentID: String
    @OptionGroup var amount: AmountOptions
    @Option(name: .customLong("idempotency-key"), help: "Key of this capture (a new UUID if not given).")
    var idempotencyKey: String?

    func run() async throws {
      let (id, amount) = (self.paymentID, self.amount)
      let key = self.idempotencyKey ?? UUID().uuidString.lowercased()
      try await OperatorConnection.run(self.connection) { session in
        let captured = try await amount.minorUnits(of: id, session)
        let response = try await session.keyed(key) {
          try await session.payments.capturePayment(
            .with {
              $0.paymentID = id
              $0.amountMinor = captured
            }, metadata: $0, options: session.options)
        }
        try emit(response.payment, json: session.json, OperatorFormat.payment)
      }
    }
  }

  struct Cancel: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Cancel a payment that is not captured yet.")
    @OptionGroup var connection: OperatorOptions
    @Argument(help: "The payment's id.") var paymentID: String
    @Option var reason: String = ""
    @Option(name: .customLong("idempotency-key"), help: "Key of this cancellation (a new UUID if not given).")
    var idempotencyKey: String?

    func run() async throws {
      let (id, reason) = (self.paymentID, self.reason)
      let key = self.idempotencyKey ?? UUID().uuidString.lowercased()
      try await OperatorConnection.run(self.connection) { session in
        let response = try await session.keyed(key) {
          try await session.payments.cancelPayment(
            .with {
              $0.paymentID = id
              $0.reason = reason
            }, metadata: $0, options: session.options)
        }
        try emit(response.payment, json: session.json, OperatorFormat.payment)
      }
    }
  }

  struct Watch: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Print the merchant's payment and refund events as they happen (one JSON object per line with --json).",
      discussion:
        "Watches from now, or after --cursor; a broken stream (a restart, a drain) is watched again after the last event printed. Stops after --count events, or on Ctrl-C."
    )
    @OptionGroup var connection: OperatorOptions
    @Option(help: "Resume after this event's cursor.") var cursor: String = ""
    @Option(help: "Stop after this many events.") var count: Int?

    func run() async throws {
      let (start, count) = (self.cursor, self.count)
      try await OperatorConnection.run(self.connection) { session in
        let progress = WatchProgress(cursor: start)
        var options = session.options
        options.timeout = nil  // a watch has no deadline
        let streamOptions = options
        if !session.json {
          FileHandle.standardOutput.write(
            Data(
              (OperatorFormat.row(["TIME", "EVENT", "PAYMENT", "REFUND", "STATUS"], widths: watchWidths) + "\n").utf8))
        }
        while count.map({ progress.printed < $0 }) ?? true {
          do {
            try await session.payments.watchPayments(
              .with { $0.cursor = progress.cursor }, metadata: session.metadata(), options: streamOptions
            ) { response in
              for try await event in response.messages {
                let printed = progress.advance(to: event.cursor)
                // Written at once, not through print's buffer: a watch is read as it goes.
                let line =
                  session.json
                  ? try OperatorFormat.json(event)
                  : OperatorFormat.row(
                    [
                      OperatorFormat.time(event.eventTime), OperatorFormat.constant(event.eventType), event.paymentID,
                      event.refundID.isEmpty ? "-" : event.refundID, OperatorFormat.constant(event.payment.status),
                    ], widths: watchWidths)
                FileHandle.standardOutput.write(Data((line + "\n").utf8))
                if let count, printed >= count { return }
              }
            }
          } catch let error as RPCError where error.code == .unavailable {
            // The server drained or restarted: watch again after the last event printed.
            try await Task.sleep(for: .milliseconds(500))
          }
        }
      }
    }
  }
}

struct Refunds: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Create and read refunds (over TLS, as a client: see --credentials).",
    discussion: "Exit status: 0 on success, else the gRPC status code of the failure.",
    subcommands: [Create.self, Get.self, List.self]
  )

  struct Create: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Refund a captured payment, all that is left of it or part.")
    @OptionGroup var connection: OperatorOptions
    @Argument(help: "The payment's id.") var paymentID: String
    @OptionGroup var amount: AmountOptions
    @Option(help: "key=value, repeatable.") var metadata: [String] = []
    @Option(name: .customLong("idempotency-key"), help: "Key of this refund (a new UUID if not given).")
    var idempotencyKey: String?

    func run() async throws {
      let (id, amount) = (self.paymentID, self.amount)
      let metadata = try parseMetadata(self.metadata)
      let key = self.idempotencyKey ?? UUID().uuidString.lowercased()
      try await OperatorConnection.run(self.connection) { session in
        let refunded = try await amount.minorUnits(of: id, session)
        let response = try await session.keyed(key) {
          try await session.refunds.createRefund(
            .with {
              $0.paymentID = id
              $0.amountMinor = refunded
              $0.metadata = metadata
            }, metadata: $0, options: session.options)
        }
        try emit(response.refund, json: session.json, OperatorFormat.refund)
      }
    }
  }

  struct Get: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a refund.")
    @OptionGroup var connection: OperatorOptions
    @Argument(help: "The refund's id (ref_…).") var refundID: String

    func run() async throws {
      let id = self.refundID
      try await OperatorConnection.run(self.connection) { session in
        let response = try await session.refunds.getRefund(
          .with { $0.refundID = id }, metadata: session.metadata(), options: session.options)
        try emit(response.refund, json: session.json, OperatorFormat.refund)
      }
    }
  }

  struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List refunds, of one payment or all.")
    @OptionGroup var connection: OperatorOptions
    @Option(name: .customLong("payment"), help: "Only this payment's refunds.") var paymentID: String = ""
    @Option(help: "At most this many.") var limit: Int = 50

    func run() async throws {
      let (id, limit) = (self.paymentID, self.limit)
      try await OperatorConnection.run(self.connection) { session in
        var found: [Tender_Refunds_V1_Refund] = []
        var request = Tender_Refunds_V1_ListRefundsRequest.with {
          $0.paymentID = id
          $0.pageSize = Int32(min(100, max(1, limit)))
        }
        repeat {
          let page = try await session.refunds.listRefunds(
            request, metadata: session.metadata(), options: session.options)
          found += page.refunds
          request.pageToken = page.nextPageToken
        } while !request.pageToken.isEmpty && found.count < limit
        found = Array(found.prefix(limit))
        if session.json {
          print(try OperatorFormat.json(Tender_Refunds_V1_ListRefundsResponse.with { $0.refunds = found }))
          return
        }
        print(
          OperatorFormat.table(
            ["REFUND", "PAYMENT", "STATUS", "AMOUNT", "CREATED"],
            found.map { r in
              [
                r.refundID, r.paymentID, OperatorFormat.constant(r.status),
                OperatorFormat.amount(r.amount.amountMinor, r.amount.currency), OperatorFormat.time(r.createTime),
              ]
            }))
      }
    }
  }
}
