import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import GRPCProtobuf
import Logging
import PostgresNIO
import SwiftProtobuf
import TenderAPI
import TenderProviderSim
import TenderServer
import TenderDevSupport
import TenderTesting
import Testing

/// `tender serve` processes killed with SIGKILL in the middle of a payment or a refund, then
/// started again: a retry with the same key or the completer must finish the operation exactly
/// once, and the provider must have seen exactly one charge or refund.
@Suite("Crashes between the phases of a payment or a refund")
struct CrashTests {
  enum Crash: String, CaseIterable, Sendable {
    /// The key is claimed and the PROCESSING payment row exists (one statement, with the provider
    /// call's record); the provider was not called.
    case paymentCreated = "create_payment.payment_created"
    /// The provider charged; Tender had not recorded it.
    case paymentAnswered = "create_payment.provider_answered"
    /// The process is killed from outside while the provider is still working on the charge.
    case paymentKilledMidCall = "killed during the provider call"
    /// The provider could not be reached at all: the payment FAILED and the key was freed (one
    /// transaction); the caller was not told.
    case paymentFailedForSure = "create_payment.failed_for_sure"
    /// The key is claimed, the PENDING refund row exists with its amount reserved and the provider
    /// call's record (one statement); the provider was not called.
    case refundCreated = "create_refund.refund_created"
    /// The provider refunded; Tender had not recorded it.
    case refundAnswered = "create_refund.provider_answered"
    /// The provider could not be reached: the refund FAILED, its amount released and the key freed.
    case refundFailedForSure = "create_refund.failed_for_sure"
    /// A capture's key is claimed; nothing else happened.
    case captureClaimed = "capture_payment.claimed"
    /// The capture's provider call is recorded, not made yet.
    case captureCallRecorded = "capture_payment.call_recorded"
    /// The provider captured; Tender had not recorded it.
    case captureAnswered = "capture_payment.provider_answered"

    var isRefund: Bool { self.rawValue.hasPrefix("create_refund") }
    var isCapture: Bool { self.rawValue.hasPrefix("capture_payment") }
    var isPayment: Bool { !self.isRefund && !self.isCapture }
    /// The provider refuses connections during the first process's call.
    var providerDown: Bool { self.rawValue.hasSuffix("failed_for_sure") }

    /// The recovery point the dead process leaves (none: the key was freed).
    var leftPoint: [String] {
      switch self {
      case .paymentCreated, .paymentAnswered, .paymentKilledMidCall: return ["payment_created"]
      case .refundCreated, .refundAnswered: return ["refund_created"]
      case .captureClaimed, .captureCallRecorded, .captureAnswered: return ["started"]
      case .paymentFailedForSure, .refundFailedForSure: return []
      }
    }
  }

  /// One database, Redis and provider simulator that outlive the `tender` processes.
  struct World {
    let certificates: TestCertificates
    let database: String
    let simulator: ProviderSimulator
    let simulatorPort: Int
    let clientID: String
    let clientSecret: String

    func start(crashAt: String?, providerTimeout: String = "1s", lock: String = "5s") async throws -> RunningTender {
      try await RunningTender(
        [
          "serve", "--grpc-address", "127.0.0.1:0", "--http-address", "127.0.0.1:0",
          "--tls-cert", self.certificates.serverCertificatePath, "--tls-key", self.certificates.serverKeyPath,
          "--database-url", self.database, "--redis-url", try await TestRedis.sharedServer().url,
          "--redis-key-prefix", "crash-\(UUID().uuidString.prefix(8)):",
          "--key-encryption-key", TestServer.keyEncryptionKey,
          "--provider-url", "http://127.0.0.1:\(self.simulatorPort)", "--provider-api-key", "sk_test_tender",
          "--provider-timeout", providerTimeout, "--provider-attempts", "2", "--provider-max-backoff", "200ms",
          "--idempotency-lock", lock, "--completer-interval", "200ms", "--webhook-secrets",
          "stripe=\(TestServer.webhookSecret)",
          "--rate-limit", "1000/s,burst=1000",
        ],
        environment: crashAt.map { ["TENDER_CRASH_AT": $0] } ?? [:]
      )
    }

