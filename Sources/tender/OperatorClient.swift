import ArgumentParser
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import GRPCProtobuf
import SwiftProtobuf
import TenderAPI
import TenderCore
import TenderRPC

/// How the operator commands reach Tender: over TLS, with an access token from a client's
/// credentials.
struct OperatorOptions: ParsableArguments {
  @Option(help: "host:port of Tender's gRPC listener [$TENDER_TARGET] (default: localhost:8443)")
  var target: String?

  @Option(
    help:
      "JSON file with the client's id and secret (client_id or clientID, client_secret or clientSecret), such as tender dev's dev-client.json [$TENDER_CREDENTIALS] (default: .tender/dev/dev-client.json)"
  )
  var credentials: String?

  @Option(
    name: .customLong("ca-file"),
    help:
      "PEM roots that sign the server's certificate [$TENDER_CA_FILE] (default: tls/ca.pem beside the credentials file if it exists, else the system's)"
  )
  var caFile: String?

  @Option(name: .customLong("cert-file"), help: "PEM certificate chain of this client, for mTLS (with --key-file)")
  var certFile: String?

  @Option(name: .customLong("key-file"), help: "PEM private key of --cert-file")
  var keyFile: String?

  @Option(help: "Deadline of each call, in seconds.")
  var timeout: Double = 10

  @Flag(help: "Print JSON (Protobuf's JSON mapping) instead of tables; errors as JSON on standard error.")
  var json = false

  func validate() throws {
    if (self.certFile == nil) != (self.keyFile == nil) {
      throw ValidationError("--cert-file and --key-file go together")
    }
    guard self.timeout > 0 else { throw ValidationError("--timeout must be positive") }
  }
}

/// A connected operator session: the generated clients and the caller's token.
struct OperatorSession: Sendable {
  let payments: Tender_Payments_V1_PaymentService.Client<HTTP2ClientTransport.Posix>
  let refunds: Tender_Refunds_V1_RefundService.Client<HTTP2ClientTransport.Posix>
  let token: String
  let options: CallOptions
  let json: Bool

  /// Authorization, and the idempotency key when given.
  func metadata(idempotencyKey: String? = nil) -> Metadata {
    var metadata: Metadata = ["authorization": "Bearer \(self.token)"]
    if let idempotencyKey { metadata.addString(idempotencyKey, forKey: "idempotency-key") }
    return metadata
  }

  /// A keyed call with its retries: UNAVAILABLE, DEADLINE_EXCEEDED and ABORTED
  /// IDEMPOTENCY_KEY_IN_USE are tried again, up to 5 attempts, with the same key.
  func keyed<Response: Sendable>(
    _ key: String, _ call: @Sendable (Metadata) async throws -> Response
  ) async throws -> Response {
    var attempt = 0
    while true {
      attempt += 1
      do {
        return try await call(self.metadata(idempotencyKey: key))
      } catch let error as RPCError where attempt < 5 && OperatorErrors.isRetryable(error) {
        try await Task.sleep(for: .milliseconds(Int.random(in: 0...(200 << (attempt - 1)))))
      }
    }
  }
}

enum OperatorConnection {
  /// Runs `body` with a session; any failure is printed (with its reason and field) and ends
  /// the command with the gRPC status code as exit status.
  static func run(
    _ options: OperatorOptions, _ body: @Sendable (OperatorSession) async throws -> Void
  ) async throws {
    let environment = ProcessInfo.processInfo.environment
    let credentialsPath = options.credentials ?? environment["TENDER_CREDENTIALS"] ?? ".tender/dev/dev-client.json"
    let (clientID, clientSecret) = try Self.readCredentials(credentialsPath)
    let beside = URL(fileURLWithPath: credentialsPath).deletingLastPathComponent().appendingPathComponent("tls/ca.pem")
      .path
    let caFile =
      options.caFile ?? environment["TENDER_CA_FILE"] ?? (FileManager.default.fileExists(atPath: beside) ? beside : nil)
    let target = options.target ?? environment["TENDER_TARGET"] ?? "localhost:8443"
    guard let colon = target.lastIndex(of: ":"), let port = Int(target[target.index(after: colon)...]),
      (1...65535).contains(port)
    else { throw ValidationError("--target must be host:port") }
    var host = String(target[..<colon])
    if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }

    func configure(_ tls: inout HTTP2ClientTransport.Posix.TransportSecurity.TLS) {
      if let caFile { tls.trustRoots = .certificates([.file(path: caFile, format: .pem)]) }
    }
    let security: HTTP2ClientTransport.Posix.TransportSecurity
    if let certFile = options.certFile, let keyFile = options.keyFile {
      security = .mTLS(
        certificateChain: [.file(path: certFile, format: .pem)], privateKey: .file(path: keyFile, format: .pem),
        configure: configure)
    } else {
      security = .tls(configure: configure)
    }
    let isAddress = host.contains(":") || host.allSatisfy { $0.isNumber || $0 == "." }
    let transport = try HTTP2ClientTransport.Posix(
      target: isAddress
        ? (host.contains(":") ? .ipv6(address: host, port: port) : .ipv4(address: host, port: port))
        : .dns(host: host, port: port),
      transportSecurity: security, config: .defaults)
    var callOptions = CallOptions.defaults
    callOptions.timeout = .milliseconds(Int64(options.timeout * 1000))
    let json = options.json
    do {
      try await withGRPCClient(transport: transport) { client in
        let auth = Tender_Auth_V1_AuthService.Client(wrapping: client)
        let token = try await auth.issueToken(
          .with {
            $0.clientID = clientID
            $0.clientSecret = clientSecret
          }, options: callOptions
        ).accessToken
        try await body(
          OperatorSession(
            payments: .init(wrapping: client), refunds: .init(wrapping: client), token: token,
            options: callOptions, json: json))
      }
    } catch let error as RPCError {
      OperatorErrors.print(error, json: json)
      throw ExitCode(Int32(error.code.rawValue))
    }
  }

  static func readCredentials(_ path: String) throws -> (String, String) {
    guard let data = FileManager.default.contents(atPath: path) else {
      throw ValidationError("cannot read the credentials file \(path) (--credentials or $TENDER_CREDENTIALS)")
    }
    let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:]
    guard let id = (object["client_id"] ?? object["clientID"]) as? String,
      let secret = (object["client_secret"] ?? object["clientSecret"]) as? String
    else {
      throw ValidationError("\(path) holds no client_id and client_secret")
    }
    return (id, secret)
  }
}

enum OperatorErrors {
  static func isRetryable(_ error: RPCError) -> Bool {
    switch error.code {
    case .unavailable, .deadlineExceeded: return true
    case .aborted: return error.errorInfo?.reason == "IDEMPOTENCY_KEY_IN_USE"
    default: return false
    }
  }

  /// `tender: FAILED_PRECONDITION REFUND_EXCEEDS_CAPTURED (field amount_minor): message`, or
  /// the same as a JSON object.
  static func print(_ error: RPCError, json: Bool) {
    let info = error.errorInfo
    let code = OperatorFormat.constant(error.code)
    if json {
      var object: [String: Any] = ["code": code, "message": error.message]
      if let info {
        object["reason"] = info.reason
        object["metadata"] = info.metadata
      }
      let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
      FileHandle.standardError.write(data + Data("\n".utf8))
      return
    }
    var line = "tender: \(code)"
    if let info { line += " \(info.reason)" }
    if let field = info?.metadata["field"] { line += " (field \(field))" }
    line += ": \(error.message)\n"
    FileHandle.standardError.write(Data(line.utf8))
  }
}

/// Tables and JSON.
enum OperatorFormat {
  /// An enum case or status code as its Protobuf constant's suffix: `requiresCapture` →
  /// `REQUIRES_CAPTURE`.
  static func constant(_ value: Any) -> String {
    var out = ""
    for character in String(describing: value) {
      if character.isUppercase, !out.isEmpty { out += "_" }
      out += character.uppercased()
    }
    return out
  }

  static func amount(_ minor: Int64, _ currency: String) -> String {
    guard let exponent = Currency(code: currency)?.exponent, exponent > 0 else { return "\(minor) \(currency)" }
    let scale = Int64(pow(10, Double(exponent)))
    let sign = minor < 0 ? "-" : ""
    let whole = abs(minor) / scale
    let fraction = String(abs(minor) % scale)
    return "\(sign)\(whole).\(String(repeating: "0", count: exponent - fraction.count))\(fraction) \(currency)"
  }

