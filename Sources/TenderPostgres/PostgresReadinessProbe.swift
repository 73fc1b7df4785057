public import PostgresNIO
public import TenderCore

/// Reports the database ready when a pooled connection answers a trivial query.
public struct PostgresReadinessProbe: ReadinessProbe {
  public let name = "postgres"
  private let client: PostgresClient

  public init(client: PostgresClient) {
    self.client = client
  }

  public func check() async throws {
    try await self.client.query("SELECT 1")
  }
}
