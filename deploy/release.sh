#!/usr/bin/env bash
# Builds the release artifact: `tender` and `tender-provider-sim`, optimized, with the Swift
# standard library and Foundation linked statically, stripped (their debug information kept
# beside the archive for symbolicating crashes), packed with the documents an operator needs and
# the list of Debian packages they need at run time (deploy/runtime-packages.txt).
#
#   deploy/release.sh [OUTPUT_DIR]      (default .build-release; prints the archive's path)
#
# The archive unpacks to tender-VERSION/{bin,share/doc/tender,runtime-packages.txt}; VERSION is
# $TENDER_VERSION, else the commit.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
output=$(mkdir -p "${1:-$root/.build-release}" && cd "${1:-$root/.build-release}" && pwd)
version=${TENDER_VERSION:-$(git rev-parse --short=12 HEAD 2>/dev/null || echo dev)}
arch=$(uname -m)

for product in tender tender-provider-sim; do
  swift build -c release --static-swift-stdlib --product "$product" >&2
done
bin=$(swift build -c release --static-swift-stdlib --show-bin-path)

name="tender-$version"
stage="$output/stage"
rm -rf "$stage"
mkdir -p "$stage/$name/bin" "$stage/$name/share/doc/tender" "$output/debug"
for product in tender tender-provider-sim; do
  objcopy --only-keep-debug "$bin/$product" "$output/debug/$product.debug"
  strip --strip-all -o "$stage/$name/bin/$product" "$bin/$product"
  objcopy --add-gnu-debuglink="$output/debug/$product.debug" "$stage/$name/bin/$product"
done
cp README.md deploy/RUNBOOK.md "$stage/$name/share/doc/tender/"
cp deploy/runtime-packages.txt "$stage/$name/"
archive="$output/$name-linux-$arch.tar.gz"
tar -C "$stage" --owner=0 --group=0 --numeric-owner -czf "$archive" "$name"
rm -rf "$stage"
echo "$archive"
