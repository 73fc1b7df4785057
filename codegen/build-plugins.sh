#!/usr/bin/env bash
# Builds the two protoc plugins (protoc-gen-swift, protoc-gen-grpc-swift-2) from the pinned
# grpc-swift-protobuf release, once, into .build-codegen/. Prints the bin directory.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
version=2.4.1
work="$root/.build-codegen"
src="$work/grpc-swift-protobuf-$version"
if [ ! -d "$src/.git" ]; then
  mkdir -p "$work"
  git clone --quiet --depth 1 --branch "$version" https://github.com/grpc/grpc-swift-protobuf "$src" >&2 2>/dev/null \
    || git clone --quiet --branch "$version" https://github.com/grpc/grpc-swift-protobuf "$src" >&2
fi
bin="$src/.build/release"
if [ ! -x "$bin/protoc-gen-grpc-swift-2" ] || [ ! -x "$bin/protoc-gen-swift" ]; then
  (cd "$src" && swift build -c release --product protoc-gen-grpc-swift-2 >&2 && swift build -c release --product protoc-gen-swift >&2)
fi
echo "$bin"
