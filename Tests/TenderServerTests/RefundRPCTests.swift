import Foundation
import GRPCCore
import GRPCInProcessTransport
import GRPCProtobuf
import SwiftProtobuf
import TenderAPI
import TenderServer
import TenderTesting
import Testing

/// Refund RPC behaviour — validation and paging — over the in-process transport on in-memory
/// ports; RefundsTests keeps the races, the provider's failures and the completer on the real parts.
@Suite("Refund RPCs in process: validation, paging")
struct RefundRPCTests {
  typealias Payments = Tender_Payments_V1_PaymentService.Client<InProcessTransport.Client>
  typealias Refunds = Tender_Refunds_V1_RefundService.Client<InProcessTransport.Client>

  enum BadInput: String, CaseIterable, Sendable {
    case noPayment, notAPaymentID, negativeAmount, tooLarge, unknownReason, panInMetadata, oversizedMetadata

    func apply(_ r: inout Tender_Refunds_V1_CreateRefundRequest) {
      switch self {
      case .noPayment: r.paymentID = ""
      case .notAPaymentID: r.paymentID = "re_123"
      case .negativeAmount: r.amountMinor = -1
      case .tooLarge: r.amountMinor = 1_000_000_000_001
      case .unknownReason: r.reason = .UNRECOGNIZED(99)
      case .panInMetadata: r.metadata["note"] = "4000-0566-5566-5556"
      case .oversizedMetadata: for i in 0..<51 { r.metadata["k\(i)"] = "v" }
      }
    }

    var expected: (reason: String, field: String) {
      switch self {
      case .noPayment: return ("FIELD_REQUIRED", "payment_id")
      case .notAPaymentID: return ("FIELD_INVALID", "payment_id")
      case .negativeAmount, .tooLarge: return ("AMOUNT_INVALID", "amount_minor")
      case .unknownReason: return ("FIELD_INVALID", "reason")
      case .panInMetadata: return ("CARD_DATA_REJECTED", "metadata[note]")
      case .oversizedMetadata: return ("METADATA_TOO_LARGE", "metadata")
      }
    }
  }

  @Test("Bad refund input gets the reason and field, and writes nothing")
  func badInput() async throws {
    try await InProcessServer.with { server in
      let token = try await server.token(scopes: RefundsTests.scopes)
      try await server.withClient { grpc in
        let payment = try await RefundsTests.captured(Payments(wrapping: grpc), 1000, token: token, key: "pay")
        let refunds = Refunds(wrapping: grpc)
        for input in BadInput.allCases {
          let outcome = await RefundsTests.refund(
            refunds, payment.paymentID, 100, token: token, key: "bad-\(input.rawValue)"
          ) { input.apply(&$0) }
          #expect(outcome.error?.code == .invalidArgument, "\(input)")
          #expect(outcome.error?.reason == input.expected.reason, "\(input)")
          #expect(outcome.field == input.expected.field, "\(input)")
          #expect(outcome.error?.message.contains("5556") == false, "\(input)")
        }
        let keyless = await RefundsTests.refund(refunds, payment.paymentID, 100, token: token, key: nil)
        #expect(keyless.error?.reason == "IDEMPOTENCY_KEY_MISSING")
      }
      #expect(await server.database.count(.refunds) == 0)
      #expect(await server.database.count(idempotencyKeysOf: "CreateRefund") == 0)
      #expect(await server.database.allPayments().map(\.ledger.refundedMinorUnits) == [0])
      #expect(await server.provider.calls.filter { $0.hasPrefix("create_refund ") }.isEmpty)
    }
  }

  @Test(
    "ListRefunds pages newest first, exactly once each, of the merchant or of one payment; tokens cannot be forged or moved"
  )
  func listing() async throws {
    try await InProcessServer.with { server in
      let token = try await server.token(scopes: RefundsTests.scopes)
      let other = try await server.token(scopes: RefundsTests.scopes, merchantID: "mer_other")
      try await server.withClient { grpc in
        let payments = Payments(wrapping: grpc)
        let refunds = Refunds(wrapping: grpc)
        let a = try await RefundsTests.captured(payments, 5000, token: token, key: "a")
        let b = try await RefundsTests.captured(payments, 5000, token: token, key: "b")
        var created: [String] = []
        for index in 0..<12 {
          let outcome = await RefundsTests.refund(
            refunds, index % 3 == 0 ? b.paymentID : a.paymentID, 10, token: token, key: "l\(index)")
          created.append(try #require(outcome.refund, "\(outcome)").refundID)
        }
        func all(_ paymentID: String, as token: String) async throws -> [Tender_Refunds_V1_Refund] {
          var seen: [Tender_Refunds_V1_Refund] = []
          var pageToken = ""
          repeat {
            let page = try await refunds.listRefunds(
              .with {
                $0.paymentID = paymentID
                $0.pageSize = 5
                $0.pageToken = pageToken
              }, metadata: TestServer.bearer(token))
            #expect(page.refunds.count <= 5)
            seen += page.refunds
            pageToken = page.nextPageToken
          } while !pageToken.isEmpty
          return seen
        }
        let everything = try await all("", as: token)
        #expect(everything.map(\.refundID) == created.reversed())
        let ofB = try await all(b.paymentID, as: token)
        #expect(ofB.map(\.refundID) == created.enumerated().filter { $0.offset % 3 == 0 }.map(\.element).reversed())
        #expect(try await all("", as: other).isEmpty)

        func refusal(
          _ request: Tender_Refunds_V1_ListRefundsRequest, _ token: String
        ) async -> (RPCError.Code?, String?) {
          do {
            _ = try await refunds.listRefunds(request, metadata: TestServer.bearer(token))
            return (nil, nil)
          } catch let error as RPCError {
            return (error.code, error.reason)
          } catch {
            return (.unknown, "\(error)")
          }
        }
        let firstToken = try await refunds.listRefunds(.with { $0.pageSize = 5 }, metadata: TestServer.bearer(token))
          .nextPageToken
        var forged = Array(firstToken)
        forged[5] = forged[5] == "A" ? "B" : "A"
        #expect(
          await refusal(.with { $0.pageToken = String(forged) }, token) == (.invalidArgument, "PAGE_TOKEN_INVALID"))
        #expect(
          await refusal(
            .with {
              $0.pageToken = firstToken
              $0.paymentID = a.paymentID
            }, token) == (.invalidArgument, "PAGE_TOKEN_INVALID"))
        #expect(await refusal(.with { $0.pageToken = firstToken }, other) == (.invalidArgument, "PAGE_TOKEN_INVALID"))
        #expect(await refusal(.with { $0.paymentID = a.paymentID }, other) == (.notFound, "PAYMENT_NOT_FOUND"))
        #expect(await refusal(.with { $0.pageSize = -1 }, token) == (.invalidArgument, "FIELD_INVALID"))
        #expect(await refusal(.with { $0.paymentID = "pay_" }, token) == (.invalidArgument, "FIELD_INVALID"))
      }
    }
  }
}
