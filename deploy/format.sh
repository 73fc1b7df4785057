#!/usr/bin/env bash
# Formats Tender's Swift code with swift-format and .swift-format (line length 120); `--check`
# (CI) changes nothing and fails on any difference. Generated code (Sources/TenderAPI/Generated)
# is left as protoc's plugins wrote it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
mapfile -t files < <(git ls-files '*.swift' | grep -v '^Sources/TenderAPI/Generated/')
if [ "${1:-}" = "--check" ]; then
  swift-format lint --strict --parallel --configuration .swift-format "${files[@]}"
else
  swift-format format --in-place --parallel --configuration .swift-format "${files[@]}"
fi
