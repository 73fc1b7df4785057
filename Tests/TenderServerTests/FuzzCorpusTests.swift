import Foundation
import TenderFuzzing
import TenderTesting
import Testing

/// Every input of the fuzzers' seed corpus (fuzz/corpus/TARGET), and every input a fuzzer found
/// and kept there, through its target in an ordinary build: the targets keep compiling and
/// holding, and a regression found once stays found.
@Suite("Fuzz corpus: every seed through its target")
struct FuzzCorpusTests {
  static let corpus = SettingsTests.packageRoot.appendingPathComponent("fuzz/corpus")

  static func inputs(_ target: FuzzTarget) throws -> [(name: String, bytes: [UInt8])] {
    let directory = Self.corpus.appendingPathComponent(target.rawValue)
    let names = try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
    return try names.map { name in
      (name, Array(try Data(contentsOf: directory.appendingPathComponent(name))))
    }
  }

  @Test("Each target has seeds, and every seed keeps every property", arguments: FuzzTarget.allCases)
  func seeds(_ target: FuzzTarget) async throws {
    let inputs = try Self.inputs(target)
    #expect(inputs.count >= 4, "fuzz/corpus/\(target.rawValue) holds \(inputs.count) seeds")
    try await InProcessServer.with(configure: Fuzzing.configure) { server in
      try await server.withClient { client in
        let fuzzing = try await Fuzzing.prepare(server: server, client: client)
        for input in inputs {
          do throws(FuzzFinding) {
            try await fuzzing.run(target, input.bytes)
          } catch {
            Issue.record("\(input.name): \(error.description)")
          }
        }
      }
    }
  }
}
