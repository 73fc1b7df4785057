import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import TenderProviderSim
import UnixSignals

/// `tender-provider-sim`: the payment-provider simulator Tender's dev mode and tests run.
@main
struct ProviderSim: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "tender-provider-sim",
    abstract: "Simulate the subset of Stripe's API Tender uses, with deterministic test payment methods."
  )

  @Option(help: "host:port to listen on (port 0 picks a free one).")
  var address: String = "127.0.0.1:12111"

  @Option(name: .customLong("api-key"), help: "The secret key callers must send as a bearer token.")
  var apiKey: String = "sk_test_tender"

  @Option(name: .customLong("slow-delay-ms"), help: "How long pm_card_slow takes to answer, in milliseconds.")
  var slowDelayMilliseconds: Int = 30_000

  @Option(
    name: .customLong("webhook-url"),
    help: "Where to send Stripe-signed webhooks (e.g. https://127.0.0.1:8080/webhooks/stripe).")
  var webhookURL: String?

  @Option(name: .customLong("webhook-secret"), help: "The webhook endpoint's signing secret.")
  var webhookSecret: String = "whsec_tender_simulator"

  @Option(name: .customLong("webhook-ca"), help: "PEM file of the CA to trust for an https webhook URL.")
  var webhookCA: String?

  @Option(name: .customLong("sign-webhook-body"), help: .hidden)
  var signWebhookBody: String?

  @Option(name: .customLong("timestamp"), help: .hidden)
  var timestamp: Int64?

  func run() async throws {
    if let path = self.signWebhookBody {
      // Prints the Stripe-Signature header the simulator would send for this body, so its signer
      // can be checked against Stripe's own library.
      let body = try Data(contentsOf: URL(fileURLWithPath: path))
      let header = ProviderSimulator.stripeSignature(
        body: Array(body), secret: self.webhookSecret, timestamp: self.timestamp ?? Int64(Date().timeIntervalSince1970))
      FileHandle.standardOutput.write(Data((header + "\n").utf8))
      return
    }
    guard let colon = self.address.lastIndex(of: ":"), let port = Int(self.address[self.address.index(after: colon)...])
    else {
      throw ValidationError("--address must be host:port")
    }
    var logger = Logger(label: "tender-provider-sim")
    logger.logLevel = .notice
    let simulator = ProviderSimulator(
      configuration: .init(
        host: String(self.address[..<colon]), port: port, apiKey: self.apiKey,
        slowDelay: .milliseconds(self.slowDelayMilliseconds),
        webhookURL: self.webhookURL, webhookSecret: self.webhookSecret,
        webhookTrustRoots: try self.webhookCA.map { Array(try Data(contentsOf: URL(fileURLWithPath: $0))) }
      ),
      logger: logger,
      onListening: { port in
        FileHandle.standardOutput.write(Data("tender-provider-sim listening on port \(port)\n".utf8))
      }
    )
    let group = ServiceGroup(services: [simulator], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
    try await group.run()
  }
}
