// swift-tools-version:6.1
import PackageDescription

// Tender's micro-benchmarks: the hot paths one at a time, in time and allocations
// (ordo-one/benchmark). A package of its own, so `swift build` of Tender never builds them;
// `deploy/bench-micro.sh` runs them.
let package = Package(
  name: "tender-micro-benchmarks",
  platforms: [.macOS(.v15)],
  dependencies: [
    .package(name: "tender", path: "../.."),
    .package(url: "https://github.com/ordo-one/benchmark.git", exact: "1.38.1", traits: ["MallocInterposer"]),
    .package(url: "https://github.com/grpc/grpc-swift-2.git", exact: "2.4.3"),
    .package(url: "https://github.com/apple/swift-protobuf.git", exact: "1.39.0"),
    .package(url: "https://github.com/apple/swift-log.git", exact: "1.16.2"),
    .package(url: "https://github.com/apple/swift-crypto.git", exact: "4.5.2"),
  ],
  targets: [
    .executableTarget(
      name: "TenderMicro",
      dependencies: [
        .product(name: "Benchmark", package: "benchmark"),
        .product(name: "TenderAPI", package: "tender"),
        .product(name: "TenderCore", package: "tender"),
        .product(name: "TenderAuth", package: "tender"),
        .product(name: "TenderRedis", package: "tender"),
        .product(name: "TenderRPC", package: "tender"),
        .product(name: "TenderBridge", package: "tender"),
        .product(name: "TenderDevSupport", package: "tender"),
        .product(name: "TenderTesting", package: "tender"),
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCInProcessTransport", package: "grpc-swift-2"),
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "Crypto", package: "swift-crypto"),
      ],
      path: "Benchmarks/TenderMicro",
      plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
    )
  ]
)
