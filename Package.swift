// swift-tools-version:6.1
import PackageDescription

let swiftSettings: [SwiftSetting] = [
  .swiftLanguageMode(.v6),
  .enableUpcomingFeature("ExistentialAny"),
  .enableUpcomingFeature("InternalImportsByDefault"),
  .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
  name: "tender",
  platforms: [.macOS(.v15)],
  products: [
    .executable(name: "tender", targets: ["tender"]),
    .executable(name: "tender-provider-sim", targets: ["tender-provider-sim"]),
    .executable(name: "tender-load", targets: ["tender-load"]),
    .executable(name: "tender-fuzz", targets: ["tender-fuzz"]),
    // For the micro-benchmarks (bench/micro), a package of their own that measures these modules.
    .library(name: "TenderAPI", targets: ["TenderAPI"]),
    .library(name: "TenderCore", targets: ["TenderCore"]),
    .library(name: "TenderAuth", targets: ["TenderAuth"]),
    .library(name: "TenderRedis", targets: ["TenderRedis"]),
    .library(name: "TenderRPC", targets: ["TenderRPC"]),
    .library(name: "TenderBridge", targets: ["TenderBridge"]),
    .library(name: "TenderDevSupport", targets: ["TenderDevSupport"]),
    .library(name: "TenderTesting", targets: ["TenderTesting"]),
  ],
  dependencies: [
    .package(url: "https://github.com/grpc/grpc-swift-2.git", exact: "2.4.3"),
    .package(url: "https://github.com/grpc/grpc-swift-nio-transport.git", exact: "2.9.2"),
    .package(url: "https://github.com/grpc/grpc-swift-protobuf.git", exact: "2.4.1"),
    .package(url: "https://github.com/apple/swift-protobuf.git", exact: "1.39.0"),
    .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    .package(url: "https://github.com/apple/swift-nio-ssl.git", exact: "2.37.6"),
    .package(url: "https://github.com/apple/swift-nio-http2.git", exact: "1.46.0"),
    // TimedCertificateReloader: TLS certificates replaced on disk are served without a restart.
    .package(url: "https://github.com/apple/swift-nio-extras.git", exact: "1.35.2"),
    .package(url: "https://github.com/apple/swift-log.git", exact: "1.16.2"),
    .package(url: "https://github.com/apple/swift-argument-parser.git", exact: "1.8.2"),
    .package(url: "https://github.com/apple/swift-certificates.git", exact: "1.21.1"),
    .package(url: "https://github.com/apple/swift-crypto.git", exact: "4.5.2"),
    .package(url: "https://github.com/apple/swift-asn1.git", exact: "1.7.4"),
    .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", exact: "2.13.0"),
    .package(url: "https://github.com/vapor/postgres-nio.git", exact: "1.33.2"),
    .package(url: "https://github.com/apple/swift-metrics.git", exact: "2.13.0"),
    .package(url: "https://github.com/swift-server/swift-prometheus.git", exact: "2.4.1"),
    .package(url: "https://github.com/hummingbird-project/hummingbird.git", exact: "2.28.1"),
    .package(url: "https://github.com/vapor/jwt-kit.git", exact: "5.8.0"),
    .package(url: "https://github.com/swift-server/async-http-client.git", exact: "1.37.0"),
    .package(url: "https://github.com/apple/swift-http-types.git", exact: "1.8.0"),
    // Settings from flags, the environment and a secrets folder (already in the graph through async-http-client).
    .package(url: "https://github.com/apple/swift-configuration.git", exact: "1.4.0", traits: []),
    .package(url: "https://github.com/apple/swift-system.git", from: "1.8.1"),
    // Child processes of tender dev and the tests (PostgreSQL and Redis tools, the tender binary).
    .package(url: "https://github.com/swiftlang/swift-subprocess.git", exact: "1.0.2"),
    .package(url: "https://github.com/apple/swift-distributed-tracing.git", exact: "1.7.3"),
    // OTLP over gRPC only: Tender already carries grpc-swift; the HTTP exporter would add a client stack.
    .package(url: "https://github.com/swift-otel/swift-otel.git", exact: "1.6.0", traits: ["OTLPGRPC"]),
    // Latency percentiles of the load driver.
    .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", exact: "0.2.0"),
  ],
  targets: [
    // Generated from proto/ by codegen/generate.sh; never edited by hand.
    .target(
      name: "TenderAPI",
      dependencies: [
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
      ],
      swiftSettings: [.swiftLanguageMode(.v6)]
    ),
    // Domain types and the protocols adapters implement; no I/O.
    .target(
      name: "TenderCore",
      dependencies: [],
      swiftSettings: swiftSettings
    ),
    // Use cases over the ports: the keyed-operation runner and the payment, refund and client
    // operations it drives (for the RPCs and the completer alike); no I/O of its own.
    .target(
      name: "TenderOperations",
      dependencies: [
        "TenderCore",
        .product(name: "Crypto", package: "swift-crypto"),
        .product(name: "Logging", package: "swift-log"),
      ],
      swiftSettings: swiftSettings
    ),
    // Client secrets, access tokens (JWT), signing keys and their rotation; storage behind protocols.
    .target(
      name: "TenderAuth",
      dependencies: [
        "TenderCore",
        .product(name: "JWTKit", package: "jwt-kit"),
        .product(name: "Crypto", package: "swift-crypto"),
        .product(name: "CryptoExtras", package: "swift-crypto"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "Logging", package: "swift-log"),
      ],
      swiftSettings: swiftSettings
    ),
    // Stores and migrations on PostgresNIO.
    .target(
      name: "TenderPostgres",
      dependencies: [
        "TenderCore",
        "TenderAuth",
        .product(name: "Tracing", package: "swift-distributed-tracing"),
        .product(name: "PostgresNIO", package: "postgres-nio"),
        .product(name: "NIOSSL", package: "swift-nio-ssl"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
      ],
      swiftSettings: swiftSettings
    ),
    // hiredis, for RESP encoding and parsing.
    .systemLibrary(
      name: "CHiredis",
      pkgConfig: "hiredis",
      providers: [.apt(["libhiredis-dev"])]
    ),
    // Redis over SwiftNIO (RESP via hiredis), the shared rate limiter.
    .target(
      name: "TenderRedis",
      dependencies: [
        "TenderCore",
        "TenderAuth",
        "CHiredis",
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOSSL", package: "swift-nio-ssl"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
      ],
      swiftSettings: swiftSettings
    ),
    // gRPC service implementations and interceptors.
    .target(
      name: "TenderRPC",
      dependencies: [
        "TenderCore",
        "TenderOperations",
        "TenderAPI",
        "TenderAuth",
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "Crypto", package: "swift-crypto"),
        .product(name: "Tracing", package: "swift-distributed-tracing"),
        .product(name: "Instrumentation", package: "swift-distributed-tracing"),
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "CoreMetrics", package: "swift-metrics"),
      ],
      swiftSettings: swiftSettings
    ),
    // The HTTP bridge (Hummingbird): health, metrics; later webhooks and the JWKS.
    .target(
      name: "TenderBridge",
      dependencies: [
        "TenderCore",
        .product(name: "Crypto", package: "swift-crypto"),
        .product(name: "HTTPTypes", package: "swift-http-types"),
        .product(name: "Hummingbird", package: "hummingbird"),
        .product(name: "HummingbirdCore", package: "hummingbird"),
        .product(name: "HummingbirdTLS", package: "hummingbird"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOSSL", package: "swift-nio-ssl"),
        .product(name: "Logging", package: "swift-log"),
      ],
      swiftSettings: swiftSettings
    ),
    // The payment-provider simulator (a subset of Stripe's API), as a library for in-process tests.
    .target(
      name: "TenderProviderSim",
      dependencies: [
        "TenderBridge",
        .product(name: "Hummingbird", package: "hummingbird"),
        .product(name: "AsyncHTTPClient", package: "async-http-client"),
        .product(name: "NIOSSL", package: "swift-nio-ssl"),
        .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "HTTPTypes", package: "swift-http-types"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
      ],
      swiftSettings: swiftSettings
    ),
    // Load driver: the generated client against a running Tender, latencies in an HdrHistogram.
    .executableTarget(
      name: "tender-load",
      dependencies: [
        "TenderAPI",
        "TenderBridge",
        .product(name: "AsyncHTTPClient", package: "async-http-client"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "NIOSSL", package: "swift-nio-ssl"),
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
        .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        .product(name: "Histogram", package: "hdrhistogram-swift"),
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ],
      swiftSettings: swiftSettings
    ),
    .executableTarget(
      name: "tender-provider-sim",
      dependencies: [
        "TenderProviderSim",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "UnixSignals", package: "swift-service-lifecycle"),
      ],
      swiftSettings: swiftSettings
    ),
    // Provider connectors: Stripe's HTTP API.
    .target(
      name: "TenderProviders",
      dependencies: [
        "TenderCore",
        .product(name: "AsyncHTTPClient", package: "async-http-client"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "Logging", package: "swift-log"),
      ],
      swiftSettings: swiftSettings
    ),
    // gRPC's server transport on SwiftNIO HTTP/2: one channel handler serves every stream of a
    // connection.
    .target(
      name: "TenderTransport",
      dependencies: [
        "TenderCore",
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOSSL", package: "swift-nio-ssl"),
        .product(name: "NIOTLS", package: "swift-nio"),
        .product(name: "NIOHTTP2", package: "swift-nio-http2"),
        .product(name: "NIOHPACK", package: "swift-nio-http2"),
      ],
      swiftSettings: swiftSettings
    ),
    // Composition root: configuration, TLS, the service group.
    .target(
      name: "TenderServer",
      dependencies: [
        "TenderCore",
        "TenderTransport",
        "TenderOperations",
        "TenderAuth",
        "TenderRedis",
        "TenderProviders",
        .product(name: "OTel", package: "swift-otel"),
        .product(name: "Tracing", package: "swift-distributed-tracing"),
        "TenderAPI",
        "TenderRPC",
        "TenderPostgres",
        "TenderBridge",
        .product(name: "Configuration", package: "swift-configuration"),
        .product(name: "SystemPackage", package: "swift-system"),
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCInProcessTransport", package: "grpc-swift-2"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOSSL", package: "swift-nio-ssl"),
        .product(name: "NIOCertificateReloading", package: "swift-nio-extras"),
        .product(name: "X509", package: "swift-certificates"),
        .product(name: "SwiftASN1", package: "swift-asn1"),
        .product(name: "PostgresNIO", package: "postgres-nio"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "UnixSignals", package: "swift-service-lifecycle"),
        .product(name: "Crypto", package: "swift-crypto"),
        .product(name: "Prometheus", package: "swift-prometheus"),
        .product(name: "CoreMetrics", package: "swift-metrics"),
      ],
      swiftSettings: swiftSettings
    ),
    // Local PostgreSQL, Redis, certificates and simulator for `tender dev` and the tests; never
    // part of what `tender serve` runs.
    .target(
      name: "TenderDevSupport",
      dependencies: [
        "TenderProviderSim",
        .product(name: "Subprocess", package: "swift-subprocess"),
        .product(name: "SystemPackage", package: "swift-system"),
        .product(name: "X509", package: "swift-certificates"),
        .product(name: "SwiftASN1", package: "swift-asn1"),
        .product(name: "Crypto", package: "swift-crypto"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
      ],
      swiftSettings: swiftSettings
    ),
    .target(name: "CTenderAllocator"),
    .executableTarget(
      name: "tender",
      dependencies: [
        "CTenderAllocator",
        "TenderServer",
        "TenderDevSupport",
        "TenderProviderSim",
        "TenderAPI",
        "TenderAuth",
        "TenderCore",
        "TenderPostgres",
        "TenderRPC",
        .product(name: "PostgresNIO", package: "postgres-nio"),
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
        .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
      ],
      swiftSettings: swiftSettings
    ),
    // Fuzz targets over the in-process server and the parsers (FuzzTarget); run by libFuzzer
    // through tender-fuzz (deploy/fuzz.sh) and over the seed corpus by the tests.
    .target(
      name: "TenderFuzzing",
      dependencies: [
        "TenderTesting",
        "TenderServer",
        "TenderRPC",
        "TenderBridge",
        "TenderCore",
        "TenderAPI",
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCInProcessTransport", package: "grpc-swift-2"),
        .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        .product(name: "Crypto", package: "swift-crypto"),
      ],
      swiftSettings: swiftSettings
    ),
    .executableTarget(
      name: "tender-fuzz",
      dependencies: ["TenderFuzzing"],
      swiftSettings: swiftSettings
    ),
    // Test support: ephemeral PostgreSQL, certificates, an in-process server.
    .target(
      name: "TenderTesting",
      dependencies: [
        "TenderServer",
        "TenderDevSupport",
        .product(name: "GRPCInProcessTransport", package: "grpc-swift-2"),
        .product(name: "Subprocess", package: "swift-subprocess"),
        .product(name: "SystemPackage", package: "swift-system"),
        "TenderProviderSim",
        "TenderAuth",
        "TenderCore",
        .product(name: "Tracing", package: "swift-distributed-tracing"),
        "TenderRPC",
        "TenderPostgres",
        .product(name: "PostgresNIO", package: "postgres-nio"),
        "TenderAPI",
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOSSL", package: "swift-nio-ssl"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
      ],
      swiftSettings: swiftSettings
    ),
    .testTarget(
      name: "TenderServerTests",
      dependencies: [
        "TenderServer",
        "TenderDevSupport",
        .product(name: "GRPCInProcessTransport", package: "grpc-swift-2"),
        "TenderOperations",
        "TenderProviders",
        "TenderBridge",
        .product(name: "AsyncHTTPClient", package: "async-http-client"),
        .product(name: "NIOHTTP1", package: "swift-nio"),
        "TenderProviderSim",
        "TenderTesting",
        "TenderFuzzing",
        "TenderAPI",
        "TenderRPC",
        "TenderAuth",
        "TenderCore",
        "TenderRedis",
        "TenderPostgres",
        .product(name: "PostgresNIO", package: "postgres-nio"),
        .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
        .product(name: "Crypto", package: "swift-crypto"),
        .product(name: "Metrics", package: "swift-metrics"),
        .product(name: "Tracing", package: "swift-distributed-tracing"),
        .product(name: "InMemoryTracing", package: "swift-distributed-tracing"),
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOSSL", package: "swift-nio-ssl"),
        .product(name: "NIOHTTP2", package: "swift-nio-http2"),
        .product(name: "NIOTLS", package: "swift-nio"),
        .product(name: "Prometheus", package: "swift-prometheus"),
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "Logging", package: "swift-log"),
      ],
      swiftSettings: swiftSettings
    ),
    .testTarget(
      name: "TenderTransportTests",
      dependencies: [
        "TenderTransport",
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOHTTP2", package: "swift-nio-http2"),
        .product(name: "NIOHPACK", package: "swift-nio-http2"),
      ],
      swiftSettings: swiftSettings
    ),
    .testTarget(
      name: "TenderProvidersTests",
      dependencies: [
        "TenderProviders",
        "TenderProviderSim",
        "TenderDevSupport",
        .product(name: "Hummingbird", package: "hummingbird"),
        .product(name: "HummingbirdTesting", package: "hummingbird"),
        .product(name: "HTTPTypes", package: "swift-http-types"),
        .product(name: "NIOCore", package: "swift-nio"),
        "TenderCore",
        .product(name: "Logging", package: "swift-log"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
      ],
      swiftSettings: swiftSettings
    ),
    .testTarget(
      name: "TenderBridgeTests",
      dependencies: [
        "TenderBridge",
        "TenderCore",
        .product(name: "Hummingbird", package: "hummingbird"),
        .product(name: "HummingbirdTesting", package: "hummingbird"),
        .product(name: "HTTPTypes", package: "swift-http-types"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "Logging", package: "swift-log"),
      ],
      swiftSettings: swiftSettings
    ),
    .testTarget(
      name: "TenderAuthTests",
      dependencies: [
        "TenderAuth",
        "TenderCore",
        "TenderTesting",
        .product(name: "Crypto", package: "swift-crypto"),
        .product(name: "Logging", package: "swift-log"),
      ],
      swiftSettings: swiftSettings
    ),
    .testTarget(
      name: "TenderCoreTests",
      dependencies: ["TenderCore"],
      swiftSettings: swiftSettings
    ),

    .testTarget(
      name: "TenderRPCTests",
      dependencies: [
        "TenderRPC",
        .product(name: "GRPCCore", package: "grpc-swift-2"),
      ],
      swiftSettings: swiftSettings
    ),
    .testTarget(
      name: "TenderRedisTests",
      dependencies: [
        "TenderRedis",
        "TenderAuth",
        "TenderDevSupport",
        "TenderCore",
        "TenderServer",
        "TenderTesting",
        .product(name: "Logging", package: "swift-log"),
      ],
      swiftSettings: swiftSettings
    ),
    .testTarget(
      name: "TenderPostgresTests",
      dependencies: [
        "TenderPostgres",
        "TenderCore",
        "TenderAuth",
        .product(name: "Crypto", package: "swift-crypto"),
        "TenderTesting",
        "TenderDevSupport",
        .product(name: "PostgresNIO", package: "postgres-nio"),
        .product(name: "Logging", package: "swift-log"),
      ],
      swiftSettings: swiftSettings
    ),
  ]
)