    func withClient<Result: Sendable>(
      _ tender: RunningTender, _ body: (GRPCClient<HTTP2ClientTransport.Posix>, String) async throws -> Result
    ) async throws -> Result {
      var config = HTTP2ClientTransport.Posix.Config.defaults
      config.backoff.initial = .milliseconds(50)
      config.backoff.max = .milliseconds(200)
      let transport = try HTTP2ClientTransport.Posix(
        target: .ipv4(address: "127.0.0.1", port: tender.port),
        transportSecurity: .tls {
          $0.trustRoots = .certificates([.bytes(Array(self.certificates.authority.certificatePEM.utf8), format: .pem)])
        },
        config: config
      )
      do {
        return try await withGRPCClient(transport: transport) { client in
          let token = try await Tender_Auth_V1_AuthService.Client(wrapping: client).issueToken(
            .with {
              $0.clientID = self.clientID
              $0.clientSecret = self.clientSecret
            }
          ).accessToken
          return try await body(client, token)
        }
      } catch {
        // What the server said about it (a failure the process logged but the client only saw as
        // a status, e.g. UNKNOWN for an error no layer mapped).
        Issue.record("\(error) from the server on port \(tender.port); its log:\n\(tender.log)")
        throw error
      }
    }
  }

  /// How a world's database, merchant and API client come to be.
  enum Setup {
    /// Copied from the migrated template, the client made through the registry in this process.
    case direct
    /// An empty database that `tender migrate`, `tender merchant create` and `tender client
    /// create` prepare, as an operator would.
    case operatorCLI
  }

  static let scopes = ["payments:write", "payments:read", "refunds:write", "refunds:read"]

  static func withWorld<Result: Sendable>(
    setup: Setup = .direct, _ body: (World) async throws -> Result
  ) async throws -> Result {
    let certificates = try TestCertificates.make()
    defer { try? FileManager.default.removeItem(at: certificates.directory) }
    let database = try await TestPostgres.makeDatabase(empty: setup == .operatorCLI)
    var logger = Logger(label: "tender.test.sim")
    logger.logLevel = .critical
    return try await ProviderSimulator.runInBackground(configuration: .init(), logger: logger) {
      simulator, port in
      let (clientID, clientSecret) =
        switch setup {
        case .direct:
          try await TestPostgres.makeClient(database: database, merchantID: TestServer.merchantID, scopes: Self.scopes)
        case .operatorCLI:
          try await Self.prepareByCLI(database)
        }
      let world = World(
        certificates: certificates, database: database, simulator: simulator, simulatorPort: port,
        clientID: clientID, clientSecret: clientSecret
      )
      #expect(!world.clientID.isEmpty && !world.clientSecret.isEmpty)
      return try await body(world)
    }
  }

  /// Migrates `database` and creates the merchant and a client with the operator's commands;
  /// returns the client id and secret `tender client create` printed.
  static func prepareByCLI(_ database: String) async throws -> (String, String) {
    let migrate = try await TenderExecutable.run(["migrate", "--database-url", database])
    #expect(migrate.status == 0, "\(migrate.standardError)")
    let merchant = try await TenderExecutable.run([
      "merchant", "create", "--database-url", database, "--id", TestServer.merchantID, "--name", "Crash test",
    ])
    #expect(merchant.status == 0, "\(merchant.standardError)")
    let client = try await TenderExecutable.run([
      "client", "create", "--database-url", database, "--merchant", TestServer.merchantID,
      "--scopes", Self.scopes.joined(separator: ","),
      // The setting's floor, a sixteenth of production's scrypt cost: every token this world
      // issues checks it.
      "--client-secret-cost", "10",
    ])
    #expect(client.status == 0, "\(client.standardError)")
    func field(_ name: String) -> String {
      client.standardOutput.split(separator: "\n").first { $0.hasPrefix(name + ":") }
        .map { String($0.dropFirst(name.count + 1)).trimmingCharacters(in: .whitespaces) } ?? ""
    }
    return (field("client_id"), field("client_secret"))
  }

