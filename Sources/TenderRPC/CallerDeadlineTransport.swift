public import GRPCCore
import TenderCore

/// The deadline the caller gave the RPC being served (its `grpc-timeout`), or `nil`.
public enum CallerDeadline {
  @TaskLocal public static var current: Duration?

  /// Decodes a `grpc-timeout` value: at most 8 digits and a unit (H, M, S, m, u or n).
  public static func decode(_ value: some StringProtocol) -> Duration? {
    let bytes = Array(value.utf8)
    guard (2...9).contains(bytes.count), let unit = bytes.last else { return nil }
    var amount: Int64 = 0
    for digit in bytes.dropLast() {
      guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(digit) else { return nil }
      amount = amount * 10 + Int64(digit - UInt8(ascii: "0"))
    }
    switch unit {
    case UInt8(ascii: "H"): return .seconds(amount * 3600)
    case UInt8(ascii: "M"): return .seconds(amount * 60)
    case UInt8(ascii: "S"): return .seconds(amount)
    case UInt8(ascii: "m"): return .milliseconds(amount)
    case UInt8(ascii: "u"): return .microseconds(amount)
    case UInt8(ascii: "n"): return .nanoseconds(amount)
    default: return nil
    }
  }
}

/// Serves `Base`'s streams with the caller's `grpc-timeout` enforced here instead of by
/// grpc-swift.
///
/// grpc-swift races each RPC that carries a deadline against a `Task.sleep`, which it cancels
/// when the RPC ends; a cancelled `Task.sleep` keeps its task until the deadline passes anyway
/// (see `Sleep`), so every finished call held about 640 bytes for the rest of its deadline. This
/// transport takes `grpc-timeout` out of the request's metadata (so grpc-swift arms no timer),
/// runs the same race on `Sleep`, which cancelling frees, and cancels the RPC when the deadline
/// passes, as grpc-swift does. The handlers read the deadline from `CallerDeadline.current`.
public struct CallerDeadlineTransport<Base: ServerTransport>: ServerTransport {
  public typealias Bytes = Base.Bytes

  public let base: Base

  public init(_ base: Base) {
    self.base = base
  }

  public func configure(context: GRPCServerContext) {
    self.base.configure(context: context)
  }

  public func beginGracefulShutdown() {
    self.base.beginGracefulShutdown()
  }

  public func listen(
    streamHandler: @escaping @Sendable (_ stream: RPCStream<Inbound, Outbound>, _ context: ServerContext) async -> Void
  ) async throws {
    try await self.base.listen { stream, context in
      // The metadata is the stream's first part.
      var iterator = stream.inbound.makeAsyncIterator()
      var head: Result<RPCRequestPart<Bytes>?, any Error>
      do {
        head = .success(try await iterator.next())
      } catch {
        head = .failure(error)
      }
      var deadline: Duration?
      if case .success(.metadata(var metadata)) = head {
        let values = metadata[stringValues: "grpc-timeout"]
        if let value = values.first(where: { _ in true }) {
          deadline = CallerDeadline.decode(value)
          metadata.removeAllValues(forKey: "grpc-timeout")
          head = .success(.metadata(metadata))
        }
      }
      let rewritten = RPCStream(
        descriptor: stream.descriptor,
        inbound: RPCAsyncSequence(wrapping: HeadThenRest(head: head, rest: iterator)),
        outbound: stream.outbound)
      guard let deadline else {
        await streamHandler(rewritten, context)
        return
      }
      await CallerDeadline.$current.withValue(deadline) {
        await withTaskGroup(of: Void.self) { group in
          group.addTask {
            // Only a deadline that passes cancels the RPC.
            guard (try? await Sleep.for(deadline)) != nil else { return }
            context.cancellation.cancel()
          }
          await streamHandler(rewritten, context)
          group.cancelAll()
        }
      }
    }
  }
}

/// A stream's first part, already read, then the rest of it.
private struct HeadThenRest<Bytes: GRPCContiguousBytes & Sendable>: AsyncSequence, @unchecked Sendable {
  // Unchecked: the stream is iterated once, by the one task serving it (as the transport's own
  // sequence is).
  typealias Element = RPCRequestPart<Bytes>

  let head: Result<Element?, any Error>
  let rest: RPCAsyncSequence<Element, any Error>.AsyncIterator

  func makeAsyncIterator() -> Iterator {
    Iterator(head: self.head, rest: self.rest)
  }

  struct Iterator: AsyncIteratorProtocol {
    var head: Result<Element?, any Error>?
    var rest: RPCAsyncSequence<Element, any Error>.AsyncIterator

    mutating func next() async throws -> Element? {
      if let head = self.head {
        self.head = nil
        return try head.get()
      }
      return try await self.rest.next()
    }
  }
}
