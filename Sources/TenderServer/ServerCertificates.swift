import CoreMetrics
import Foundation
public import Logging
import NIOCertificateReloading
import NIOSSL
import SwiftASN1
import X509

/// The server's TLS certificate, shared by the gRPC listener and the HTTP bridge, and re-read
/// from its files on an interval: a certificate renewed on disk (a Kubernetes secret updated by
/// cert-manager) is served to new connections without a restart. A pair that cannot be used —
/// unreadable, unparsable, or a key that does not match the certificate, as while one file of the
/// pair has been replaced and the other not yet — is logged and counted
/// (`tender_tls_reload_failures_total`), and the last good pair stays in service.
/// `tender_tls_certificate_expiry_timestamp_seconds` is the leaf's expiry.
enum ServerCertificates {
  /// The reloader to serve with, or nil when the certificate is not re-read (plaintext, no files,
  /// or an interval of zero). Throws when the files cannot be used at start.
  static func reloader(
    _ configuration: ServerConfiguration, metrics: any MetricsFactory, logger: Logger
  ) throws -> TimedCertificateReloader? {
    guard case .tls(let chain, _, _) = configuration.transport else { return nil }
    let expiry = Gauge(label: "tender_tls_certificate_expiry_timestamp_seconds", factory: metrics)
    guard let files = configuration.tlsFiles, configuration.tlsReloadInterval > .zero else {
      if let leaf = try? Self.leaf(chain) { expiry.record(leaf.notValidAfter.timeIntervalSince1970) }
      return nil
    }
    let failures = Counter(label: "tender_tls_reload_failures_total", factory: metrics)
    let reloaderConfiguration = TimedCertificateReloader.Configuration(
      refreshInterval: configuration.tlsReloadInterval,
      certificateSource: .init(location: .file(path: files.certificatePath), format: .pem),
      privateKeySource: .init(location: .file(path: files.privateKeyPath), format: .pem)
    ) { reloader in
      reloader.onCertificateLoaded = { diff in
        guard let leaf = diff.currentX509CertificateChain.first else { return }
        expiry.record(leaf.notValidAfter.timeIntervalSince1970)
        if let previous = diff.previousX509CertificateChain, previous != diff.currentX509CertificateChain {
          logger.notice(
            "TLS certificate reloaded",
            metadata: [
              "certificate_serial": "\(leaf.serialNumber)", "not_after": "\(leaf.notValidAfter)",
              "subject": "\(leaf.subject)",
            ])
        }
      }
      reloader.onCertificateLoadFailed = { failure in
        failures.increment()
        logger.warning(
          "TLS certificate not reloaded; the previous one is still served",
          metadata: [
            "error": "\(failure.error)", "certificate_file": "\(files.certificatePath)",
            "key_file": "\(files.privateKeyPath)",
          ])
      }
    }
    return try TimedCertificateReloader.makeReloaderValidatingSources(configuration: reloaderConfiguration)
  }

  private static func leaf(_ chain: [UInt8]) throws -> Certificate? {
    try PEMDocument.parseMultiple(pemString: String(decoding: chain, as: UTF8.self)).first.map {
      try Certificate(pemDocument: $0)
    }
  }
}
