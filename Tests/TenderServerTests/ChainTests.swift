import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import GRPCProtobuf
import InMemoryTracing
import Logging
import Prometheus
import SwiftProtobuf
import TenderAuth
import TenderAPI
import TenderCore
import TenderRPC
import TenderRedis
import TenderServer
import TenderDevSupport
import TenderTesting
import Testing
import Tracing

/// An in-memory tracer that reads W3C `traceparent`, as the OTLP exporter's propagator does, so
/// tests can send the header real callers send.
struct W3CInMemoryTracer: Tracer {
  let base = InMemoryTracer()

  func startSpan<Instant: TracerInstant>(
    _ operationName: String,
    context: @autoclosure () -> ServiceContext,
    ofKind kind: SpanKind,
    at instant: @autoclosure () -> Instant,
    function: String,
    file fileID: String,
    line: UInt
  ) -> InMemorySpan {
    self.base.startSpan(
      operationName, context: context(), ofKind: kind, at: instant(), function: function, file: fileID, line: line)
  }

  func forceFlush() { self.base.forceFlush() }

  func inject<Carrier, Inject: Injector>(_ context: ServiceContext, into carrier: inout Carrier, using injector: Inject)
  where Inject.Carrier == Carrier {
    self.base.inject(context, into: &carrier, using: injector)
  }

  func extract<Carrier, Extract: Extractor>(
    _ carrier: Carrier, into context: inout ServiceContext, using extractor: Extract
  ) where Extract.Carrier == Carrier {
    guard let header = extractor.extract(key: "traceparent", from: carrier) else { return }
    let parts = header.split(separator: "-")
    guard parts.count == 4, parts[1].count == 32, parts[2].count == 16 else { return }
    context.inMemorySpanContext = InMemorySpanContext(
      traceID: String(parts[1]), spanID: String(parts[2]), parentSpanID: nil)
  }
}

@Suite("Interceptor chain: tracing, rate limits, order")
struct ChainTests {
  static let traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
  static let parentSpanID = "00f067aa0ba902b7"

  @Test(
    "An incoming traceparent parents the server span, which carries the RPC attributes; database spans are its children"
  )
  func tracing() async throws {
    let tracer = W3CInMemoryTracer()
    try await TestServer.with(tracer: tracer) { server in
      let token = try await server.token(scopes: ["tokens:introspect"])
      try await server.withClient { grpc in
        var metadata = TestServer.bearer(token)
        metadata.addString("00-\(Self.traceID)-\(Self.parentSpanID)-01", forKey: "traceparent")
        let auth = Tender_Auth_V1_AuthService.Client(wrapping: grpc)
        let answer = try await auth.introspectToken(.with { $0.token = token }, metadata: metadata)
        #expect(answer.active)
        // Refused by auth, and still traced (tracing is outermost).
        _ = await AuthTests.getPayment(grpc, token: nil)
      }
    }
    let spans = tracer.base.finishedSpans
    let rpc = try #require(spans.first { $0.operationName == "tender.auth.v1.AuthService/IntrospectToken" })
    #expect(rpc.kind == .server)
    #expect(rpc.traceID == Self.traceID)
    #expect(rpc.parentSpanID == Self.parentSpanID)
    #expect(rpc.attributes["rpc.system"]?.toSpanAttribute() == "grpc")
    #expect(rpc.attributes["rpc.service"]?.toSpanAttribute() == "tender.auth.v1.AuthService")
    #expect(rpc.attributes["rpc.method"]?.toSpanAttribute() == "IntrospectToken")
    #expect(rpc.attributes["rpc.grpc.status_code"]?.toSpanAttribute() == 0)
    #expect(rpc.attributes["tender.merchant_id"]?.toSpanAttribute() == .string(TestServer.merchantID))
    #expect(rpc.status == nil)

    let database = spans.filter { $0.operationName == "auth.token_standing" && $0.traceID == Self.traceID }
    #expect(!database.isEmpty)
    for span in database {
      #expect(span.parentSpanID == rpc.spanID)
      #expect(span.kind == .client)
      #expect(span.attributes["db.system"]?.toSpanAttribute() == "postgresql")
    }

    let refused = try #require(spans.first { $0.operationName == "tender.payments.v1.PaymentService/GetPayment" })
    #expect(refused.attributes["rpc.grpc.status_code"]?.toSpanAttribute() == 16)
    #expect(refused.attributes["tender.auth.failure"]?.toSpanAttribute() == "missing_token")
    // A client's mistake is not a server error.
    #expect(refused.status == nil)
    #expect(refused.parentSpanID == nil)
  }