  static func keyed(_ token: String, _ key: String) -> Metadata {
    var metadata = TestServer.bearer(token)
    metadata.addString(key, forKey: "idempotency-key")
    return metadata
  }

  static func payment(
    _ method: String = "pm_card_visa", capture: Tender_Payments_V1_CaptureMethod = .automatic
  ) -> Tender_Payments_V1_CreatePaymentRequest {
    .with {
      $0.amount = .with {
        $0.amountMinor = 4200
        $0.currency = "EUR"
      }
      $0.paymentMethodToken = method
      $0.captureMethod = capture
    }
  }

  static func capture(_ paymentID: String) -> Tender_Payments_V1_CapturePaymentRequest {
    .with {
      $0.paymentID = paymentID
      $0.amountMinor = 700
    }
  }

  /// Sends `call` until it is no longer refused as in use (the dead process's lock, until it
  /// expires or the completer takes it over); returns its final answer.
  static func untilFinished<Output: Sendable>(_ call: () async throws -> Output) async throws -> Output {
    let deadline = ContinuousClock.now + .seconds(30)
    while true {
      do {
        return try await call()
      } catch let error as RPCError
        where error.code == .aborted && error.reason == "IDEMPOTENCY_KEY_IN_USE" && ContinuousClock.now < deadline
      {
        try await Task.sleep(for: .milliseconds(250))
      }
    }
  }

  static func rows<Row: PostgresDecodable & Sendable>(
    _ database: String, _ sql: String, as: Row.Type
  ) async throws -> [Row] {
    try await withPostgresClient(database) { client in
      try await client.query(PostgresQuery(unsafeSQL: sql)).decode(Row.self).reduce(into: [Row]()) { $0.append($1) }
    }
  }

  // Each case starts several `tender` processes; the cases run one after the other in four groups
  // (two of payments; two of refunds and captures), so a small machine is not swamped by all of
  // them at once, nor waits for them one by one.
  static let paymentCases = Crash.allCases.filter(\.isPayment)
  static let otherCases = Crash.allCases.filter { !$0.isPayment }

  @Test(
    "SIGKILL between phases of a payment, restart: the retry or the completer finishes exactly once; the provider saw one charge",
    .serialized, arguments: Self.paymentCases.enumerated().filter { $0.offset % 2 == 0 }.map(\.element))
  func paymentCrash(_ crash: Crash) async throws {
    try await self.crashAndRecover(crash)
  }

  @Test(
    "The same, the other payment phases",
    .serialized, arguments: Self.paymentCases.enumerated().filter { $0.offset % 2 == 1 }.map(\.element))
  func paymentCrashOthers(_ crash: Crash) async throws {
    try await self.crashAndRecover(crash)
  }

  @Test(
    "SIGKILL between phases of a refund or a capture, restart: finished exactly once; the provider saw one refund or capture",
    .serialized, arguments: Self.otherCases.enumerated().filter { $0.offset % 2 == 0 }.map(\.element))
  func refundOrCaptureCrash(_ crash: Crash) async throws {
    try await self.crashAndRecover(crash)
  }

  @Test(
    "The same, the other refund and capture phases",
    .serialized, arguments: Self.otherCases.enumerated().filter { $0.offset % 2 == 1 }.map(\.element))
  func refundOrCaptureCrashOthers(_ crash: Crash) async throws {
    try await self.crashAndRecover(crash)
  }

