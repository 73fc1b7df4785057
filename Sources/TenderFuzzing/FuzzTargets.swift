import Foundation
public import GRPCCore
public import GRPCInProcessTransport
import GRPCProtobuf
import Crypto
import Synchronization
import SwiftProtobuf
import TenderAPI
import TenderBridge
import TenderCore
import TenderRPC
public import TenderServer
public import TenderTesting

/// What the fuzzers feed bytes to. Each target states the properties every input must keep; a
/// broken one is a `FuzzFinding` (libFuzzer stops on it as on a crash; the corpus tests fail).
public enum FuzzTarget: String, CaseIterable, Sendable {
  /// Every unary RPC of the policy table, its message from the input (the server's own decoder,
  /// validation and handler), with or without a token, with the input's idempotency key or a
  /// fresh one: every refusal is a precise status with `ErrorInfo` (and the field, for
  /// INVALID_ARGUMENT), never UNKNOWN or INTERNAL, never echoes card data, and an invalid
  /// argument changes nothing.
  case requests
  /// The input as a bearer token (and as a raw `authorization` value) on an RPC, and as the
  /// token IntrospectToken looks at: always UNAUTHENTICATED with a reason, or "not active".
  case accessTokens = "access-tokens"
  /// The input as a page token and a watch cursor, opened directly and through ListPayments,
  /// ListRefunds and WatchPayments: never opens, always INVALID_ARGUMENT naming the field; a
  /// token sealed from the input's cursor opens to that cursor and to nothing else.
  case pageTokens = "page-tokens"
  /// The input as a `Stripe-Signature` header or Standard Webhooks headers over a body: never
  /// verifies with a secret it was not signed with; the header made for that body verifies.
  case webhookSignatures = "webhook-signatures"
}

/// A property an input broke.
public struct FuzzFinding: Error, CustomStringConvertible {
  public let target: FuzzTarget
  public let description: String

  init(_ target: FuzzTarget, _ description: String) {
    self.target = target
    self.description = "\(target.rawValue): \(description)"
  }
}

/// The fuzz targets over one in-process server (in-memory ports) and its client.
public final class Fuzzing: Sendable {
  let server: InProcessServer
  let client: GRPCClient<InProcessTransport.Client>
  /// A token with every scope a merchant's client can hold, one with read scopes only, and one
  /// of another merchant.
  let writer: String
  let reader: String
  let stranger: String
  let pageTokens = PageTokens(key: SymmetricKey(size: .bits256))
  let webhookSecret = WebhookSecret.stripe("whsec_tender_fuzz")

  static let unary = MethodPolicies.all.filter { $0.kind == .unary }
  static let everyScope = Array(Set(MethodPolicies.all.compactMap(\.requiredScope))).sorted()

  private init(server: InProcessServer, client: GRPCClient<InProcessTransport.Client>, tokens: [String]) {
    self.server = server
    self.client = client
    (self.writer, self.reader, self.stranger) = (tokens[0], tokens[1], tokens[2])
  }

  /// Settings for a server that a fuzzer may call as fast as it can.
  public static func configure(_ flags: inout [Setting: String]) {
    flags[.rateLimit] = "1000000/s,burst=1000000"
    flags[.issueTokenRateLimit] = "1000000/s,burst=1000000"
  }

  public static func prepare(
    server: InProcessServer, client: GRPCClient<InProcessTransport.Client>
  ) async throws -> Fuzzing {
    let readScopes = Self.everyScope.filter { $0.hasSuffix(":read") }
    let tokens = [
      try await server.token(scopes: Self.everyScope),
      try await server.token(scopes: readScopes),
      try await server.token(scopes: Self.everyScope, merchantID: "mer_fuzzother"),
    ]
    return Fuzzing(server: server, client: client, tokens: tokens)
  }

  public func run(_ target: FuzzTarget, _ input: [UInt8]) async throws(FuzzFinding) {
    switch target {
    case .requests: try await self.request(input)
    case .accessTokens: try await self.accessToken(input)
    case .pageTokens: try await self.pageToken(input)
    case .webhookSignatures: try self.webhookSignature(input)
    }
  }

  // MARK: requests