  @Test("A burst of 30 concurrent calls over a limit of 10 lets exactly 10 through, with RetryInfo; the bucket expires")
  func burstOverLimit() async throws {
    try await TestServer.with(configure: { flags, _ in flags[.rateLimit] = "1/m,burst=10" }) { server in
      let client = try await server.makeClient(scopes: ["payments:read"])
      let token = try await server.application.authority.issue(
        clientID: client.clientID, secret: Secret(client.secret), requestedScopes: []
      ).token.value
      let codes = try await server.withClient { grpc in
        try await withThrowingTaskGroup(of: RPCError?.self) { group in
          for _ in 0..<30 {
            group.addTask { await AuthTests.getPayment(grpc, token: token) }
          }
          var errors: [RPCError?] = []
          for try await error in group { errors.append(error) }
          return errors
        }
      }
      #expect(
        codes.filter { $0?.code == .notFound }.count == 10,
        "\(codes.map { $0.map { "\($0.code) \($0.message)" } ?? "ok" })")
      let limited = codes.filter { $0?.code == .resourceExhausted }
      #expect(limited.count == 20)
      for error in limited {
        let status = try error?.unpackGoogleRPCStatus()
        #expect(status?.details.compactMap(\.errorInfo).first?.reason == "RATE_LIMITED")
        let delay = try #require(status?.details.compactMap(\.retryInfo).first?.delay)
        #expect(delay > .zero && delay <= .seconds(61))
      }
      let metrics = server.application.metrics.emitToString()
      #expect(MetricsTests.value(metrics, "tender_rate_limit_rejections_total", ["bucket": "client"]) == 20)

      let redis = try await TestRedis.sharedServer()
      let ttl = try await RedisClient(
        configuration: RedisConfiguration(host: "127.0.0.1", port: redis.port), logger: Logger(label: "test")
      )
      .send(["PTTL", "\(server.redisKeyPrefix)rl:client:\(client.clientID)"])
      let milliseconds = try #require(ttl.integer)
      #expect(milliseconds > 0 && milliseconds <= 601_000)
    }
  }

  @Test("An authenticated call asks Redis once: its token's standing and its client's bucket in one script")
  func oneRedisRoundTrip() async throws {
    let redis = try await TestRedis.privateServer()
    defer { redis.destroy() }
    // A command that timed out would send the call to PostgreSQL for the standing, and caching it
    // again is a second round trip: generous limits, so the count holds on a loaded machine.
    try await TestServer.with(configure: { flags, _ in
      flags[.redisURL] = redis.url + "?command_timeout=10s&connect_timeout=10s"
    }) { server in
      let token = try await server.token(scopes: ["payments:read"])
      let log = RedisClient(
        configuration: RedisConfiguration(host: "127.0.0.1", port: redis.port), logger: Logger(label: "test"))
      // Every command into the slow log; a script's own commands are logged without a client.
      _ = try await log.send(["CONFIG", "SET", "slowlog-log-slower-than", "0", "slowlog-max-len", "10000"])
      try await server.withClient { grpc in
        // The first call finds no standing cached, reads it from PostgreSQL and caches it.
        #expect(await AuthTests.getPayment(grpc, token: token)?.code == .notFound)
        _ = try await log.send(["SLOWLOG", "RESET"])
        for _ in 0..<10 {
          #expect(await AuthTests.getPayment(grpc, token: token)?.code == .notFound)
        }
      }
      let entries = try await log.send(["SLOWLOG", "GET", "10000"])
      guard case .array(let logged) = entries else {
        Issue.record("SLOWLOG GET answered \(entries)")
        return
      }
      var sent: [String: Int] = [:]
      var inScripts: [String: Int] = [:]
      for case .array(let entry) in logged where entry.count >= 5 {
        guard case .array(let arguments) = entry[3], let command = arguments.first?.string?.lowercased(),
          !["slowlog", "config", "ping"].contains(command)
        else { continue }
        if entry[4].string == "?:0" { inScripts[command, default: 0] += 1 } else { sent[command, default: 0] += 1 }
      }
      #expect(sent == ["evalsha": 10])
      // In each: the standing's two keys and the bucket's commands.
      #expect(inScripts["mget"] == 10 && inScripts["hset"] == 10)
    }
  }

  @Test("IssueToken is limited per peer address, whichever client ids are tried")
  func issueTokenPerPeer() async throws {
    try await TestServer.with(rpc: .tls, configure: { flags, _ in flags[.issueTokenRateLimit] = "1/m,burst=3" }) {
      server in
      try await server.withClient { grpc in
        let auth = Tender_Auth_V1_AuthService.Client(wrapping: grpc)
        var codes: [RPCError.Code] = []
        for attempt in 0..<5 {
          do {
            _ = try await auth.issueToken(
              .with {
                $0.clientID = "cli_guess\(attempt)"
                $0.clientSecret = "tsk_guess"
              })
          } catch let error as RPCError {
            codes.append(error.code)
          }
        }
        #expect(
          codes == [.unauthenticated, .unauthenticated, .unauthenticated, .resourceExhausted, .resourceExhausted])
      }
      let metrics = server.application.metrics.emitToString()
      #expect(MetricsTests.value(metrics, "tender_rate_limit_rejections_total", ["bucket": "issue_token_peer"]) == 2)
    }
  }

  @Test("With Redis stopped, calls complete under the default fail-open policy and the error metric moves")
  func redisDownFailsOpen() async throws {
    let redis = try await TestRedis.privateServer()
    defer { redis.destroy() }
    try await TestServer.with(configure: { flags, _ in
      flags[.redisURL] = redis.url + "?command_timeout=2s&connect_timeout=2s"
    }) { server in
      let token = try await server.token(scopes: ["payments:read"])
      try await server.withClient { grpc in
        #expect(await AuthTests.getPayment(grpc, token: token)?.code == .notFound)
        redis.stop()
        for _ in 0..<3 {
          let start = ContinuousClock.now
          #expect(await AuthTests.getPayment(grpc, token: token)?.code == .notFound)
          #expect(ContinuousClock.now - start < .seconds(10))
        }
      }
      let metrics = server.application.metrics.emitToString()
      let errors = try #require(MetricsTests.value(metrics, "tender_rate_limiter_errors_total", [:]))
      #expect(errors >= 3)
    }
  }

  @Test(
    "With Redis stopped and the closed policy, calls get UNAVAILABLE with a reason, and the server reports itself not ready"
  )
  func redisDownFailsClosed() async throws {
    let redis = try await TestRedis.privateServer()
    defer { redis.destroy() }
    // Readiness probed every 200 ms, as a server does by itself.
    try await TestServer.with(
      configure: { flags, _ in
        flags[.redisURL] = redis.url + "?command_timeout=2s&connect_timeout=2s"
        flags[.rateLimitOnRedisFailure] = "closed"
      }, rounds: .periodic
    ) { server in
      let token = try await server.token(scopes: ["payments:read"])
      #expect(server.application.board.isServing)
      try await server.withClient { grpc in
        redis.stop()
        let error = await AuthTests.getPayment(grpc, token: token)
        #expect(error?.code == .unavailable)
        #expect(error?.reason == "RATE_LIMITER_UNAVAILABLE")
      }
      // Before, /readyz and Health kept saying SERVING while every authenticated call failed.
      let deadline = ContinuousClock.now + .seconds(20)
      while server.application.board.isServing, ContinuousClock.now < deadline {
        try await Task.sleep(for: .milliseconds(50))
      }
      #expect(!server.application.board.isServing)
      let ready = try await Curl.get(
        "https://localhost:\(server.httpPort)/readyz", caPath: server.certificates.caPath)
      #expect(ready.status == 503)
    }
  }
}
