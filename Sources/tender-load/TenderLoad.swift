import ArgumentParser
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import GRPCProtobuf
import Histogram
import SwiftProtobuf
import Synchronization
import TenderAPI

/// Drives a running Tender with the generated Swift client: for each RPC asked for, `concurrency`
/// callers send back-to-back requests for `duration` seconds (after a warm-up whose results are
/// dropped) and the driver prints requests per second, latency percentiles from an HdrHistogram
/// and errors by status code.
@main
struct TenderLoad: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "tender-load",
    abstract:
      "Load driver for Tender's payment RPCs (CreatePayment with unique keys, CreateRefund, GetPayment, ListPayments)."
  )

  enum RPC: String, ExpressibleByArgument, CaseIterable {
    case create, refund, get, list
    /// ListPayments of failed payments only: the status filter's index path.
    case listFailed = "list-failed"

    /// The RPC's name in reports (one word: the benchmark reads it off the output).
    var method: String {
      switch self {
      case .create: "CreatePayment"
      case .refund: "CreateRefund"
      case .get: "GetPayment"
      case .list: "ListPayments"
      case .listFailed: "ListPayments[failed]"
      }
    }
  }

  @Option(help: "Tender's gRPC address, host:port.")
  var address = "127.0.0.1:8443"

  @Option(help: "PEM file of the CA that issued Tender's certificate.")
  var ca: String

  @Option(help: "JSON file with clientID and clientSecret (tender dev writes one: .tender/dev/dev-client.json).")
  var credentials: String

  @Option(parsing: .upToNextOption, help: "RPCs to measure, one after the other.")
  var rpcs: [RPC] = [.create, .refund, .get, .list]

  @Option(
    name: .customLong("payment-ids"),
    help: "GetPayment and CreateRefund use the payments listed in this file (one id a line) instead.")
  var paymentIDs: String?

  @Option(help: "Concurrent callers.")
  var concurrency = 64

  @Option(help: "HTTP/2 connections the callers share.")
  var connections = 4

  @Option(help: "Seconds measured per RPC.")
  var duration = 30

  @Option(help: "Seconds of warm-up per RPC, not measured.")
  var warmup = 3

  @Option(help: "Payment method token for CreatePayment (a simulator test method in dev).")
  var paymentMethod = "pm_card_visa"

  @Option(help: "GetPayment reads this payment rather than seeding 1,000 new ones to read.")
  var paymentID: String?

  @Option(
    help: "Instead of RPCs: POST Stripe-signed webhooks to this URL (e.g. https://127.0.0.1:8080/webhooks/stripe).")
  var webhooks: String?

  @Option(name: .customLong("webhook-secret"), help: "The webhook signing secret (tender dev's: whsec_tender_dev).")
  var webhookSecret = "whsec_tender_dev"

  @Flag(
    help: """
      Instead of measuring RPCs: callers create a payment, wait for its capture and refund part of it, \
      each operation retried with its own idempotency key until it succeeds; for --duration seconds or \
      until SIGTERM or SIGINT.
      """)
  var operations = false

  @Option(
    name: .customLong("h2load-request"),
    help: """
      Instead of measuring RPCs: seed one payment and write, into this folder, what h2load needs to send \
      GetPayment for it: `authorization` (the header's value, a fresh access token) and `get-payment.bin` \
      (the request as a gRPC message).
      """)
  var h2loadRequest: String?

  @Option(help: "Write each measured RPC's figures (calls, seconds, latency percentiles, errors) to this JSON file.")
  var json: String?

  @Option(help: "With --operations: write every call's status and every operation's ids to this JSON file.")
  var report: String?

  @Option(help: "With --operations: the amount of each payment, in EUR minor units.")
  var amountMinor: Int64 = 1000

  @Option(help: "With --operations: the amount refunded of each payment, in minor units.")
  var refundMinor: Int64 = 300

  mutating func run() async throws {
    guard self.concurrency > 0, self.connections > 0, self.duration > 0, self.warmup >= 0 else {
      throw ValidationError("concurrency, connections and duration must be positive")
    }
    let parts = self.address.split(separator: ":")
    guard parts.count == 2, let port = Int(parts[1]) else { throw ValidationError("--address must be host:port") }
    let host = String(parts[0])
    let caPEM = try String(contentsOfFile: self.ca, encoding: .utf8)
    if let url = self.webhooks {
      let load = WebhookLoad(
        url: url, secret: Array(self.webhookSecret.utf8), caPEM: caPEM, concurrency: self.concurrency)
      print(
        "tender-load: \(self.concurrency) webhook senders to \(url), \(self.duration) s after \(self.warmup) s warm-up")
      _ = try await load.phase(seconds: self.warmup)
      print(try await load.phase(seconds: self.duration).report(name: "Webhooks (verified and stored)"))
      return
    }
    let credentials =
      try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: self.credentials))) as? [String: Any]
    guard let clientID = credentials?["clientID"] as? String, let clientSecret = credentials?["clientSecret"] as? String
    else {
      throw ValidationError("\(self.credentials) has no clientID and clientSecret")
    }

    let clients = try (0..<self.connections).map { _ in
      GRPCClient(
        transport: try HTTP2ClientTransport.Posix(
          target: host.first?.isNumber == true ? .ipv4(address: host, port: port) : .dns(host: host, port: port),
          transportSecurity: .tls { $0.trustRoots = .certificates([.bytes(Array(caPEM.utf8), format: .pem)]) },
          config: .defaults
        )
      )
    }
    let settings = self
    try await withThrowingDiscardingTaskGroup { group in
      for client in clients { group.addTask { try await client.runConnections() } }
      defer { clients.forEach { $0.beginGracefulShutdown() } }

      let token = try await Tender_Auth_V1_AuthService.Client(wrapping: clients[0]).issueToken(
        .with {
          $0.clientID = clientID
          $0.clientSecret = clientSecret
          $0.scopes =
            settings.operations
            ? ["payments:read", "payments:write", "refunds:read", "refunds:write"]
            : ["payments:read", "payments:write", "refunds:write"]
        }
      ).accessToken
      var auth = Metadata()
      auth.addString("Bearer \(token)", forKey: "authorization")
      if settings.operations {
        try await settings.runOperations(clients: clients, auth: auth)
        return
      }
      let driver = Driver(
        clients: clients.map { Tender_Payments_V1_PaymentService.Client(wrapping: $0) },
        refunds: clients.map { Tender_Refunds_V1_RefundService.Client(wrapping: $0) }, auth: auth, settings: settings)
      if let folder = settings.h2loadRequest {
        var paymentID = settings.paymentID ?? ""
        if paymentID.isEmpty { paymentID = try await driver.seed(count: 1)[0] }
        let request =
          try Tender_Payments_V1_GetPaymentRequest.with { $0.paymentID = paymentID }.serializedBytes()
          as [UInt8]
        let length = UInt32(request.count)
        let message = [
          0, UInt8(length >> 24), UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF),
        ]
        let directory = URL(fileURLWithPath: folder)
        try Data(message + request).write(to: directory.appendingPathComponent("get-payment.bin"))
        try Data("Bearer \(token)".utf8).write(to: directory.appendingPathComponent("authorization"))
        say("tender-load: GetPayment of \(paymentID) written to \(folder) for h2load")
        return
      }

      say(
        "tender-load: \(settings.concurrency) callers over \(settings.connections) connections to \(settings.address), \(settings.duration) s per RPC after \(settings.warmup) s warm-up"
      )
      var paymentIDs: [String] =
        try settings.paymentIDs.map {
          try String(contentsOfFile: $0, encoding: .utf8).split(whereSeparator: \.isNewline).map(String.init)
        } ?? []
      var phases: [PhaseFigures] = []
      for rpc in settings.rpcs {
        if rpc == .get, paymentIDs.isEmpty, let given = settings.paymentID {
          paymentIDs = [given]
        } else if rpc != .create && paymentIDs.isEmpty {
          // Reads and refunds need payments (captured ones: automatic capture).
          paymentIDs = try await driver.seed(count: 1000)
        }
        let ids = paymentIDs
        _ = try await driver.run(rpc, seconds: settings.warmup, paymentIDs: ids)
        say("tender-load: measuring \(rpc.method)")
        let result = try await driver.run(rpc, seconds: settings.duration, paymentIDs: ids)
        say(result.report(rpc: rpc))
        phases.append(result.figures(rpc: rpc))
        if rpc == .create { paymentIDs = Array(result.created.prefix(10_000)) }
      }
      if let path = settings.json {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        try encoder.encode(phases).write(to: URL(fileURLWithPath: path))
      }
    }
  }
}

