import Foundation
import GRPCCore
import GRPCInProcessTransport
import GRPCProtobuf
import SwiftProtobuf
import TenderAPI
import TenderServer
import TenderTesting
import Testing

/// Payment RPC behaviour — validation, idempotency semantics, the capture rules, paging — on the
/// server `tender serve` runs, over the in-process transport on in-memory ports. PaymentsTests
/// keeps what needs the real parts (PostgreSQL's concurrency, the provider over HTTP, watches).
@Suite("Payment RPCs in process: validation, idempotency, capture rules, paging")
struct PaymentRPCTests {
  typealias Payments = Tender_Payments_V1_PaymentService.Client<InProcessTransport.Client>

  enum BadInput: String, CaseIterable, Sendable {
    case zeroAmount, negativeAmount, tooLarge, unknownCurrency, noAmount, unspecifiedCapture, noPaymentMethod
    case panAsPaymentMethod, panInMetadata, panInDescription, oversizedMetadata
    case panDottedInReference, panWithCVVInDescription, panAfterDigitsInMetadata, panInOtherDigits, panBehindMarks
    case nulInDescription, escapeInReference, c1InMetadataValue, controlInMetadataKey, combiningMarkFlood
    case metadataOverTotalBytes

    func apply(_ r: inout Tender_Payments_V1_CreatePaymentRequest) {
      switch self {
      case .zeroAmount: r.amount.amountMinor = 0
      case .negativeAmount: r.amount.amountMinor = -5
      case .tooLarge: r.amount.amountMinor = 1_000_000_000_001
      case .unknownCurrency: r.amount.currency = "XXY"
      case .noAmount: r.clearAmount()
      case .unspecifiedCapture: r.captureMethod = .unspecified
      case .noPaymentMethod: r.paymentMethodToken = ""
      case .panAsPaymentMethod: r.paymentMethodToken = "4242424242424242"
      case .panInMetadata: r.metadata["note"] = "card 4242 4242 4242 4242"
      case .panInDescription: r.description_p = "paid with 5555555555554444"
      case .oversizedMetadata: for i in 0..<51 { r.metadata["k\(i)"] = "v" }
      case .panDottedInReference: r.customerReference = "4242.4242.4242.4242"
      case .panWithCVVInDescription: r.description_p = "4242 4242 4242 4242 cvv 123"
      case .panAfterDigitsInMetadata: r.metadata["note"] = "order 77 4242424242424242"
      case .panInOtherDigits: r.description_p = "ref ٤٢٤٢٤٢٤٢٤٢٤٢٤٢٤٢"
      case .panBehindMarks: r.customerReference = "4242\u{200B}4242\u{0301}4242\u{200B}4242"
      case .nulInDescription: r.description_p = "gift\u{0}wrap"
      case .escapeInReference: r.customerReference = "\u{1B}[31mred"
      case .c1InMetadataValue: r.metadata["note"] = "next\u{85}line"
      case .controlInMetadataKey: r.metadata["no\u{7}te"] = "v"
      case .combiningMarkFlood: r.description_p = "a" + String(repeating: "\u{0301}", count: 600)
      case .metadataOverTotalBytes:
        for i in 0..<20 { r.metadata["key\(i)"] = String(repeating: "v", count: 450) }
      }
    }

    var expected: (reason: String, field: String) {
      switch self {
      case .zeroAmount, .negativeAmount, .tooLarge: return ("AMOUNT_INVALID", "amount.amount_minor")
      case .unknownCurrency: return ("CURRENCY_UNSUPPORTED", "amount.currency")
      case .noAmount: return ("FIELD_REQUIRED", "amount")
      case .unspecifiedCapture: return ("FIELD_REQUIRED", "capture_method")
      case .noPaymentMethod: return ("FIELD_REQUIRED", "payment_method_token")
      case .panAsPaymentMethod: return ("CARD_DATA_REJECTED", "payment_method_token")
      case .panInMetadata: return ("CARD_DATA_REJECTED", "metadata[note]")
      case .panInDescription: return ("CARD_DATA_REJECTED", "description")
      case .oversizedMetadata, .metadataOverTotalBytes: return ("METADATA_TOO_LARGE", "metadata")
      case .panDottedInReference, .panBehindMarks: return ("CARD_DATA_REJECTED", "customer_reference")
      case .panWithCVVInDescription, .panInOtherDigits: return ("CARD_DATA_REJECTED", "description")
      case .panAfterDigitsInMetadata: return ("CARD_DATA_REJECTED", "metadata[note]")
      case .nulInDescription: return ("FIELD_CONTROL_CHARACTERS", "description")
      case .escapeInReference: return ("FIELD_CONTROL_CHARACTERS", "customer_reference")
      case .c1InMetadataValue: return ("FIELD_CONTROL_CHARACTERS", "metadata[note]")
      case .controlInMetadataKey: return ("FIELD_CONTROL_CHARACTERS", "metadata")
      case .combiningMarkFlood: return ("FIELD_TOO_LONG", "description")
      }
    }
  }

