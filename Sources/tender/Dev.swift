import ArgumentParser
import Foundation
import Logging
import Synchronization
import TenderServer
import ServiceLifecycle

struct Dev: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Run Tender locally: a throwaway PostgreSQL, dev TLS certificates, migrations, then serve. Ctrl-C stops it all."
  )

  @Option(help: "Folder for the dev database and certificates.")
  var stateDir: String = ".tender/dev"

  @Option(name: .customLong("grpc-address"), help: "host:port of the gRPC listener (loopback).")
  var grpcAddress: String = "127.0.0.1:8443"

  @Option(name: .customLong("http-address"), help: "host:port of the HTTP bridge (loopback).")
  var httpAddress: String = "127.0.0.1:8080"

  @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
  var logLevel: String = "info"

  @Flag(help: "Remove the dev database when stopping.")
  var ephemeral = false

  func run() async throws {
    let state = URL(fileURLWithPath: self.stateDir, isDirectory: true).standardizedFileURL
    try FileManager.default.createDirectory(at: state, withIntermediateDirectories: true)

    let tls = try DevTLSFiles.prepare(in: state.appendingPathComponent("tls"))
    let postgres = try Self.startPostgres(in: state.appendingPathComponent("postgres"))
    defer {
      if self.ephemeral { postgres.destroy() } else { postgres.stop() }
    }

    var flags: [Setting: String] = [
      .grpcAddress: self.grpcAddress,
      .httpAddress: self.httpAddress,
      .tlsCert: tls.serverCertificate.path,
      .tlsKey: tls.serverKey.path,
      .databaseURL: postgres.databaseURL,
      .migrate: "true",
      .logLevel: self.logLevel,
    ]
    flags[.drainDelay] = "0s"
    let configuration: ServerConfiguration
    do {
      configuration = try ServerConfiguration.resolve(flags: flags, environment: [:])
    } catch let error as ConfigurationError {
      exitWithConfigurationError(error)
    }
    let logger = makeLogger(level: configuration.logLevel)
    let caPath = tls.caCertificate.path
    // Instructions are printed once both listeners are up.
    let ports = DevPorts()
    let application = try TenderApplication.build(
      configuration: configuration,
      logger: logger,
      onListening: { host, port in
        if let httpPort = ports.grpcListening(port) {
          Self.printInstructions(host: host, port: port, httpPort: httpPort, caPath: caPath, databaseURL: postgres.databaseURL)
        }
      },
      onBridgeListening: { httpPort in
        if let port = ports.bridgeListening(httpPort) {
          Self.printInstructions(host: configuration.host, port: port, httpPort: httpPort, caPath: caPath, databaseURL: postgres.databaseURL)
        }
      }
    )
    try await application.serviceGroup.run()
  }

  /// Starts the dev cluster on the port it used before, or a free one the first time.
  static func startPostgres(in directory: URL) throws -> LocalPostgres {
    let portFile = directory.appendingPathComponent("port")
    let port: Int
    if let text = try? String(contentsOf: portFile, encoding: .utf8), let saved = Int(text.trimmingCharacters(in: .whitespacesAndNewlines)) {
      port = saved
    } else {
      port = try LocalPostgres.freePort()
      try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
      try "\(port)\n".write(to: portFile, atomically: true, encoding: .utf8)
    }
    return try LocalPostgres.start(in: directory, port: port)
  }

  static func printInstructions(host: String, port: Int, httpPort: Int, caPath: String, databaseURL: String) {
    let target = "localhost:\(port)"
    let text = """

      Tender is serving gRPC over TLS on \(host):\(port) (dev CA: \(caPath)).
      Database: \(databaseURL)

      Call it with grpcurl (server reflection is on, no protos needed):
        grpcurl -cacert \(caPath) \(target) grpc.health.v1.Health/Check

      Or from Python (pip install -r clients/python/requirements.txt; run from clients/python):
        import grpc
        from tender_client._generated.grpc.health.v1 import health_pb2, health_pb2_grpc
        creds = grpc.ssl_channel_credentials(root_certificates=open("\(caPath)", "rb").read())
        with grpc.secure_channel("\(target)", creds) as channel:
            print(health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest()))

      Health and metrics over HTTPS:
        curl --cacert \(caPath) https://localhost:\(httpPort)/readyz
        curl --cacert \(caPath) https://localhost:\(httpPort)/metrics

      Ctrl-C stops the server and the database.

      """
    FileHandle.standardOutput.write(Data(text.utf8))
  }
}

/// Remembers which listener came up first, so the instructions print once with both ports.
final class DevPorts: Sendable {
  private let ports = Mutex<(grpc: Int?, http: Int?)>((nil, nil))

  /// Returns the HTTP port if the bridge is already listening.
  func grpcListening(_ port: Int) -> Int? {
    self.ports.withLock { ports in
      ports.grpc = port
      return ports.http
    }
  }

  /// Returns the gRPC port if the gRPC server is already listening.
  func bridgeListening(_ port: Int) -> Int? {
    self.ports.withLock { ports in
      ports.http = port
      return ports.grpc
    }
  }
}

/// The dev CA and server certificate in `tender dev`'s state folder, made once and reused.
struct DevTLSFiles {
  let caCertificate: URL
  let serverCertificate: URL
  let serverKey: URL

  static func prepare(in directory: URL) throws -> DevTLSFiles {
    let files = DevTLSFiles(
      caCertificate: directory.appendingPathComponent("ca.pem"),
      serverCertificate: directory.appendingPathComponent("server.pem"),
      serverKey: directory.appendingPathComponent("server-key.pem")
    )
    let fileManager = FileManager.default
    if [files.caCertificate, files.serverCertificate, files.serverKey].allSatisfy({ fileManager.fileExists(atPath: $0.path) }) {
      return files
    }
    try fileManager.createDirectory(at: directory, withIntermediateDirectories: true)
    let authority = try DevCertificateAuthority()
    let server = try authority.issueServerCertificate()
    try authority.certificatePEM.write(to: files.caCertificate, atomically: true, encoding: .utf8)
    try server.certificatePEM.write(to: files.serverCertificate, atomically: true, encoding: .utf8)
    try server.privateKeyPEM.write(to: files.serverKey, atomically: true, encoding: .utf8)
    try fileManager.setAttributes([.posixPermissions: 0o600], ofItemAtPath: files.serverKey.path)
    return files
  }
}