  /// Input: a byte choosing the RPC, a byte of flags (bit 0: the idempotency key is the input's,
  /// length-prefixed by the next byte; bits 1–2: the writer's token, the reader's, another
  /// merchant's, none), then the message.
  func request(_ input: [UInt8]) async throws(FuzzFinding) {
    guard input.count >= 2 else { return }
    let policy = Self.unary[Int(input[0]) % Self.unary.count]
    let flags = input[1]
    var message = input.dropFirst(2)
    var metadata: Metadata = [:]
    if flags & 1 != 0, let length = message.first {
      let key = message.dropFirst().prefix(Int(length))
      metadata.addString(String(decoding: key, as: UTF8.self), forKey: "idempotency-key")
      message = message.dropFirst(1 + key.count)
    } else if policy.idempotency == .required {
      metadata.addString(UUID().uuidString.lowercased(), forKey: "idempotency-key")
    }
    switch (flags >> 1) & 3 {
    case 0: metadata.addString("Bearer \(self.writer)", forKey: "authorization")
    case 1: metadata.addString("Bearer \(self.reader)", forKey: "authorization")
    case 2: metadata.addString("Bearer \(self.stranger)", forKey: "authorization")
    default: break
    }
    let before = await self.rows()
    let outcome = await self.call(policy.service, policy.method, Array(message), metadata)
    guard case .failure(let error) = outcome else { return }
    try self.checkRefusal(error, of: "\(policy.method)", target: .requests)
    if error.code == .invalidArgument {
      let after = await self.rows()
      guard after == before else {
        throw FuzzFinding(
          .requests, "\(policy.method) refused as INVALID_ARGUMENT but changed rows \(before) → \(after)")
      }
    }
  }

  // MARK: access tokens

  /// Input: a byte of flags (bit 0: the rest is the raw `authorization` value, not a bearer
  /// token), then the token.
  func accessToken(_ input: [UInt8]) async throws(FuzzFinding) {
    guard let flags = input.first else { return }
    let token = String(decoding: input.dropFirst(), as: UTF8.self)
    var metadata: Metadata = [:]
    metadata.addString(flags & 1 == 0 ? "Bearer \(token)" : token, forKey: "authorization")
    let get = Tender_Payments_V1_GetPaymentRequest.with { $0.paymentID = "pay_00000000000000000000000000" }
    switch await self.call("tender.payments.v1.PaymentService", "GetPayment", Self.bytes(get), metadata) {
    case .success:
      throw FuzzFinding(.accessTokens, "a forged token was accepted")
    case .failure(let error):
      try self.checkRefusal(error, of: "GetPayment", target: .accessTokens)
      guard error.code == .unauthenticated else {
        throw FuzzFinding(.accessTokens, "a forged token was answered \(error.code), not UNAUTHENTICATED")
      }
    }
    var introspector: Metadata = [:]
    introspector.addString("Bearer \(self.writer)", forKey: "authorization")
    let introspect = Tender_Auth_V1_IntrospectTokenRequest.with { $0.token = token }
    switch await self.call("tender.auth.v1.AuthService", "IntrospectToken", Self.bytes(introspect), introspector) {
    case .success(let bytes):
      guard let response = try? Tender_Auth_V1_IntrospectTokenResponse(serializedBytes: bytes) else {
        throw FuzzFinding(.accessTokens, "IntrospectToken answered bytes that do not decode")
      }
      guard !response.active else { throw FuzzFinding(.accessTokens, "a forged token introspects as active") }
    case .failure(let error):
      try self.checkRefusal(error, of: "IntrospectToken", target: .accessTokens)
      guard error.code == .invalidArgument else {
        throw FuzzFinding(.accessTokens, "IntrospectToken answered \(error.code) for a token it should call inactive")
      }
    }
  }

  // MARK: page tokens

