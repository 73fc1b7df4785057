import ArgumentParser

@main
struct Tender: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "tender",
    abstract: "Tender: a payments RPC server (gRPC over TLS).",
    subcommands: [
      Serve.self, Migrate.self, Dev.self, Payments.self, Refunds.self, Merchant.self, Client.self, Key.self,
    ]
  )
}
