import Crypto
public import Foundation
import SwiftASN1
import X509

/// A development certificate authority and certificates it signs, made at run time so that no
/// private key is ever checked in. Used by `tender dev` and the tests; never for production.
public struct DevCertificateAuthority: Sendable {
  /// PEM of a certificate and its private key.
  public struct Issued: Sendable {
    public let certificatePEM: String
    public let privateKeyPEM: String
  }

  public let certificatePEM: String
  private let key: P256.Signing.PrivateKey
  private let certificate: Certificate

  /// A new CA named `name`, valid from an hour ago for `days` days.
  public init(name: String = "Tender development CA", days: Int = 365) throws {
    let key = P256.Signing.PrivateKey()
    let subject = try DistinguishedName {
      OrganizationName("Tender")
      CommonName(name)
    }
    let now = Date()
    let certificate = try Certificate(
      version: .v3,
      serialNumber: Certificate.SerialNumber(),
      publicKey: Certificate.PublicKey(key.publicKey),
      notValidBefore: now.addingTimeInterval(-3600),
      notValidAfter: now.addingTimeInterval(Double(days) * 86_400),
      issuer: subject,
      subject: subject,
      signatureAlgorithm: .ecdsaWithSHA256,
      extensions: try Certificate.Extensions {
        Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
        Critical(KeyUsage(keyCertSign: true, cRLSign: true))
        SubjectKeyIdentifier(hash: Certificate.PublicKey(key.publicKey))
      },
      issuerPrivateKey: Certificate.PrivateKey(key)
    )
    self.key = key
    self.certificate = certificate
    self.certificatePEM = try certificate.serializeAsPEM().pemString
  }

  /// A server certificate for `dnsNames` and `ipAddresses` (e.g. localhost, 127.0.0.1, ::1).
  public func issueServerCertificate(
    commonName: String = "localhost",
    dnsNames: [String] = ["localhost"],
    ipAddresses: [String] = ["127.0.0.1", "::1"],
    days: Int = 365
  ) throws -> Issued {
    var names: [GeneralName] = dnsNames.map { .dnsName($0) }
    for address in ipAddresses {
      names.append(.ipAddress(ASN1OctetString(contentBytes: try Self.addressBytes(address)[...])))
    }
    return try self.issue(commonName: commonName, days: days, usage: .serverAuth, alternativeNames: names)
  }

  /// A client certificate for mutual TLS.
  public func issueClientCertificate(commonName: String, days: Int = 365) throws -> Issued {
    try self.issue(commonName: commonName, days: days, usage: .clientAuth, alternativeNames: [])
  }

  private func issue(
    commonName: String,
    days: Int,
    usage: ExtendedKeyUsage.Usage,
    alternativeNames: [GeneralName]
  ) throws -> Issued {
    let key = P256.Signing.PrivateKey()
    let subject = try DistinguishedName {
      OrganizationName("Tender")
      CommonName(commonName)
    }
    let now = Date()
    let certificate = try Certificate(
      version: .v3,
      serialNumber: Certificate.SerialNumber(),
      publicKey: Certificate.PublicKey(key.publicKey),
      notValidBefore: now.addingTimeInterval(-3600),
      notValidAfter: now.addingTimeInterval(Double(days) * 86_400),
      issuer: self.certificate.subject,
      subject: subject,
      signatureAlgorithm: .ecdsaWithSHA256,
      extensions: try Certificate.Extensions {
        Critical(BasicConstraints.notCertificateAuthority)
        Critical(KeyUsage(digitalSignature: true, keyEncipherment: true))
        try ExtendedKeyUsage([usage])
        if !alternativeNames.isEmpty {
          SubjectAlternativeNames(alternativeNames)
        }
        AuthorityKeyIdentifier(keyIdentifier: try self.certificate.extensions.subjectKeyIdentifier?.keyIdentifier)
      },
      issuerPrivateKey: Certificate.PrivateKey(self.key)
    )
    return Issued(certificatePEM: try certificate.serializeAsPEM().pemString, privateKeyPEM: key.pemRepresentation)
  }

  private static func addressBytes(_ address: String) throws -> [UInt8] {
    var v4 = in_addr()
    if inet_pton(AF_INET, address, &v4) == 1 {
      return withUnsafeBytes(of: &v4) { Array($0) }
    }
    var v6 = in6_addr()
    if inet_pton(AF_INET6, address, &v6) == 1 {
      return withUnsafeBytes(of: &v6) { Array($0) }
    }
    throw CertificateError.invalidAddress(address)
  }

  enum CertificateError: Error {
    case invalidAddress(String)
  }
}

/// The dev CA and server certificate in `tender dev`'s state folder, made once and reused.
public struct DevCertificateFiles: Sendable {
  public let caCertificate: URL
  public let serverCertificate: URL
  public let serverKey: URL

  public static func prepare(in directory: URL) throws -> DevCertificateFiles {
    let files = DevCertificateFiles(
      caCertificate: directory.appendingPathComponent("ca.pem"),
      serverCertificate: directory.appendingPathComponent("server.pem"),
      serverKey: directory.appendingPathComponent("server-key.pem")
    )
    let fileManager = FileManager.default
    if [files.caCertificate, files.serverCertificate, files.serverKey].allSatisfy({
      fileManager.fileExists(atPath: $0.path)
    }) {
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