  @Test(
    "Replays return the first answer — a stored decline too — marked as replayed; a reused key with another request is refused; merchants have their own keys"
  )
  func replayReuseAndMerchants() async throws {
    try await InProcessServer.with { server in
      let token = try await server.token(scopes: ["payments:write"])
      let other = try await server.token(scopes: ["payments:write"], merchantID: "mer_other")
      try await server.withClient { grpc in
        let payments = Payments(wrapping: grpc)
        let first = await PaymentsTests.create(
          payments, PaymentsTests.request(), metadata: PaymentsTests.metadata(token, key: "k1"))
        let again = await PaymentsTests.create(
          payments, PaymentsTests.request(), metadata: PaymentsTests.metadata(token, key: "k1"))
        guard case .payment(let original, replayed: false) = first, case .payment(let replayed, replayed: true) = again
        else {
          Issue.record("expected a first answer and a replay: \(first) / \(again)")
          return
        }
        var options = BinaryEncodingOptions()
        options.useDeterministicOrdering = true
        #expect(try original.serializedBytes(options: options) as [UInt8] == replayed.serializedBytes(options: options))

        let reused = await PaymentsTests.create(
          payments, PaymentsTests.request(2000), metadata: PaymentsTests.metadata(token, key: "k1"))
        #expect(reused.error?.code == .invalidArgument)
        #expect(reused.error?.reason == "IDEMPOTENCY_KEY_REUSED")

        let declined = await PaymentsTests.create(
          payments, PaymentsTests.request(method: "pm_card_chargeDeclinedInsufficientFunds"),
          metadata: PaymentsTests.metadata(token, key: "k2"))
        let declinedAgain = await PaymentsTests.create(
          payments, PaymentsTests.request(method: "pm_card_chargeDeclinedInsufficientFunds"),
          metadata: PaymentsTests.metadata(token, key: "k2"))
        let firstError = try #require(declined.error)
        let secondError = try #require(declinedAgain.error)
        #expect(firstError.code == .failedPrecondition && firstError.reason == "CARD_DECLINED")
        #expect(secondError.code == firstError.code && secondError.message == firstError.message)
        #expect(
          secondError.metadata[binaryValues: "grpc-status-details-bin"].first(where: { _ in true })
            == firstError.metadata[binaryValues: "grpc-status-details-bin"].first(where: { _ in true }))
        #expect(secondError.metadata[stringValues: "idempotent-replayed"].contains("true"))
        let info = try firstError.unpackGoogleRPCStatus()?.details.compactMap(\.errorInfo).first
        #expect(info?.metadata["decline_reason"] == "insufficient_funds")

        // The same key at another merchant is a different request.
        let elsewhere = await PaymentsTests.create(
          payments, PaymentsTests.request(), metadata: PaymentsTests.metadata(other, key: "k1"))
        #expect(elsewhere.payment?.paymentID != original.paymentID)
        #expect(elsewhere.payment?.merchantID == "mer_other")
      }
      #expect(await server.database.count(.payments) == 3)
      #expect(await server.provider.charges == 3)
    }
  }

  @Test("Bad input gets the reason and field, and writes nothing", arguments: BadInput.allCases)
  func badInput(_ input: BadInput) async throws {
    let (name, (reason, field)) = (input.rawValue, input.expected)
    try await InProcessServer.with { server in
      let token = try await server.token(scopes: ["payments:write"])
      var request = PaymentsTests.request()
      input.apply(&request)
      let outcome = try await server.withClient { grpc in
        await PaymentsTests.create(
          Payments(wrapping: grpc), request, metadata: PaymentsTests.metadata(token, key: "bad-\(name)"))
      }
      let error = try #require(outcome.error, "\(name) was accepted")
      #expect(error.code == .invalidArgument, "\(name)")
      let status = try error.unpackGoogleRPCStatus()
      #expect(status?.details.compactMap(\.errorInfo).first?.reason == reason, "\(name)")
      #expect(status?.details.compactMap(\.errorInfo).first?.metadata["field"] == field, "\(name)")
      #expect(!error.message.contains("4242"), "\(name)")
      #expect(await server.database.count(.payments) == 0)
      #expect(await server.database.count(.idempotencyKeys) == 0)
      #expect(await server.provider.calls.isEmpty)
    }
  }

  @Test("Bytes that are no CreatePaymentRequest get INVALID_ARGUMENT MESSAGE_MALFORMED and write nothing")
  func undecodableMessage() async throws {
    try await InProcessServer.with { server in
      let token = try await server.token(scopes: ["payments:write"])
      let valid: [UInt8] = try PaymentsTests.request().serializedBytes()
      let inputs: [[UInt8]] = [[0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 0x12, 0x80], Array(valid.prefix(7))]
      let errors = try await server.withClient { grpc in
        var errors: [RPCError?] = []
        for bytes in inputs {
          errors.append(
            await #expect(throws: RPCError.self) {
              try await grpc.unary(
                request: ClientRequest(message: bytes, metadata: PaymentsTests.metadata(token, key: UUID().uuidString)),
                descriptor: Tender_Payments_V1_PaymentService.Method.CreatePayment.descriptor,
                serializer: RawMessageBytes(), deserializer: RawMessageBytes(), options: .defaults
              ) { try $0.message }
            })
        }
        return errors
      }
      #expect(errors.count == inputs.count)
      for error in errors {
        #expect(error?.code == .invalidArgument)
        #expect(
          try error?.unpackGoogleRPCStatus()?.details.compactMap(\.errorInfo).first?.reason == "MESSAGE_MALFORMED")
      }
      #expect(await server.database.count(.payments) == 0)
      #expect(await server.database.count(.idempotencyKeys) == 0)
    }
  }

  @Test("A payment id that is a card number is not echoed in the NOT_FOUND answer")
  func notFoundDoesNotEcho() async throws {
    try await InProcessServer.with { server in
      let token = try await server.token(scopes: ["payments:read"])
      let error = try await server.withClient { grpc in
        await #expect(throws: RPCError.self) {
          try await Payments(wrapping: grpc).getPayment(
            .with { $0.paymentID = "pay_4111111111111111" }, metadata: TestServer.bearer(token))
        }
      }
      #expect(error?.code == .notFound)
      #expect(error?.message.contains("4111") == false)
      #expect(
        try error?.unpackGoogleRPCStatus()?.details.compactMap(\.errorInfo).first?.metadata["field"] == "payment_id")
    }
  }

  @Test(
    "A client holds at most 32 WatchPayments streams at once (RESOURCE_EXHAUSTED past that); other clients are not held back"
  )
  func watchStreamsCapped() async throws {
    try await InProcessServer.with { server in
      let token = try await server.token(scopes: ["payments:read"])
      let other = try await server.token(scopes: ["payments:read"])
      try await server.withClient { grpc in
        let payments = Payments(wrapping: grpc)
        let (opened, openedContinuation) = AsyncStream.makeStream(of: Void.self)
        let streams = Task {
          try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<32 {
              group.addTask {
                try await payments.watchPayments(.init(), metadata: TestServer.bearer(token)) { response in
                  openedContinuation.yield()
                  for try await _ in response.messages {}
                }
              }
            }
            try await group.waitForAll()
          }
        }
        var count = 0
        for await _ in opened {
          count += 1
          if count == 32 { break }
        }
        // Bounded, so an accepted stream fails the test instead of holding it open.
        var bounded = CallOptions.defaults
        bounded.timeout = .seconds(10)
        let refused = await #expect(throws: RPCError.self) {
          try await payments.watchPayments(.init(), metadata: TestServer.bearer(token), options: bounded) { response in
            for try await _ in response.messages {}
          }
        }
        #expect(refused?.code == .resourceExhausted && refused?.reason == "TOO_MANY_STREAMS")
        // Another client of the same merchant still gets its stream.
        let accepted = try await payments.watchPayments(.init(), metadata: TestServer.bearer(other)) { _ in true }
        #expect(accepted)
        streams.cancel()
      }
    }
  }

  @Test("A missing or unusable idempotency-key is refused before anything happens")
  func idempotencyKeyRequired() async throws {
    try await InProcessServer.with { server in
      let token = try await server.token(scopes: ["payments:write"])
      try await server.withClient { grpc in
        let payments = Payments(wrapping: grpc)
        let missing = await PaymentsTests.create(
          payments, PaymentsTests.request(), metadata: PaymentsTests.metadata(token, key: nil))
        #expect(missing.error?.code == .invalidArgument && missing.error?.reason == "IDEMPOTENCY_KEY_MISSING")
        let tooLong = await PaymentsTests.create(
          payments, PaymentsTests.request(),
          metadata: PaymentsTests.metadata(token, key: String(repeating: "k", count: 256)))
        #expect(tooLong.error?.reason == "IDEMPOTENCY_KEY_INVALID")
        // The key is stored and sent to the provider: no card number in it.
        for key in ["4242424242424242", "pay-4242-4242-4242-4242", "order.4242.4242.4242.4242"] {
          let pan = await PaymentsTests.create(
            payments, PaymentsTests.request(), metadata: PaymentsTests.metadata(token, key: key))
          #expect(pan.error?.code == .invalidArgument && pan.error?.reason == "CARD_DATA_REJECTED", "\(key)")
          #expect(pan.error?.field == "idempotency-key", "\(key)")
        }
        #expect(await server.database.count(.payments) == 0)
        // A UUID is an identifier, whatever its digits (these groups read as a Luhn-valid 16 digits).
        for key in ["42424242-4242-4242-8123-123456789012", "4242424242424242a123456789012345"] {
          let accepted = await PaymentsTests.create(
            payments, PaymentsTests.request(), metadata: PaymentsTests.metadata(token, key: key))
          #expect(accepted.payment != nil, "\(key): \(String(describing: accepted.error))")
        }
      }
      #expect(await server.database.count(.payments) == 2)
    }
  }

  @Test(
    "Capture takes part of an authorization and releases the rest; cancel releases it all; the rules' refusals are stored answers"
  )
  func captureAndCancel() async throws {
    try await InProcessServer.with { server in
      let token = try await server.token(scopes: ["payments:write", "payments:read"])
      let other = try await server.token(scopes: ["payments:write"], merchantID: "mer_other")
      try await server.withClient { grpc in
        let payments = Payments(wrapping: grpc)
        let first = try #require(
          await PaymentsTests.create(
            payments, PaymentsTests.request(1000), metadata: PaymentsTests.metadata(token, key: "a")
          ).payment)

        let tooMuch = await PaymentsTests.capture(
          payments, first.paymentID, amount: 1001, metadata: PaymentsTests.metadata(token, key: "c0"))
        guard case .failure(let exceeded) = tooMuch else {
          Issue.record("capture above the authorization succeeded")
          return
        }
        #expect(exceeded.code == .invalidArgument && exceeded.reason == "CAPTURE_EXCEEDS_AUTHORIZED")

        let captured = try await PaymentsTests.capture(
          payments, first.paymentID, amount: 600, metadata: PaymentsTests.metadata(token, key: "c1")
        ).get()
        #expect(
          captured.status == .succeeded && captured.amountCapturedMinor == 600 && captured.amountCapturableMinor == 0)
        let replay = try await PaymentsTests.capture(
          payments, first.paymentID, amount: 600, metadata: PaymentsTests.metadata(token, key: "c1")
        ).get()
        #expect(replay == captured)
        guard
          case .failure(let again) = await PaymentsTests.capture(
            payments, first.paymentID, metadata: PaymentsTests.metadata(token, key: "c2"))
        else {
          Issue.record("a second capture succeeded")
          return
        }
        #expect(again.code == .failedPrecondition && again.reason == "PAYMENT_NOT_CAPTURABLE")

        let second = try #require(
          await PaymentsTests.create(
            payments, PaymentsTests.request(500), metadata: PaymentsTests.metadata(token, key: "b")
          ).payment)
        guard
          case .failure(let foreign) = await PaymentsTests.cancel(
            payments, second.paymentID, metadata: PaymentsTests.metadata(other, key: "x"))
        else {
          Issue.record("another merchant canceled the payment")
          return
        }
        #expect(foreign.code == .notFound)
        let canceled = try await PaymentsTests.cancel(
          payments, second.paymentID, metadata: PaymentsTests.metadata(token, key: "x")
        ).get()
        #expect(canceled.status == .canceled && canceled.amountCapturableMinor == 0)
        guard
          case .failure(let late) = await PaymentsTests.capture(
            payments, second.paymentID, metadata: PaymentsTests.metadata(token, key: "c3"))
        else {
          Issue.record("a canceled payment was captured")
          return
        }
        #expect(late.reason == "PAYMENT_NOT_CAPTURABLE")
      }
      let providerCalls = await server.provider.calls
      #expect(providerCalls.filter { $0.hasPrefix("capture_payment ") }.count == 1)
      #expect(providerCalls.filter { $0.hasPrefix("cancel_payment ") }.count == 1)
    }
  }

  @Test(
    "ListPayments pages through a merchant's payments newest first, exactly once each; page tokens cannot be forged or moved"
  )
  func listing() async throws {
    try await InProcessServer.with { server in
      let token = try await server.token(scopes: ["payments:write", "payments:read"])
      let other = try await server.token(scopes: ["payments:read"], merchantID: "mer_other")
      try await server.withClient { grpc in
        let payments = Payments(wrapping: grpc)
        var created: [String] = []
        for index in 0..<25 {
          let method = index % 5 == 0 ? "pm_card_chargeDeclined" : "pm_card_visa"
          if let payment = await PaymentsTests.create(
            payments, PaymentsTests.request(method: method), metadata: PaymentsTests.metadata(token, key: "l\(index)")
          ).payment {
            created.append(payment.paymentID)
          }
        }
        #expect(created.count == 20)
        var seen: [String] = []
        var pageToken = ""
        var firstToken = ""
        repeat {
          let page = try await payments.listPayments(
            .with {
              $0.pageSize = 10
              $0.pageToken = pageToken
            }, metadata: TestServer.bearer(token))
          seen += page.payments.map(\.paymentID)
          pageToken = page.nextPageToken
          if firstToken.isEmpty { firstToken = pageToken }
        } while !pageToken.isEmpty
        #expect(seen.count == 25)
        #expect(Set(seen).count == 25)
        #expect(Set(created).isSubset(of: Set(seen)))

        let failed = try await payments.listPayments(
          .with { $0.statuses = [.failed] }, metadata: TestServer.bearer(token))
        #expect(failed.payments.count == 5 && failed.payments.allSatisfy { $0.status == .failed })

        func refusal(_ request: Tender_Payments_V1_ListPaymentsRequest, _ token: String) async -> (String?, String?) {
          do {
            _ = try await payments.listPayments(request, metadata: TestServer.bearer(token))
            return (nil, nil)
          } catch let error as RPCError {
            let info = try? error.unpackGoogleRPCStatus()?.details.compactMap(\.errorInfo).first
            return (info?.reason, info?.metadata["field"])
          } catch {
            return ("\(error)", nil)
          }
        }
        var forged = Array(firstToken)
        forged[3] = forged[3] == "A" ? "B" : "A"
        #expect(await refusal(.with { $0.pageToken = String(forged) }, token) == ("PAGE_TOKEN_INVALID", "page_token"))
        #expect(
          await refusal(
            .with {
              $0.pageToken = firstToken
              $0.statuses = [.failed]
            }, token) == ("PAGE_TOKEN_INVALID", "page_token"))
        #expect(await refusal(.with { $0.pageToken = firstToken }, other) == ("PAGE_TOKEN_INVALID", "page_token"))
        #expect(await refusal(.with { $0.pageSize = 101 }, token) == ("FIELD_INVALID", "page_size"))
        #expect(await refusal(.with { $0.statuses = [.unspecified] }, token) == ("FIELD_INVALID", "statuses[0]"))
        let foreign = try await payments.listPayments(.init(), metadata: TestServer.bearer(other))
        #expect(foreign.payments.isEmpty)
      }
    }
  }
}
