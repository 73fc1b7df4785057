import GRPCCore
import Testing

@testable import TenderRPC

@Suite("The bearer token of an authorization header")
struct BearerTokenTests {
  static func token(_ header: String?) -> String? {
    var metadata = Metadata()
    if let header { metadata.addString(header, forKey: "authorization") }
    return AuthInterceptor.bearerToken(metadata)
  }

  @Test(
    "is read with the scheme in any case and spaces around",
    arguments: [
      ("Bearer eyJ.a.b", "eyJ.a.b"),
      ("bearer eyJ.a.b", "eyJ.a.b"),
      ("BEARER eyJ.a.b", "eyJ.a.b"),
      ("  Bearer   eyJ.a.b  ", "eyJ.a.b"),
      ("Bearer é", "é"),
    ])
  func read(header: String, token: String) {
    #expect(Self.token(header) == token)
  }

  @Test(
    "is nil for anything but a bearer scheme and one token",
    arguments: [
      nil, "", "   ", "Bearer", "Bearer ", "Bearer    ", "Basic dXNlcjpwYXNz", "Bearerx eyJ", "Bearer\teyJ",
      "Bearer a b", "Bear eyJ", "eyJ.a.b", "Bearer: eyJ",
    ])
  func refused(header: String?) {
    #expect(Self.token(header) == nil)
  }
}