  /// Input: the token (and, read as numbers, a cursor to seal).
  func pageToken(_ input: [UInt8]) async throws(FuzzFinding) {
    let text = String(decoding: input, as: UTF8.self)
    let merchant = MerchantID(unchecked: TestServer.merchantID)
    let filter = Array(input.prefix(32))
    if self.pageTokens.open(text, merchant: merchant, filter: filter) != nil {
      throw FuzzFinding(.pageTokens, "a page token not sealed here opened")
    }
    if self.pageTokens.openCursor(text, merchant: merchant) != nil {
      throw FuzzFinding(.pageTokens, "a watch cursor not sealed here opened")
    }
    // A cursor made of the input's bytes survives sealing, for its own merchant and filter only.
    var number: Int64 = 0
    for byte in input.prefix(8) { number = number << 8 | Int64(byte) }
    let cursor = PageCursor(
      createTimeMicroseconds: number, id: "pay_" + input.dropFirst(8).prefix(13).map { String($0, radix: 16) }.joined())
    let sealed = self.pageTokens.seal(cursor, merchant: merchant, filter: filter)
    guard self.pageTokens.open(sealed, merchant: merchant, filter: filter) == cursor else {
      throw FuzzFinding(.pageTokens, "a sealed page token did not open to its cursor")
    }
    guard self.pageTokens.open(sealed, merchant: MerchantID(unchecked: "mer_fuzzother"), filter: filter) == nil,
      self.pageTokens.open(sealed, merchant: merchant, filter: filter + [1]) == nil
    else { throw FuzzFinding(.pageTokens, "a page token opened for another merchant or filter") }
    let position = EventPosition(transaction: number & Int64.max, id: Int64(input.count))
    guard
      self.pageTokens.openCursor(self.pageTokens.sealCursor(position, merchant: merchant), merchant: merchant)
        == position
    else { throw FuzzFinding(.pageTokens, "a sealed watch cursor did not open to its position") }

    guard !text.isEmpty else { return }
    var metadata: Metadata = [:]
    metadata.addString("Bearer \(self.writer)", forKey: "authorization")
    let lists: [(String, String, [UInt8])] = [
      (
        "tender.payments.v1.PaymentService", "ListPayments",
        Self.bytes(Tender_Payments_V1_ListPaymentsRequest.with { $0.pageToken = text })
      ),
      (
        "tender.refunds.v1.RefundService", "ListRefunds",
        Self.bytes(Tender_Refunds_V1_ListRefundsRequest.with { $0.pageToken = text })
      ),
    ]
    for (service, method, message) in lists {
      try await self.expectInvalid(service, method, message, metadata, field: "page_token")
    }
    let watch = Tender_Payments_V1_WatchPaymentsRequest.with { $0.cursor = text }
    try await self.expectInvalid(
      "tender.payments.v1.PaymentService", "WatchPayments", Self.bytes(watch), metadata, field: "cursor")
  }

  private func expectInvalid(
    _ service: String, _ method: String, _ message: [UInt8], _ metadata: Metadata, field: String
  ) async throws(FuzzFinding) {
    guard case .failure(let error) = await self.call(service, method, message, metadata) else {
      throw FuzzFinding(.pageTokens, "\(method) accepted a \(field) not sealed here")
    }
    try self.checkRefusal(error, of: method, target: .pageTokens)
    let reported = error.errorInfo?.metadata["field"]
    guard error.code == .invalidArgument, reported == field else {
      throw FuzzFinding(
        .pageTokens, "\(method) answered \(error.code) (field \(reported ?? "none")) for a bad \(field)")
    }
  }

  // MARK: webhook signatures

  /// Input: a byte choosing the scheme (even: Stripe, odd: Standard Webhooks), then the
  /// header(s) and the body, separated by NUL bytes.
  func webhookSignature(_ input: [UInt8]) throws(FuzzFinding) {
    guard let scheme = input.first else { return }
    let parts = input.dropFirst().split(separator: 0, maxSplits: 3, omittingEmptySubsequences: false)
    let text = { (index: Int) -> String? in
      index < parts.count ? String(decoding: parts[index], as: UTF8.self) : nil
    }
    let body = Array(parts.last ?? [])
    let now = Date(timeIntervalSince1970: 1_800_000_000)
    if scheme % 2 == 0 {
      if case .success = WebhookSignatures.verifyStripe(
        header: text(0), body: body, secrets: [self.webhookSecret], tolerance: .seconds(300), now: now)
      {
        throw FuzzFinding(.webhookSignatures, "a Stripe-Signature header not made with the secret verified")
      }
      let header = WebhookSignatures.stripeHeader(body: body, secret: self.webhookSecret, timestamp: 1_800_000_000)
      guard
        case .success = WebhookSignatures.verifyStripe(
          header: header, body: body, secrets: [self.webhookSecret], tolerance: .seconds(300), now: now)
      else { throw FuzzFinding(.webhookSignatures, "the Stripe-Signature header made for the body did not verify") }
    } else {
      if case .success = WebhookSignatures.verifyStandard(
        id: text(0), timestamp: text(1), signatureHeader: text(2), body: body, secrets: [self.webhookSecret],
        tolerance: .seconds(300), now: now)
      {
        throw FuzzFinding(.webhookSignatures, "Standard Webhooks headers not made with the secret verified")
      }
      let id = text(0).flatMap { $0.isEmpty ? nil : $0 } ?? "msg_fuzz"
      let signature = WebhookSignatures.standardSignature(
        id: id, timestamp: 1_800_000_000, body: body, secret: self.webhookSecret)
      guard
        case .success = WebhookSignatures.verifyStandard(
          id: id, timestamp: "1800000000", signatureHeader: signature, body: body, secrets: [self.webhookSecret],
          tolerance: .seconds(300), now: now)
      else { throw FuzzFinding(.webhookSignatures, "the Standard Webhooks signature made for the body did not verify") }
    }
  }

