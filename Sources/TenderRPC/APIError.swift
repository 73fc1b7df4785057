public import GRPCCore
public import GRPCProtobuf
public import TenderCore

/// Errors as Tender's clients receive them: a status code, a message safe to show, and
/// `google.rpc.ErrorInfo` with a stable reason (plus `BadRequest` naming the field for invalid
/// arguments). Messages never contain secrets, tokens or card data.
public enum APIError {
  /// The `ErrorInfo.domain` of every Tender error.
  public static let domain = "tender.dev"

  public static func status(
    _ code: RPCError.Code, reason: String, message: String, metadata: [String: String] = [:],
    details: [ErrorDetails] = []
  ) -> GoogleRPCStatus {
    GoogleRPCStatus(
      code: code,
      message: message,
      details: [.errorInfo(.init(reason: reason, domain: Self.domain, metadata: metadata))] + details
    )
  }

  /// INVALID_ARGUMENT naming the offending field.
  public static func invalidArgument(field: String, reason: String, message: String) -> GoogleRPCStatus {
    self.status(
      .invalidArgument,
      reason: reason,
      message: message,
      metadata: ["field": field],
      details: [.badRequest(violations: [.init(field: field, description: message)])]
    )
  }

  /// A domain refusal as callers receive it.
  public static func domain(_ error: DomainError) -> GoogleRPCStatus {
    let code: RPCError.Code
    switch error.kind {
    case .invalidArgument: code = .invalidArgument
    case .failedPrecondition, .declined: code = .failedPrecondition
    case .notFound: code = .notFound
    case .aborted: code = .aborted
    }
    guard let field = error.field else { return self.status(code, reason: error.reason, message: error.message) }
    var details: [ErrorDetails] = []
    if code == .invalidArgument {
      details.append(.badRequest(violations: [.init(field: field, description: error.message)]))
    }
    return self.status(code, reason: error.reason, message: error.message, metadata: ["field": field], details: details)
  }
}

extension RPCError {
  /// The `ErrorInfo` of a Tender refusal (its reason and metadata), when the error carries one.
  public var errorInfo: ErrorDetails.ErrorInfo? {
    (try? self.unpackGoogleRPCStatus())?.details.compactMap(\.errorInfo).first
  }
}