  func crashAndRecover(_ crash: Crash) async throws {
    try await Self.withWorld { world in
      var paymentID = ""
      if !crash.isPayment {
        // A captured (or, for a capture, authorized) payment first, from a process that will not crash.
        let healthy = try await world.start(crashAt: nil)
        paymentID = try await world.withClient(healthy) { client, token in
          let payments = Tender_Payments_V1_PaymentService.Client(wrapping: client)
          let request = Self.payment(capture: crash.isCapture ? .manual : .automatic)
          // On a loaded machine the provider's answer may miss the 1 s timeout: ask again with the
          // key until the payment is settled.
          var payment = try await Self.untilFinished {
            try await payments.createPayment(request, metadata: Self.keyed(token, "pay")).payment
          }
          let deadline = ContinuousClock.now + .seconds(30)
          while payment.status == .processing, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(250))
            payment = try await Self.untilFinished {
              try await payments.createPayment(request, metadata: Self.keyed(token, "pay")).payment
            }
          }
          return payment.paymentID
        }
        healthy.send(SIGTERM)
        _ = try await healthy.waitForExit(timeout: .seconds(20))
      }
      if crash.providerDown {
        // Down for the first process's whole call, and back (below) before the second one starts.
        await world.simulator.refuseConnections(for: .seconds(3600))
      }
      if crash == .paymentKilledMidCall {
        // The provider holds the charge until it is released, after the process is dead.
        await world.simulator.inject(.stall(seconds: 3600, .createPayment))
      }

      // The first process dies in the middle of the operation.
      let doomed = try await world.start(
        crashAt: crash == .paymentKilledMidCall ? nil : crash.rawValue,
        // Killed mid-call, the process waits for the provider as long as it holds the charge.
        providerTimeout: crash == .paymentKilledMidCall ? "30s" : "1s",
        lock: crash == .paymentKilledMidCall ? "2m" : "5s")
      let firstAnswer: RPCError? = try await world.withClient(doomed) { client, token in
        do {
          if crash.isCapture {
            _ = try await Tender_Payments_V1_PaymentService.Client(wrapping: client).capturePayment(
              Self.capture(paymentID), metadata: Self.keyed(token, "op"))
          } else if crash.isRefund {
            _ = try await Tender_Refunds_V1_RefundService.Client(wrapping: client).createRefund(
              .with {
                $0.paymentID = paymentID
                $0.amountMinor = 1500
              },
              metadata: Self.keyed(token, "op")
            )
          } else {
            async let call = Tender_Payments_V1_PaymentService.Client(wrapping: client).createPayment(
              Self.payment(), metadata: Self.keyed(token, "op"))
            if crash == .paymentKilledMidCall {
              // Killed while the provider works on the charge it has received.
              try await ExactlyOnceTests.untilStalled(world.simulator)
              doomed.send(SIGKILL)
            }
            _ = try await call
          }
          return nil
        } catch let error as RPCError {
          return error
        }
      }
      let status = try await doomed.waitForExit(timeout: .seconds(10))
      #expect(status == SIGKILL, "the first process was meant to die: \(doomed.log)")
      // The provider finishes what it was given, whether or not its caller is still there.
      await world.simulator.releaseStalls()
      #expect(firstAnswer?.code == .unavailable || firstAnswer?.code == .unknown, "\(String(describing: firstAnswer))")

      // What the dead process left behind.
      let left = try await Self.rows(
        world.database, "SELECT recovery_point FROM idempotency_keys WHERE idempotency_key = 'op'", as: String.self)
      #expect(left == crash.leftPoint)
      // Time passes for the dead process's keys: their locks run out, as they would 5 s on.
      _ = try await Self.rows(
        world.database,
        "UPDATE idempotency_keys SET locked_until = now() - interval '1 second' WHERE recovery_point <> 'finished' RETURNING 1",
        as: Int32.self
      )
      if crash.providerDown {
        // The provider is back before the next process starts.
        await world.simulator.acceptConnections()
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline, !world.simulator.acceptsConnections {
          try await Task.sleep(for: .milliseconds(200))
        }
      }

