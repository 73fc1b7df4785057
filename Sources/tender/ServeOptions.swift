import ArgumentParser
import TenderServer

/// The settings of `tender serve` (and `tender dev`) given as flags: any of `Setting.all`, parsed
/// by the table rather than declared here a second time.
struct ServeOptions: ParsableArguments {
  @Argument(parsing: .allUnrecognized, help: .hidden)
  var arguments: [String] = []

  /// The settings given on the command line; absent ones fall back to the environment, the
  /// secrets folder, then their defaults.
  func given() throws -> [Setting: String] {
    do {
      return try Setting.parseArguments(self.arguments)
    } catch {
      throw ValidationError(error.text)
    }
  }

  func validate() throws {
    _ = try self.given()
  }
}
