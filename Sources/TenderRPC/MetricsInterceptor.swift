public import CoreMetrics
public import GRPCCore
import Synchronization
import TenderAPI

/// Counts and times every RPC under the names and labels of go-grpc-prometheus, so standard gRPC
/// dashboards and alerts work unchanged:
/// `grpc_server_started_total`, `grpc_server_handled_total`, `grpc_server_msg_received_total`,
/// `grpc_server_msg_sent_total` and the `grpc_server_handling_seconds` histogram.
public struct MetricsInterceptor: ServerInterceptor {
  private let series: MethodSeries

  /// - Parameter factory: where the metrics go (a Prometheus registry's factory in the server).
  public init(factory: any MetricsFactory) {
    self.series = MethodSeries(factory: factory)
  }

  public func intercept<Input: Sendable, Output: Sendable>(
    request: StreamingServerRequest<Input>,
    context: ServerContext,
    next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
  ) async throws -> StreamingServerResponse<Output> {
    let start = ContinuousClock.now
    let metrics = self.series.of(context.descriptor)
    metrics.started.increment()

    var request = request
    let messages = request.messages
    let received = metrics.received
    request.messages = RPCAsyncSequence(
      wrapping: messages.map { message in
        received.increment()
        return message
      })

    @Sendable func handled(_ code: RPCError.Code?, _: (any Error)?) {
      metrics.handled(code).increment()
      metrics.handling.recordNanoseconds(Self.nanoseconds(ContinuousClock.now - start))
    }

    return try await RPCOutcome.observe(
      request: request,
      context: context,
      next: next,
      writer: { RPCWriter(wrapping: CountingWriter(base: $0, counter: metrics.sent)) },
      finished: handled
    )
  }

  /// `unary`, `client_stream`, `server_stream` or `bidi_stream`, from the schemas.
  static func type(service: String, method: String) -> String {
    switch MethodPolicies.policy(service: service, method: method)?.kind {
    case .unary?: return "unary"
    case .clientStreaming?: return "client_stream"
    case .serverStreaming?: return "server_stream"
    case .bidirectionalStreaming?: return "bidi_stream"
    case nil: return "unknown"
    }
  }

  /// The code names go-grpc-prometheus uses (Go's `codes.Code.String()`).
  static func goName(_ code: RPCError.Code?) -> String {
    guard let code else { return "OK" }
    switch code {
    case .cancelled: return "Canceled"
    case .unknown: return "Unknown"
    case .invalidArgument: return "InvalidArgument"
    case .deadlineExceeded: return "DeadlineExceeded"
    case .notFound: return "NotFound"
    case .alreadyExists: return "AlreadyExists"
    case .permissionDenied: return "PermissionDenied"
    case .resourceExhausted: return "ResourceExhausted"
    case .failedPrecondition: return "FailedPrecondition"
    case .aborted: return "Aborted"
    case .outOfRange: return "OutOfRange"
    case .unimplemented: return "Unimplemented"
    case .internalError: return "Internal"
    case .unavailable: return "Unavailable"
    case .dataLoss: return "DataLoss"
    case .unauthenticated: return "Unauthenticated"
    default: return "Code(\(code.rawValue))"
    }
  }

  static func nanoseconds(_ duration: Duration) -> Int64 {
    let (seconds, attoseconds) = duration.components
    return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
  }
}

/// One method's series, made on its first call and kept: a call then increments handles it
/// already holds instead of asking the factory (and its registry's lock and label lookup) for
/// five of them.
final class MethodMetrics: Sendable {
  let labels: [(String, String)]
  let started: Counter
  let received: Counter
  /// Made with the others, so the series exists (at 0) even when the handler fails before writing.
  let sent: Counter
  let handling: Timer
  private let factory: any MetricsFactory
  /// `grpc_server_handled_total` by status code (nil: OK), each made on first use.
  private let byCode = Mutex<[Int: Counter]>([:])

  init(descriptor: MethodDescriptor, factory: any MetricsFactory) {
    let service = descriptor.service.fullyQualifiedService
    let method = descriptor.method
    let labels = [
      ("grpc_type", MetricsInterceptor.type(service: service, method: method)), ("grpc_service", service),
      ("grpc_method", method),
    ]
    self.labels = labels
    self.factory = factory
    self.started = Counter(label: "grpc_server_started_total", dimensions: labels, factory: factory)
    self.received = Counter(label: "grpc_server_msg_received_total", dimensions: labels, factory: factory)
    self.sent = Counter(label: "grpc_server_msg_sent_total", dimensions: labels, factory: factory)
    self.handling = Timer(label: "grpc_server_handling_seconds", dimensions: labels, factory: factory)
  }

  func handled(_ code: RPCError.Code?) -> Counter {
    let key = code.map { Int($0.rawValue) } ?? -1
    return self.byCode.withLock { counters in
      if let counter = counters[key] { return counter }
      let counter = Counter(
        label: "grpc_server_handled_total", dimensions: self.labels + [("grpc_code", MetricsInterceptor.goName(code))],
        factory: self.factory)
      counters[key] = counter
      return counter
    }
  }
}

/// The series of every method called so far, by method.
final class MethodSeries: Sendable {
  private let factory: any MetricsFactory
  private let methods = Mutex<[MethodDescriptor: MethodMetrics]>([:])

  init(factory: any MetricsFactory) {
    self.factory = factory
  }

  func of(_ descriptor: MethodDescriptor) -> MethodMetrics {
    self.methods.withLock { methods in
      if let known = methods[descriptor] { return known }
      let made = MethodMetrics(descriptor: descriptor, factory: self.factory)
      methods[descriptor] = made
      return made
    }
  }
}

/// Counts the messages a handler writes.
private struct CountingWriter<Element: Sendable>: RPCWriterProtocol {
  let base: RPCWriter<Element>
  let counter: Counter

  func write(_ element: Element) async throws {
    try await self.base.write(element)
    self.counter.increment()
  }

  func write(contentsOf elements: some Sequence<Element>) async throws {
    for element in elements { try await self.write(element) }
  }
}