/// Writes `line` at once, unbuffered, so whoever reads the output (the benchmark) sees each phase
/// begin and end as it happens.
func say(_ line: String) {
  FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

/// One measured RPC's figures, as `--json` writes them.
struct PhaseFigures: Codable, Sendable {
  var rpc: String
  /// Calls answered OK, and all calls, in the measured seconds.
  var succeeded: Int
  var requests: Int
  var seconds: Double
  /// Latency of the OK calls, in milliseconds.
  var p50: Double
  var p90: Double
  var p99: Double
  var p999: Double
  var max: Double
  /// Failed calls by status code.
  var errors: [String: Int]
}

extension TenderLoad {
  func runOperations(clients: [GRPCClient<HTTP2ClientTransport.Posix>], auth: Metadata) async throws {
    let load = OperationsLoad(
      payments: clients.map { Tender_Payments_V1_PaymentService.Client(wrapping: $0) },
      refunds: clients.map { Tender_Refunds_V1_RefundService.Client(wrapping: $0) }, auth: auth,
      amountMinor: self.amountMinor, refundMinor: self.refundMinor, paymentMethod: self.paymentMethod)
    // SIGTERM and SIGINT stop the callers once their operations are done.
    let signals = [SIGTERM, SIGINT].map { number in
      signal(number, SIG_IGN)
      let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
      source.setEventHandler { load.stop() }
      source.activate()
      return source
    }
    defer { signals.forEach { $0.cancel() } }
    FileHandle.standardOutput.write(
      Data(
        "tender-load: \(self.concurrency) callers creating and refunding payments over \(self.connections) connections to \(self.address), for \(self.duration) s or until stopped\n"
          .utf8))
    let seconds = self.duration
    await withDiscardingTaskGroup { group in
      group.addTask {
        try? await Task.sleep(for: .seconds(seconds))
        load.stop()
      }
      await load.run(callers: self.concurrency)
      group.cancelAll()
    }
    let report = load.report.withLock { $0 }
    print(
      "tender-load: \(report.operations.count) operations; calls by status: \(report.codes.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")); \(report.unretryable.count) not retryable, \(report.abandoned.count) abandoned"
    )
    if let path = self.report {
      let encoder = JSONEncoder()
      encoder.outputFormatting = [.sortedKeys]
      try encoder.encode(report).write(to: URL(fileURLWithPath: path))
    }
  }
}

