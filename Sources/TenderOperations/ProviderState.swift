public import TenderCore

/// The provider's view of a payment, applied to Tender's through the state machine, whoever
/// brings it (the answer to a call, the reconciler, a webhook). Out-of-order news never moves a
/// payment back.
public enum ProviderState {
  public static func apply(_ status: ProviderPayment.Status, to record: inout PaymentRecord) -> WebhookOutcome {
    let ledger = record.ledger
    do {
      switch (ledger.status, status) {
      case (.processing, .processing), (.requiresCapture, .requiresCapture), (.succeeded, .succeeded),
        (.canceled, .canceled), (.failed, .failed):
        return .already
      case (.processing, .requiresCapture):
        try record.ledger.providerAuthorized()
      case (.processing, .succeeded(let captured)):
        try record.ledger.providerAuthorized()
        if record.ledger.status == .requiresCapture { _ = try record.ledger.capture(captured) }
      case (.processing, .failed(let reason)):
        try record.ledger.providerFailed(reason)
      case (.processing, .canceled):
        try record.ledger.providerFailed(.providerError)
      case (.requiresCapture, .succeeded(let captured)):
        _ = try record.ledger.capture(captured)
      case (.requiresCapture, .canceled):
        try record.ledger.cancel()
      case (.requiresCapture, .failed):
        try record.ledger.providerFailed(.authorizationExpired)
      default:
        return .stale
      }
      return .applied
    } catch {
      // The provider reports something the ledger cannot take (an amount above the authorized
      // one): nothing changes, and the event is recorded as not applicable.
      record.ledger = ledger
      return .stale
    }
  }
}