  /// `10.5` EUR → 1050; refuses more decimals than the currency has.
  static func minorUnits(_ text: String, currency: String) throws -> Int64 {
    guard let exponent = Currency(code: currency)?.exponent else {
      throw ValidationError("\(currency) is not a currency Tender accepts")
    }
    let parts = text.split(separator: ".", omittingEmptySubsequences: false)
    guard parts.count <= 2, let whole = Int64(parts[0]), whole >= 0,
      parts.count == 1 || (parts[1].count <= exponent && parts[1].allSatisfy(\.isNumber) && !parts[1].isEmpty)
    else {
      throw ValidationError(
        "amount '\(text)' must be a positive number with at most \(exponent) decimals for \(currency)")
    }
    let fraction = parts.count == 2 ? String(parts[1]) : ""
    let padded = fraction + String(repeating: "0", count: exponent - fraction.count)
    return whole * Int64(pow(10, Double(exponent))) + (Int64(padded) ?? 0)
  }

  static func time(_ stamp: Google_Protobuf_Timestamp) -> String {
    stamp.seconds == 0 ? "-" : ISO8601DateFormatter().string(from: stamp.date)
  }

  static func json(_ message: some SwiftProtobuf.Message) throws -> String {
    var options = JSONEncodingOptions()
    options.preserveProtoFieldNames = true
    return try message.jsonString(options: options)
  }

  /// Columns padded to their widest cell.
  static func table(_ header: [String], _ rows: [[String]]) -> String {
    let all = [header] + rows
    let widths = header.indices.map { column in all.map { $0[column].count }.max() ?? 0 }
    return all.map { row in
      row.enumerated().map { index, cell in
        index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
      }.joined(separator: "  ")
    }.joined(separator: "\n")
  }

  /// One row with the leading cells padded to `widths` (rows printed as they come).
  static func row(_ cells: [String], widths: [Int]) -> String {
    cells.enumerated().map { index, cell in
      index < widths.count ? cell.padding(toLength: max(widths[index], cell.count), withPad: " ", startingAt: 0) : cell
    }.joined(separator: "  ")
  }

  static func fields(_ pairs: [(String, String)]) -> String {
    let width = pairs.map(\.0.count).max() ?? 0
    return pairs.map { $0.0.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + $0.1 }
      .joined(separator: "\n")
  }

  static func payment(_ p: Tender_Payments_V1_Payment) -> String {
    let currency = p.amount.currency
    var pairs: [(String, String)] = [
      ("payment_id", p.paymentID), ("status", Self.constant(p.status)),
      ("amount", Self.amount(p.amount.amountMinor, currency)),
      ("capturable", Self.amount(p.amountCapturableMinor, currency)),
      ("captured", Self.amount(p.amountCapturedMinor, currency)),
      ("refunded", Self.amount(p.amountRefundedMinor, currency)),
      ("capture_method", Self.constant(p.captureMethod)),
    ]
    if p.failureReason != .unspecified {
      pairs.append(("failure", "\(Self.constant(p.failureReason)): \(p.failureMessage)"))
    }
    if !p.customerReference.isEmpty { pairs.append(("customer_reference", p.customerReference)) }
    if !p.description_p.isEmpty { pairs.append(("description", p.description_p)) }
    for (key, value) in p.metadata.sorted(by: { $0.key < $1.key }) { pairs.append(("metadata.\(key)", value)) }
    pairs += [("created", Self.time(p.createTime)), ("updated", Self.time(p.updateTime))]
    return Self.fields(pairs)
  }

  static func refund(_ r: Tender_Refunds_V1_Refund) -> String {
    var pairs: [(String, String)] = [
      ("refund_id", r.refundID), ("payment_id", r.paymentID), ("status", Self.constant(r.status)),
      ("amount", Self.amount(r.amount.amountMinor, r.amount.currency)),
    ]
    if !r.failureMessage.isEmpty { pairs.append(("failure", r.failureMessage)) }
    for (key, value) in r.metadata.sorted(by: { $0.key < $1.key }) { pairs.append(("metadata.\(key)", value)) }
    pairs += [("created", Self.time(r.createTime)), ("updated", Self.time(r.updateTime))]
    return Self.fields(pairs)
  }
}
