import AsyncHTTPClient
import Foundation
import Histogram
import NIOCore
import NIOHTTP1
import NIOSSL
import TenderBridge

/// Signed webhooks against Tender's bridge: `concurrency` senders POST unique, Stripe-signed
/// events back to back, each one verified and stored by Tender before its 200.
struct WebhookLoad: Sendable {
  let url: String
  let secret: [UInt8]
  let caPEM: String
  let concurrency: Int
  let run = UUID().uuidString.prefix(8)

  func phase(seconds: Int) async throws -> PhaseResult {
    var tls = TLSConfiguration.makeClientConfiguration()
    tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(self.caPEM.utf8)))
    var configuration = HTTPClient.Configuration()
    configuration.tlsConfiguration = tls
    configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = self.concurrency
    let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    let clock = ContinuousClock()
    let start = clock.now
    // Every phase's events are new ones (a repeated id would be a cheaper duplicate).
    let phase = UUID().uuidString.prefix(8)
    let end = start + .seconds(seconds)
    let secret = WebhookSecret(key: self.secret)
    do {
      var total = try await withThrowingTaskGroup(of: PhaseResult.self) { group in
        for worker in 0..<self.concurrency {
          group.addTask {
            var result = PhaseResult()
            var sequence = 0
            while clock.now < end {
              sequence += 1
              let body = Array(
                #"{"id":"evt_load_\#(self.run)_\#(phase)_\#(worker)_\#(sequence)","object":"event","type":"customer.created","data":{"object":{"id":"cus_load"}}}"#
                  .utf8)
              let timestamp = Int64(Date().timeIntervalSince1970)
              var request = HTTPClientRequest(url: self.url)
              request.method = .POST
              request.headers.add(name: "Content-Type", value: "application/json")
              request.headers.add(
                name: "Stripe-Signature",
                value: WebhookSignatures.stripeHeader(body: body, secret: secret, timestamp: timestamp))
              request.body = .bytes(ByteBuffer(bytes: body))
              let began = clock.now
              do {
                let response = try await client.execute(request, timeout: .seconds(30))
                _ = try await response.body.collect(upTo: 1 << 16)
                if response.status.code == 200 {
                  let elapsed = began.duration(to: clock.now)
                  _ = result.histogram.record(
                    UInt64(
                      max(
                        1, elapsed.components.seconds * 1_000_000 + elapsed.components.attoseconds / 1_000_000_000_000))
                  )
                } else {
                  result.errors["HTTP \(response.status.code)", default: 0] += 1
                }
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
      try await client.shutdown()
      return total
    } catch {
      try? await client.shutdown()
      throw error
    }
  }
}