/// One measured phase: latencies in microseconds, errors by status code.
struct PhaseResult: Sendable {
  var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
  var errors: [String: Int] = [:]
  /// The first message of each status code in `errors`, to tell what went wrong.
  var examples: [String: String] = [:]
  var created: [String] = []
  var elapsed: Duration = .zero

  mutating func merge(_ other: PhaseResult) {
    self.histogram.add(other.histogram)
    self.errors.merge(other.errors, uniquingKeysWith: +)
    self.examples.merge(other.examples) { mine, _ in mine }
    self.created += other.created
  }

  func report(rpc: TenderLoad.RPC) -> String { self.report(name: rpc.method) }

  var seconds: Double { Double(self.elapsed.components.seconds) + Double(self.elapsed.components.attoseconds) / 1e18 }

  func figures(rpc: TenderLoad.RPC) -> PhaseFigures {
    func ms(_ percentile: Double) -> Double { Double(self.histogram.valueAtPercentile(percentile)) / 1000 }
    return PhaseFigures(
      rpc: rpc.method, succeeded: Int(self.histogram.totalCount),
      requests: Int(self.histogram.totalCount) + self.errors.values.reduce(0, +), seconds: self.seconds,
      p50: ms(50), p90: ms(90), p99: ms(99), p999: ms(99.9), max: Double(self.histogram.max) / 1000,
      errors: self.errors)
  }

  func report(name: String) -> String {
    let seconds = self.seconds
    let total = Int(self.histogram.totalCount) + self.errors.values.reduce(0, +)
    func ms(_ percentile: Double) -> String {
      String(format: "%.2f", Double(self.histogram.valueAtPercentile(percentile)) / 1000)
    }
    let errorText =
      self.errors.isEmpty
      ? "0" : self.errors.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
    let examples = self.examples.sorted { $0.key < $1.key }.map { "\n   \($0.key): \($0.value)" }.joined()
    return """
      == \(name): \(total) requests in \(String(format: "%.2f", seconds)) s = \(String(format: "%.2f", Double(total) / seconds)) req/s (\(String(format: "%.2f", Double(self.histogram.totalCount) / seconds)) OK/s)
         latency ms: p50 \(ms(50)) / p90 \(ms(90)) / p99 \(ms(99)) / p99.9 \(ms(99.9)) / max \(String(format: "%.2f", Double(self.histogram.max) / 1000)); errors: \(errorText)\(examples)
      """
  }
}

struct Driver: Sendable {
  let clients: [Tender_Payments_V1_PaymentService.Client<HTTP2ClientTransport.Posix>]
  let refunds: [Tender_Refunds_V1_RefundService.Client<HTTP2ClientTransport.Posix>]
  let auth: Metadata
  let concurrency: Int
  let paymentMethod: String
  let run = UUID().uuidString.prefix(8)

