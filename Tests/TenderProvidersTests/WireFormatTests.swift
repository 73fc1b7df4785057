import Foundation
@testable import TenderProviderSim
@testable import TenderProviders
import Testing

@Suite("Form and JSON encoding between the connector and the simulator")
struct WireFormatTests {
  @Test("The connector percent-encodes every byte but the unreserved ASCII ones")
  func formEncoding() {
    #expect(StripeConnector.formEncode("a b&c=d/é~") == "a%20b%26c%3Dd%2F%C3%A9~")
    #expect(StripeConnector.formEncode("metadata[tender_payment_id]") == "metadata%5Btender_payment_id%5D")
    #expect(StripeConnector.formEncode("") == "")
  }

  @Test("The simulator decodes forms: + and %XX, UTF-8, broken escapes kept as they are")
  func formDecoding() {
    #expect(
      SimulatedAPI.parseForm("a%20b=c+d%26&metadata%5Bk%5D=%C3%A9&empty=&bare") == [
        "a b": "c d&", "metadata[k]": "é", "empty": "", "bare": "",
      ])
    #expect(SimulatedAPI.parseForm("x=100%25&y=%2") == ["x": "100%", "y": "%2"])
    let sent = "a b&c=d/é~\"%+"
    #expect(SimulatedAPI.parseForm("k=" + StripeConnector.formEncode(sent)) == ["k": sent])
  }

  @Test("The simulator's JSON has sorted keys, escapes strings and reads back as written")
  func json() throws {
    let object: [String: Any] = ["b": Int64(1), "a": "x\"y\n\\", "c": NSNull(), "d": ["z": "1"], "e": true, "f": 7]
    let data = SimulatedAPI.encode(object)
    #expect(String(decoding: data, as: UTF8.self) == #"{"a":"x\"y\n\\","b":1,"c":null,"d":{"z":"1"},"e":true,"f":7}"#)
    let read = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    #expect(read["a"] as? String == "x\"y\n\\")
    #expect((read["d"] as? [String: String]) == ["z": "1"])
  }
}