  // MARK: Calls and checks

  /// Codes a refusal may have: anything else (UNKNOWN, INTERNAL, UNIMPLEMENTED, DATA_LOSS,
  /// UNAVAILABLE, …) means input reached somewhere it should not have.
  static let refusals: Set<RPCError.Code> = [
    .invalidArgument, .notFound, .alreadyExists, .permissionDenied, .unauthenticated, .failedPrecondition, .aborted,
    .outOfRange, .resourceExhausted,
  ]

  func checkRefusal(_ error: RPCError, of method: String, target: FuzzTarget) throws(FuzzFinding) {
    guard Self.refusals.contains(error.code) else {
      throw FuzzFinding(target, "\(method) answered \(error.code): \(error.message)")
    }
    guard let info = error.errorInfo,
      info.domain == APIError.domain, !info.reason.isEmpty
    else { throw FuzzFinding(target, "\(method) answered \(error.code) without ErrorInfo: \(error.message)") }
    // Bytes that are no message of the method's type have no field to name.
    if error.code == .invalidArgument, info.reason != "MESSAGE_MALFORMED", (info.metadata["field"] ?? "").isEmpty {
      throw FuzzFinding(target, "\(method) answered INVALID_ARGUMENT \(info.reason) without a field")
    }
    if CardNumbers.containsCardNumber(error.message)
      || info.metadata.values.contains(where: CardNumbers.containsCardNumber)
    {
      throw FuzzFinding(target, "\(method) answered \(info.reason) with a card number in it")
    }
  }

  /// One call with the message's bytes as they are; the answer's bytes, or the error.
  func call(
    _ service: String, _ method: String, _ message: [UInt8], _ metadata: Metadata
  ) async -> Result<[UInt8], RPCError> {
    let descriptor = MethodDescriptor(fullyQualifiedService: service, method: method)
    do {
      if method == "WatchPayments" {
        // A stream that would be served is ended by its deadline; one that is refused answers first.
        var options = CallOptions.defaults
        options.timeout = .seconds(5)
        return .success(
          try await self.client.serverStreaming(
            request: ClientRequest(message: message, metadata: metadata), descriptor: descriptor,
            serializer: RawMessageBytes(), deserializer: RawMessageBytes(), options: options
          ) { response in
            var first: [UInt8] = []
            for try await message in response.messages {
              first = message
              break
            }
            return first
          })
      }
      return .success(
        try await self.client.unary(
          request: ClientRequest(message: message, metadata: metadata), descriptor: descriptor,
          serializer: RawMessageBytes(), deserializer: RawMessageBytes(), options: .defaults
        ) { try $0.message })
    } catch let error as RPCError {
      return .failure(error)
    } catch {
      return .failure(RPCError(code: .unknown, message: "\(type(of: error))"))
    }
  }

  struct Rows: Equatable, CustomStringConvertible {
    var counts: [Int]
    var description: String { self.counts.map(String.init).joined(separator: "/") }
  }

  /// Payments, refunds, idempotency keys, events, provider calls and API clients.
  func rows() async -> Rows {
    let database = self.server.database
    var counts: [Int] = []
    for table: InMemoryDatabase.Table in [.payments, .refunds, .idempotencyKeys, .paymentEvents, .providerRequests] {
      counts.append(await database.count(table))
    }
    counts.append(await database.clientCount())
    return Rows(counts: counts)
  }

  static func bytes(_ message: some SwiftProtobuf.Message) -> [UInt8] {
    (try? message.serializedBytes()) ?? []
  }
}
