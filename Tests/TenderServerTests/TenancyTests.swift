import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import GRPCProtobuf
import SwiftProtobuf
import TenderAPI
import TenderProviderSim
import TenderTesting
import Testing

@Suite("Tenant isolation across every payment and refund RPC")
struct TenancyTests {
  @Test(
    "Another merchant's ids are NOT_FOUND in every RPC, its page tokens and cursors are refused, and nothing of theirs changes"
  )
  func everyRPC() async throws {
    try await TestServer.with { server in
      let owner = try await server.token(scopes: RefundsTests.scopes)
      let intruder = try await server.token(scopes: RefundsTests.scopes, merchantID: "mer_intruder")
      try await server.withClient { grpc in
        let payments = RefundsTests.Payments(wrapping: grpc)
        let refunds = RefundsTests.Refunds(wrapping: grpc)
        let held = try #require(
          await PaymentsTests.create(
            payments, PaymentsTests.request(700), metadata: PaymentsTests.metadata(owner, key: "held")
          ).payment)
        let captured = try await RefundsTests.captured(payments, 1000, token: owner, key: "captured")
        let refund = try #require(
          await RefundsTests.refund(refunds, captured.paymentID, 100, token: owner, key: "refund").refund)
        _ = try #require(
          await RefundsTests.refund(refunds, captured.paymentID, 100, token: owner, key: "refund2").refund)
        let ownerPage = try await payments.listPayments(.with { $0.pageSize = 1 }, metadata: TestServer.bearer(owner))
          .nextPageToken
        let ownerRefundPage = try await refunds.listRefunds(
          .with { $0.pageSize = 1 }, metadata: TestServer.bearer(owner))
        #expect(!ownerPage.isEmpty && !ownerRefundPage.nextPageToken.isEmpty)
        let providerCallsBefore = await server.simulator.requests().count

        let bearer = TestServer.bearer(intruder)
        func refusal(_ call: () async throws -> Void) async -> (RPCError.Code?, String?, String?) {
          do {
            try await call()
            return (nil, nil, nil)
          } catch let error as RPCError {
            let info = try? error.unpackGoogleRPCStatus()?.details.compactMap(\.errorInfo).first
            return (error.code, info?.reason, info?.metadata["field"])
          } catch {
            return (.unknown, "\(error)", nil)
          }
        }
        let cases: [(String, (RPCError.Code?, String?, String?), (RPCError.Code, String, String))] = [
          (
            "GetPayment",
            await refusal {
              _ = try await payments.getPayment(.with { $0.paymentID = held.paymentID }, metadata: bearer)
            }, (.notFound, "PAYMENT_NOT_FOUND", "payment_id")
          ),
          (
            "CapturePayment",
            await refusal {
              _ = try await payments.capturePayment(
                .with { $0.paymentID = held.paymentID }, metadata: PaymentsTests.metadata(intruder, key: "c"))
            }, (.notFound, "PAYMENT_NOT_FOUND", "payment_id")
          ),
          (
            "CancelPayment",
            await refusal {
              _ = try await payments.cancelPayment(
                .with { $0.paymentID = held.paymentID }, metadata: PaymentsTests.metadata(intruder, key: "x"))
            }, (.notFound, "PAYMENT_NOT_FOUND", "payment_id")
          ),
          (
            "CreateRefund",
            await refusal {
              _ = try await refunds.createRefund(
                .with {
                  $0.paymentID = captured.paymentID
                  $0.amountMinor = 1
                }, metadata: PaymentsTests.metadata(intruder, key: "r"))
            }, (.notFound, "PAYMENT_NOT_FOUND", "payment_id")
          ),
          (
            "GetRefund",
            await refusal {
              _ = try await refunds.getRefund(.with { $0.refundID = refund.refundID }, metadata: bearer)
            }, (.notFound, "REFUND_NOT_FOUND", "refund_id")
          ),
          (
            "ListRefunds of a payment",
            await refusal {
              _ = try await refunds.listRefunds(.with { $0.paymentID = captured.paymentID }, metadata: bearer)
            }, (.notFound, "PAYMENT_NOT_FOUND", "payment_id")
          ),
          (
            "ListPayments with the owner's page token",
            await refusal {
              _ = try await payments.listPayments(
                .with {
                  $0.pageSize = 1
                  $0.pageToken = ownerPage
                }, metadata: bearer)
            }, (.invalidArgument, "PAGE_TOKEN_INVALID", "page_token")
          ),
          (
            "ListRefunds with the owner's page token",
            await refusal {
              _ = try await refunds.listRefunds(
                .with {
                  $0.pageSize = 1
                  $0.pageToken = ownerRefundPage.nextPageToken
                }, metadata: bearer)
            }, (.invalidArgument, "PAGE_TOKEN_INVALID", "page_token")
          ),
        ]
        for (name, got, expected) in cases {
          #expect(got.0 == expected.0 && got.1 == expected.1 && got.2 == expected.2, "\(name): \(got)")
        }

        // The owner's watch cursor is refused to the intruder.
        var options = CallOptions.defaults
        options.timeout = .seconds(30)
        let watchCursor = try await payments.watchPayments(
          .init(), metadata: TestServer.bearer(owner), options: options
        ) { response in
          // A new event for the owner while the stream is open gives a cursor. The response's
          // headers have arrived, so the server has taken its starting position already.
          _ = await PaymentsTests.create(
            payments, PaymentsTests.request(50), metadata: PaymentsTests.metadata(owner, key: "watched"))
          for try await event in response.messages { return event.cursor }
          return ""
        }
        #expect(!watchCursor.isEmpty)
        let watched = await refusal {
          try await payments.watchPayments(.with { $0.cursor = watchCursor }, metadata: bearer, options: options) {
            response in
            for try await _ in response.messages { break }
          }
        }
        #expect(watched.0 == .invalidArgument && watched.1 == "CURSOR_INVALID" && watched.2 == "cursor", "\(watched)")

        // The intruder sees none of it and changed none of it.
        #expect(try await payments.listPayments(.init(), metadata: bearer).payments.isEmpty)
        #expect(try await refunds.listRefunds(.init(), metadata: bearer).refunds.isEmpty)
        let heldAfter = try await payments.getPayment(
          .with { $0.paymentID = held.paymentID }, metadata: TestServer.bearer(owner)
        ).payment
        #expect(heldAfter.status == .requiresCapture && heldAfter.amountCapturableMinor == 700)
        let capturedAfter = try await payments.getPayment(
          .with { $0.paymentID = captured.paymentID }, metadata: TestServer.bearer(owner)
        ).payment
        #expect(capturedAfter.amountRefundedMinor == 200)
        // Only the owner's watched payment reached the provider after the intrusion started.
        let calls = await server.simulator.requests().dropFirst(providerCallsBefore)
        #expect(calls.map(\.path) == ["/v1/payment_intents"])
      }
    }
  }
}
