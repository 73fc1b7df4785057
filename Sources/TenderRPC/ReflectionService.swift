import Foundation
public import GRPCCore
public import TenderAPI
import SwiftProtobuf
import Synchronization

/// The standard `grpc.reflection.v1.ServerReflection` service, so grpcurl and similar tools work
/// without the schemas. It answers from the descriptors generated from proto/.
public struct ReflectionService: Grpc_Reflection_V1_ServerReflection.SimpleServiceProtocol {
  private let index: DescriptorIndex

  /// Serves the generated descriptors; `services` are the fully qualified names to list.
  public init(services: [String]) throws {
    self.index = try Self.index(of: services)
  }

  static func index(of services: [String]) throws -> DescriptorIndex {
    try Self.indexes.withLock { indexes in
      if let index = indexes[services] { return index }
      let index = try DescriptorIndex(files: ReflectionDescriptors.files, services: services)
      indexes[services] = index
      return index
    }
  }

  /// The descriptors are compiled in, so each list of services is indexed once per process (a
  /// process that builds several servers, like the tests, parses them once).
  private static let indexes = Mutex<[[String]: DescriptorIndex]>([:])

  public func serverReflectionInfo(
    request: RPCAsyncSequence<Grpc_Reflection_V1_ServerReflectionRequest, any Error>,
    response: RPCWriter<Grpc_Reflection_V1_ServerReflectionResponse>,
    context: ServerContext
  ) async throws {
    for try await message in request {
      try await response.write(self.index.answer(message))
    }
  }
}

/// `grpc.reflection.v1alpha.ServerReflection`, for clients that only speak the older package
/// (grpcurl 1.8.x, grpcio-reflection): its messages are v1's, field for field, so each request is
/// read as v1 and answered as v1 answers.
public struct ReflectionServiceV1Alpha: Grpc_Reflection_V1alpha_ServerReflection.SimpleServiceProtocol {
  private let index: DescriptorIndex

  public init(services: [String]) throws {
    self.index = try ReflectionService.index(of: services)
  }

  public func serverReflectionInfo(
    request: RPCAsyncSequence<Grpc_Reflection_V1alpha_ServerReflectionRequest, any Error>,
    response: RPCWriter<Grpc_Reflection_V1alpha_ServerReflectionResponse>,
    context: ServerContext
  ) async throws {
    for try await message in request {
      let asked = try Grpc_Reflection_V1_ServerReflectionRequest(
        serializedBytes: try message.serializedBytes() as [UInt8])
      let answer = self.index.answer(asked)
      try await response.write(
        try Grpc_Reflection_V1alpha_ServerReflectionResponse(serializedBytes: try answer.serializedBytes() as [UInt8]))
    }
  }
}

/// Lookup tables over the serialized file descriptors.
struct DescriptorIndex: Sendable {
  private var serialized: [String: Data] = [:]
  private var dependencies: [String: [String]] = [:]
  private var fileBySymbol: [String: String] = [:]
  private var extensionFile: [String: [Int32: String]] = [:]
  private let services: [String]

  init(files: [(name: String, base64: String)], services: [String]) throws {
    self.services = services.sorted()
    for file in files {
      guard let data = Data(base64Encoded: file.base64) else {
        throw RPCError(code: .internalError, message: "corrupt descriptor for \(file.name)")
      }
      let descriptor = try Google_Protobuf_FileDescriptorProto(serializedBytes: data)
      self.serialized[descriptor.name] = data
      self.dependencies[descriptor.name] = descriptor.dependency
      let prefix = descriptor.package.isEmpty ? "" : descriptor.package + "."
      for message in descriptor.messageType { self.index(message: message, prefix: prefix, file: descriptor.name) }
      for enumeration in descriptor.enumType { self.fileBySymbol[prefix + enumeration.name] = descriptor.name }
      for service in descriptor.service {
        let serviceName = prefix + service.name
        self.fileBySymbol[serviceName] = descriptor.name
        for method in service.method { self.fileBySymbol[serviceName + "." + method.name] = descriptor.name }
      }
      for field in descriptor.extension { self.index(extension: field, prefix: prefix, file: descriptor.name) }
    }
  }

  private mutating func index(message: Google_Protobuf_DescriptorProto, prefix: String, file: String) {
    let name = prefix + message.name
    self.fileBySymbol[name] = file
    for nested in message.nestedType { self.index(message: nested, prefix: name + ".", file: file) }
    for enumeration in message.enumType { self.fileBySymbol[name + "." + enumeration.name] = file }
    for field in message.extension { self.index(extension: field, prefix: name + ".", file: file) }
  }

  private mutating func index(extension field: Google_Protobuf_FieldDescriptorProto, prefix: String, file: String) {
    self.fileBySymbol[prefix + field.name] = file
    let extendee = field.extendee.hasPrefix(".") ? String(field.extendee.dropFirst()) : field.extendee
    self.extensionFile[extendee, default: [:]][field.number] = file
  }

  /// The file and all it imports, each once, imports first.
  private func closure(of file: String) -> [Data] {
    var seen: Set<String> = []
    var ordered: [Data] = []
    func visit(_ name: String) {
      guard seen.insert(name).inserted, let data = self.serialized[name] else { return }
      for dependency in self.dependencies[name, default: []] { visit(dependency) }
      ordered.append(data)
    }
    visit(file)
    return ordered
  }

  func answer(_ request: Grpc_Reflection_V1_ServerReflectionRequest) -> Grpc_Reflection_V1_ServerReflectionResponse {
    var response = Grpc_Reflection_V1_ServerReflectionResponse()
    response.validHost = request.host
    response.originalRequest = request
    func files(_ file: String?, missing: String) {
      if let file {
        response.fileDescriptorResponse = .with { $0.fileDescriptorProto = self.closure(of: file) }
      } else {
        response.errorResponse = .with {
          $0.errorCode = Int32(RPCError.Code.notFound.rawValue)
          $0.errorMessage = missing
        }
      }
    }
    switch request.messageRequest {
    case .fileByFilename(let name):
      files(self.serialized[name] == nil ? nil : name, missing: "file not found: \(name)")
    case .fileContainingSymbol(let symbol):
      files(self.fileBySymbol[symbol], missing: "symbol not found: \(symbol)")
    case .fileContainingExtension(let request):
      files(
        self.extensionFile[request.containingType]?[request.extensionNumber],
        missing: "extension not found: \(request.containingType) \(request.extensionNumber)"
      )
    case .allExtensionNumbersOfType(let type):
      if let numbers = self.extensionFile[type] {
        response.allExtensionNumbersResponse = .with {
          $0.baseTypeName = type
          $0.extensionNumber = numbers.keys.sorted()
        }
      } else if self.fileBySymbol[type] != nil {
        response.allExtensionNumbersResponse = .with { $0.baseTypeName = type }
      } else {
        files(nil, missing: "type not found: \(type)")
      }
    case .listServices:
      response.listServicesResponse = .with {
        $0.service = self.services.map { name in .with { $0.name = name } }
      }
    case .none:
      response.errorResponse = .with {
        $0.errorCode = Int32(RPCError.Code.invalidArgument.rawValue)
        $0.errorMessage = "message_request is not set"
      }
    }
    return response
  }
}
