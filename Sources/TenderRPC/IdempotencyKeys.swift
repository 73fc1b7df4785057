import Crypto
import Foundation
public import GRPCCore
import GRPCProtobuf
public import SwiftProtobuf
public import TenderCore
public import TenderOperations

/// The wire side of idempotency: the `idempotency-key` metadata, request fingerprints, the keys
/// sent to the provider, and stored responses turned back into responses.
public enum IdempotencyKeys {
  public static let metadataKey = "idempotency-key"
  public static let replayedKey = "idempotent-replayed"

  /// The key was used for a different request.
  static var reused: GoogleRPCStatus {
    APIError.status(
      .invalidArgument, reason: "IDEMPOTENCY_KEY_REUSED",
      message: "this idempotency-key was used for a different request", metadata: ["field": Self.metadataKey])
  }

  /// The first request with the key is still running.
  static var inUse: GoogleRPCStatus {
    APIError.status(
      .aborted, reason: "IDEMPOTENCY_KEY_IN_USE",
      message: "a request with this idempotency-key is still in progress; retry later")
  }

  /// Nothing reached the provider and the key was freed.
  static var providerUnavailable: GoogleRPCStatus {
    APIError.status(
      .unavailable, reason: "PROVIDER_UNAVAILABLE",
      message: "the payment provider cannot be reached; retry with the same idempotency-key")
  }

  /// The caller's key; INVALID_ARGUMENT naming `idempotency-key` when it is missing or unusable.
  static func key(_ metadata: Metadata) throws -> String {
    guard let key = metadata[stringValues: Self.metadataKey].first(where: { _ in true }) else {
      throw APIError.invalidArgument(
        field: Self.metadataKey, reason: "IDEMPOTENCY_KEY_MISSING",
        message: "this method needs an idempotency-key metadata entry")
    }
    guard IdempotencyRequest.isValidKey(key) else {
      throw APIError.invalidArgument(
        field: Self.metadataKey, reason: "IDEMPOTENCY_KEY_INVALID",
        message: "idempotency-key must be 1 to 255 printable ASCII characters")
    }
    // The key is stored and sent to the provider. A UUID is a random identifier, whatever digits
    // it happens to hold; any other key is scanned like free text.
    if !Self.isUUID(key), CardNumbers.containsCardNumber(key) {
      throw APIError.domain(.cardDataRejected(field: Self.metadataKey))
    }
    return key
  }

  /// A UUID in its canonical form (8-4-4-4-12 hex digits) or as 32 hex digits.
  static func isUUID(_ key: String) -> Bool {
    let bytes = Array(key.utf8)
    func isHex(_ byte: UInt8) -> Bool {
      (0x30...0x39).contains(byte) || (0x41...0x46).contains(byte) || (0x61...0x66).contains(byte)
    }
    switch bytes.count {
    case 32: return bytes.allSatisfy(isHex)
    case 36:
      return bytes.enumerated().allSatisfy { offset, byte in
        [8, 13, 18, 23].contains(offset) ? byte == 0x2D : isHex(byte)
      }
    default: return false
    }
  }

  /// SHA-256 of the method and the request's deterministic serialization.
  public static func fingerprint(method: String, message: some SwiftProtobuf.Message) throws -> [UInt8] {
    var hash = SHA256()
    hash.update(data: Array(method.utf8) + [0])
    hash.update(data: try self.serialize(message))
    return Array(hash.finalize())
  }

  static func serialize(_ message: some SwiftProtobuf.Message) throws -> [UInt8] {
    var options = BinaryEncodingOptions()
    options.useDeterministicOrdering = true
    return try message.serializedBytes(options: options)
  }

  /// An error as it is stored for replay.
  static func stored(_ status: GoogleRPCStatus) throws -> StoredResponse {
    StoredResponse(
      code: Int(status.code.rawValue), message: Array(status.message.utf8), details: try status.serializedBytes())
  }

  /// The response a stored answer becomes; marked when replayed.
  static func response<Output: SwiftProtobuf.Message>(
    _ stored: StoredResponse, replayed: Bool
  ) throws -> ServerResponse<Output> {
    var metadata: Metadata = [:]
    if replayed { metadata.addString("true", forKey: Self.replayedKey) }
    guard stored.code == 0 else {
      // The stored status bytes go out as they are: every answer to the key is identical.
      guard let statusCode = Status.Code(rawValue: stored.code), let code = RPCError.Code(statusCode) else {
        throw StoredResponseError()
      }
      metadata.addBinary(stored.details, forKey: "grpc-status-details-bin")
      throw RPCError(code: code, message: String(decoding: stored.message, as: UTF8.self), metadata: metadata)
    }
    return ServerResponse(message: try Output(serializedBytes: stored.message), metadata: metadata)
  }

  static func replay<Output: SwiftProtobuf.Message>(_ stored: StoredResponse) throws -> ServerResponse<Output> {
    try self.response(stored, replayed: true)
  }

  /// The response of a keyed operation run by the runner: its stored answer, or `open`'s
  /// answer while the provider's outcome is not known; refusals as their statuses.
  static func respond<Output: SwiftProtobuf.Message, Open: Sendable>(
    _ run: () async throws -> KeyedOutcome<Open>,
    open: (Open) throws -> Output
  ) async throws -> ServerResponse<Output> {
    do {
      switch try await run() {
      case .answered(let stored, let replayed): return try self.response(stored, replayed: replayed)
      case .open(let value): return ServerResponse(message: try open(value))
      }
    } catch let refusal as KeyedRefusal {
      throw self.status(refusal)
    } catch let error as DomainError {
      throw APIError.domain(error)
    }
  }

  static func status(_ refusal: KeyedRefusal) -> GoogleRPCStatus {
    switch refusal {
    case .reused: return self.reused
    case .inUse: return self.inUse
    case .providerUnavailable: return self.providerUnavailable
    case .outcomeUnknown:
      return APIError.status(
        .unavailable, reason: "PROVIDER_OUTCOME_UNKNOWN",
        message: "the payment provider did not answer in time; retry with the same idempotency-key")
    }
  }
}

/// A stored response Tender cannot send back (an unknown status code).
struct StoredResponseError: Error {}
