public import Hummingbird
public import HummingbirdCore
public import HummingbirdTLS
public import Logging
public import NIOSSL
public import TenderCore

/// The HTTP side of Tender: health for orchestrators, Prometheus metrics, the JWKS, and provider
/// webhooks. Built here so `tender` and the tests start the very same application.
public enum Bridge {
  /// Where and how the bridge listens.
  public struct Configuration: Sendable {
    public var host: String
    public var port: Int
    /// TLS with the server's certificate; nil serves plaintext (loopback only, checked by the caller).
    public var tls: TLSConfiguration?

    public init(host: String, port: Int, tls: TLSConfiguration?) {
      self.host = host
      self.port = port
      self.tls = tls
    }
  }

  /// Compares without stopping at the first difference, so the time taken says nothing about
  /// how much of a guess was right.
  static func equalInConstantTime(_ lhs: [UInt8], _ rhs: [UInt8]) -> Bool {
    var difference = UInt8(lhs.count == rhs.count ? 0 : 1)
    for index in 0..<rhs.count {
      difference |= (index < lhs.count ? lhs[index] : 0) ^ rhs[index]
    }
    return difference == 0
  }

  /// Builds the bridge application.
  /// - Parameters:
  ///   - readiness: answers `/readyz`.
  ///   - metrics: renders `/metrics` in Prometheus text format.
  ///   - metricsToken: when set, `/metrics` answers only requests bearing it (401 otherwise).
  ///   - jwks: renders `/.well-known/jwks.json`, the public keys that verify access tokens.
  ///   - webhooks: `POST /webhooks/{provider}`, when providers are configured.
  ///   - onListening: called with the bound port once the listener is up.
  public static func application(
    configuration: Configuration,
    readiness: any ServingState,
    metrics: @escaping @Sendable () -> String,
    metricsToken: Secret<String>? = nil,
    jwks: @escaping @Sendable () async throws -> String,
    webhooks: WebhookEndpoint? = nil,
    logger: Logger,
    onListening: @escaping @Sendable (Int) async -> Void = { _ in }
  ) throws -> some ApplicationProtocol {
    let router = Router()
    router.get("/healthz") { _, _ in "ok\n" }
    router.get("/readyz") { _, _ -> Response in
      readiness.isServing
        ? Response(status: .ok, body: .init(byteBuffer: ByteBuffer(string: "ready\n")))
        : Response(status: .serviceUnavailable, body: .init(byteBuffer: ByteBuffer(string: "not ready\n")))
    }
    let expected = metricsToken.map { Array("Bearer \($0.value)".utf8) }
    router.get("/metrics") { request, _ -> Response in
      if let expected {
        let given = request.headers[.authorization].map { Array($0.utf8) } ?? []
        guard Self.equalInConstantTime(given, expected) else {
          return Response(
            status: .unauthorized, headers: [.wwwAuthenticate: "Bearer realm=\"tender-metrics\""],
            body: .init(byteBuffer: ByteBuffer(string: "a bearer token is required\n")))
        }
      }
      return Response(
        status: .ok,
        headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
        body: .init(byteBuffer: ByteBuffer(string: metrics()))
      )
    }
    router.get("/.well-known/jwks.json") { _, _ -> Response in
      do {
        return Response(
          status: .ok,
          // Verifiers cache the set briefly; a rotation shows up within the max-age.
          headers: [.contentType: "application/jwk-set+json", .cacheControl: "public, max-age=60"],
          body: .init(byteBuffer: ByteBuffer(string: try await jwks()))
        )
      } catch {
        logger.error("could not load signing keys for the JWKS", metadata: ["error": "\(String(reflecting: error))"])
        return Response(
          status: .serviceUnavailable, body: .init(byteBuffer: ByteBuffer(string: "signing keys unavailable\n")))
      }
    }
    webhooks?.register(on: router, logger: logger)
    let server: HTTPServerBuilder
    if var tls = configuration.tls {
      // NIOSSL's own server default still allows TLS 1.0: set the floor explicitly.
      tls.minimumTLSVersion = .tlsv12
      server = try .tls(.http1(), tlsConfiguration: tls)
    } else {
      server = .http1()
    }
    return Application(
      router: router,
      server: server,
      configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "tender"),
      onServerRunning: { channel in
        await onListening(channel.localAddress?.port ?? configuration.port)
      },
      logger: logger
    )
  }
}
