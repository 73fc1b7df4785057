import ArgumentParser
import Foundation
import Logging
import TenderServer
import ServiceLifecycle

/// Exit status for unusable configuration (sysexits' EX_CONFIG).
let configurationExitCode: Int32 = 78

/// Prints the one-line reason and exits non-zero.
func exitWithConfigurationError(_ error: ConfigurationError) -> Never {
  FileHandle.standardError.write(Data("tender: \(error.description)\n".utf8))
  exit(configurationExitCode)
}

/// Sets up JSON logging on standard error once per process.
func makeLogger(level: Logger.Level) -> Logger {
  LoggingSystem.bootstrap { label in JSONLogHandler(label: label, level: level) }
  var logger = Logger(label: "tender")
  logger.logLevel = level
  return logger
}

struct Serve: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Serve gRPC over TLS until SIGTERM or SIGINT, then drain and exit 0.",
    usage: "tender serve [--<setting> <value> ...]",
    discussion: Setting.helpText
  )

  @OptionGroup var options: ServeOptions

  /// Prints the README's configuration table (the test of the README compares the two).
  @Flag(name: .customLong("print-settings-table"), help: .hidden)
  var printSettingsTable = false

  func run() async throws {
    Allocator.configure()
    if self.printSettingsTable {
      print(Setting.markdownTable)
      return
    }
    let configuration: ServerConfiguration
    do {
      configuration = try await ServerConfiguration.resolve(flags: try self.options.given())
    } catch let error as ConfigurationError {
      exitWithConfigurationError(error)
    }
    let logger = makeLogger(level: configuration.logLevel)
    let application = try TenderApplication.build(configuration: configuration, logger: logger)
    try await application.serviceGroup.run()
  }
}