      // A new process; the caller retries with the same key until the dead one's lock is gone.
      let restarted = try await world.start(crashAt: nil)
      try await world.withClient(restarted) { client, token in
        if crash.isCapture {
          let payments = Tender_Payments_V1_PaymentService.Client(wrapping: client)
          let captured = try await Self.untilFinished {
            try await payments.capturePayment(Self.capture(paymentID), metadata: Self.keyed(token, "op")).payment
          }
          #expect(captured.status == .succeeded && captured.amountCapturedMinor == 700)
          let again = try await payments.capturePayment(Self.capture(paymentID), metadata: Self.keyed(token, "op"))
            .payment
          #expect(again == captured)
        } else if crash.isRefund {
          let refunds = Tender_Refunds_V1_RefundService.Client(wrapping: client)
          let ask = {
            try await Self.untilFinished {
              try await refunds.createRefund(
                .with {
                  $0.paymentID = paymentID
                  $0.amountMinor = 1500
                },
                metadata: Self.keyed(token, "op")
              ).refund
            }
          }
          var refund = try await ask()
          // A provider answer slower than the timeout leaves the refund PENDING; ask again.
          let deadline = ContinuousClock.now + .seconds(30)
          while refund.status == .pending && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(250))
            refund = try await ask()
          }
          #expect(refund.status == .succeeded && refund.amount.amountMinor == 1500)
          let payment = try await Tender_Payments_V1_PaymentService.Client(wrapping: client).getPayment(
            .with { $0.paymentID = paymentID }, metadata: TestServer.bearer(token)
          ).payment
          #expect(payment.amountRefundedMinor == 1500)
        } else {
          let payments = Tender_Payments_V1_PaymentService.Client(wrapping: client)
          let request = Self.payment()
          var payment = try await Self.untilFinished {
            try await payments.createPayment(request, metadata: Self.keyed(token, "op")).payment
          }
          // A provider still busy with the first attempt makes the answer PROCESSING; ask again.
          let deadline = ContinuousClock.now + .seconds(30)
          while payment.status == .processing && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(250))
            payment = try await Self.untilFinished {
              try await payments.createPayment(request, metadata: Self.keyed(token, "op")).payment
            }
          }
          #expect(payment.status == .succeeded && payment.amountCapturedMinor == 4200)
          // Asked once more: the stored answer, not a new payment.
          let again = try await payments.createPayment(request, metadata: Self.keyed(token, "op")).payment
          #expect(again.paymentID == payment.paymentID)
        }
      }
      restarted.send(SIGTERM)
      _ = try await restarted.waitForExit(timeout: .seconds(20))

      let requests = await world.simulator.requests()
      if crash.isCapture {
        #expect(requests.filter { $0.outcome == "captured" }.count == 1)
        #expect(try await Self.rows(world.database, "SELECT status FROM payments", as: String.self) == ["succeeded"])
        let events = try await Self.rows(
          world.database, "SELECT type FROM payment_events ORDER BY event_id", as: String.self)
        #expect(events == ["payment_created", "payment_requires_capture", "payment_succeeded"])
      } else if crash.isRefund {
        #expect(requests.filter { $0.path == "/v1/refunds" && $0.outcome == "refunded" }.count == 1)
        let statuses = try await Self.rows(
          world.database, "SELECT status FROM refunds ORDER BY status", as: String.self)
        let events = try await Self.rows(
          world.database, "SELECT type FROM payment_events WHERE refund_id IS NOT NULL ORDER BY event_id",
          as: String.self)
        if crash.providerDown {
          // The first refund failed for sure (nothing reached the provider) and released its amount.
          #expect(statuses == ["failed", "succeeded"])
          #expect(events == ["refund_created", "refund_failed", "refund_created", "refund_succeeded"])
        } else {
          #expect(statuses == ["succeeded"])
          #expect(events == ["refund_created", "refund_succeeded"])
        }
        #expect(try await Self.rows(world.database, "SELECT refunded_minor FROM payments", as: Int64.self) == [1500])
      } else {
        #expect(requests.filter { $0.path == "/v1/payment_intents" && $0.outcome == "created" }.count == 1)
        let statuses = try await Self.rows(
          world.database, "SELECT status FROM payments ORDER BY status", as: String.self)
        let events = try await Self.rows(
          world.database, "SELECT type FROM payment_events ORDER BY event_id", as: String.self)
        if crash.providerDown {
          // The first payment failed for sure (nothing reached the provider); the retry is a new one.
          #expect(statuses == ["failed", "succeeded"])
          #expect(events == ["payment_created", "payment_failed", "payment_created", "payment_succeeded"])
        } else {
          #expect(statuses == ["succeeded"])
          #expect(events == ["payment_created", "payment_succeeded"])
        }
      }
      #expect(
        try await Self.rows(
          world.database, "SELECT recovery_point FROM idempotency_keys WHERE idempotency_key = 'op'", as: String.self)
          == ["finished"])
    }
  }

  @Test(
    "SIGKILL after a webhook was stored (and acknowledged) but before it was applied: applied after the restart, once")
  func webhookStoredNotApplied() async throws {
    // This world is prepared by the operator's commands; the others copy the migrated template.
    try await Self.withWorld(setup: .operatorCLI) { world in
      let healthy = try await world.start(crashAt: nil)
      let payment = try await world.withClient(healthy) { client, token in
        try await Tender_Payments_V1_PaymentService.Client(wrapping: client).createPayment(
          Self.payment("pm_card_async"), metadata: Self.keyed(token, "async")
        ).payment
      }
      healthy.send(SIGTERM)
      _ = try await healthy.waitForExit(timeout: .seconds(20))
      #expect(payment.status == .processing)

      // The provider's event reaches a process that dies as soon as it would apply it.
      let doomed = try await world.start(crashAt: "webhook.apply")
      let bridge = try #require(await doomed.waitForBridge(timeout: .seconds(20)))
      let body = WebhookTests.event(
        id: "evt_crash", type: "payment_intent.succeeded",
        object: WebhookTests.intent(
          payment.providerPaymentID, status: "succeeded", tenderID: payment.paymentID, amount: 4200, received: 4200)
      )
      let first = try? await WebhookTests.post(
        port: bridge, ca: world.certificates, body: body, headers: WebhookTests.signed(body))
      _ = try await doomed.waitForExit(timeout: .seconds(10))
      // Stored: whether or not the 200 left before the process died, the event is in the inbox.
      #expect(try await Self.rows(world.database, "SELECT state FROM webhook_inbox", as: String.self) == ["received"])
      #expect(first == nil || first == 200)

      // The provider sends it again (it may not have seen the 200); a new process applies it once.
      let restarted = try await world.start(crashAt: nil)
      let restartedBridge = try #require(await restarted.waitForBridge(timeout: .seconds(20)))
      let again = try await WebhookTests.post(
        port: restartedBridge, ca: world.certificates, body: body, headers: WebhookTests.signed(body))
      #expect(again == 200)
      let outcome = try await SettlementTests.eventually("applied") { () -> String? in
        try await Self.rows(world.database, "SELECT coalesce(outcome, '') FROM webhook_inbox", as: String.self).first
          .flatMap { $0.isEmpty ? nil : $0 }
      }
      #expect(outcome == "applied")
      restarted.send(SIGTERM)
      _ = try await restarted.waitForExit(timeout: .seconds(20))
      #expect(try await Self.rows(world.database, "SELECT status FROM payments", as: String.self) == ["succeeded"])
      #expect(
        try await Self.rows(world.database, "SELECT type FROM payment_events ORDER BY event_id", as: String.self) == [
          "payment_created", "payment_succeeded",
        ])
      #expect(try await Self.rows(world.database, "SELECT count(*)::bigint FROM webhook_inbox", as: Int64.self) == [1])
    }
  }
}
