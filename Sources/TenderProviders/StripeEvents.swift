import Foundation
public import TenderCore

/// Stripe's webhook events, read into what Tender acts on: the payment intent or refund objects
/// they carry, decoded exactly as the connector decodes API answers.
public enum StripeEvents {
  public static func read(type: String, body: [UInt8]) -> ProviderEvent {
    guard let event = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any],
      let data = event["data"] as? [String: Any], let object = data["object"] as? [String: Any]
    else { return .other }
    switch type {
    case "payment_intent.succeeded", "payment_intent.payment_failed", "payment_intent.canceled",
      "payment_intent.amount_capturable_updated",
      "payment_intent.processing":
      guard let payment = try? StripeConnector.payment(status: 200, body: object) else { return .other }
      let metadata = object["metadata"] as? [String: Any]
      return .payment(payment, tenderPaymentID: (metadata?["tender_payment_id"] as? String).flatMap(PaymentID.init))
    case "refund.created", "refund.updated", "refund.failed":
      guard let refund = try? StripeConnector.refund(status: 200, body: object) else { return .other }
      return .refunds([refund])
    case "charge.refunded":
      let list = (object["refunds"] as? [String: Any])?["data"] as? [[String: Any]] ?? []
      return .refunds(list.compactMap { try? StripeConnector.refund(status: 200, body: $0) })
    default:
      return .other
    }
  }
}