  init(
    clients: [Tender_Payments_V1_PaymentService.Client<HTTP2ClientTransport.Posix>],
    refunds: [Tender_Refunds_V1_RefundService.Client<HTTP2ClientTransport.Posix>], auth: Metadata,
    settings: TenderLoad
  ) {
    self.clients = clients
    self.refunds = refunds
    self.auth = auth
    self.concurrency = settings.concurrency
    self.paymentMethod = settings.paymentMethod
  }

  func createRequest() -> Tender_Payments_V1_CreatePaymentRequest {
    .with {
      $0.amount = .with {
        $0.amountMinor = Int64.random(in: 100...100_000)
        $0.currency = "EUR"
      }
      $0.captureMethod = .automatic
      $0.paymentMethodToken = self.paymentMethod
      $0.customerReference = "load-\(Int.random(in: 0..<1000))"
    }
  }

  func keyed(_ key: String) -> Metadata {
    var metadata = self.auth
    metadata.addString(key, forKey: "idempotency-key")
    return metadata
  }

  /// Creates `count` payments (with the configured concurrency) for the read phases.
  func seed(count: Int) async throws -> [String] {
    try await withThrowingTaskGroup(of: [String].self) { group in
      for worker in 0..<self.concurrency {
        group.addTask {
          var ids: [String] = []
          var index = worker
          while index < count {
            let client = self.clients[worker % self.clients.count]
            ids.append(
              try await client.createPayment(self.createRequest(), metadata: self.keyed("seed-\(self.run)-\(index)"))
                .payment.paymentID)
            index += self.concurrency
          }
          return ids
        }
      }
      return try await group.reduce(into: []) { $0 += $1 }
    }
  }

  func run(_ rpc: TenderLoad.RPC, seconds: Int, paymentIDs: [String]) async throws -> PhaseResult {
    let clock = ContinuousClock()
    let start = clock.now
    let end = start + .seconds(seconds)
    // The warm-up and the measured phase never share a key.
    let phase = UUID().uuidString.prefix(8)
    var total = try await withThrowingTaskGroup(of: PhaseResult.self) { group in
      for worker in 0..<self.concurrency {
        group.addTask {
          let client = self.clients[worker % self.clients.count]
          var result = PhaseResult()
          var sequence = 0
          while clock.now < end {
            sequence += 1
            let began = clock.now
            do {
              switch rpc {
              case .create:
                // Unique per run, caller and call; never a long run of digits (Tender refuses keys that look
                // like card numbers).
                let key = "load-\(self.run)-\(phase)-w\(worker)-c\(sequence)"
                let payment = try await client.createPayment(self.createRequest(), metadata: self.keyed(key)).payment
                if result.created.count < 200 { result.created.append(payment.paymentID) }
              case .refund:
                // One minor unit of a captured payment (each at least 100), under a unique key.
                let key = "load-\(self.run)-\(phase)-refund-w\(worker)-c\(sequence)"
                let refund = Tender_Refunds_V1_CreateRefundRequest.with {
                  $0.paymentID = paymentIDs.randomElement() ?? ""
                  $0.amountMinor = 1
                  $0.reason = .requestedByCustomer
                }
                _ = try await self.refunds[worker % self.refunds.count].createRefund(refund, metadata: self.keyed(key))
              case .get:
                _ = try await client.getPayment(
                  .with { $0.paymentID = paymentIDs.randomElement() ?? "" }, metadata: self.auth)
              case .list:
                _ = try await client.listPayments(.with { $0.pageSize = 20 }, metadata: self.auth)
              case .listFailed:
                _ = try await client.listPayments(
                  .with {
                    $0.pageSize = 20
                    $0.statuses = [.failed]
                  }, metadata: self.auth)
              }
              let elapsed = began.duration(to: clock.now)
              _ = result.histogram.record(
                UInt64(
                  max(1, elapsed.components.seconds * 1_000_000 + elapsed.components.attoseconds / 1_000_000_000_000)))
            } catch let error as RPCError {
              result.errors["\(error.code)", default: 0] += 1
              if result.examples["\(error.code)"] == nil { result.examples["\(error.code)"] = error.message }
            } catch {
              result.errors["\(type(of: error))", default: 0] += 1
            }
          }
          return result
        }
      }
      return try await group.reduce(into: PhaseResult()) { $0.merge($1) }
    }
    total.elapsed = start.duration(to: clock.now)
    return total
  }
}
