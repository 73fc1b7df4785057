#!/usr/bin/env bash
# Fails when proto/ and the committed generated code disagree: regenerates into a temporary tree
# and compares it with Sources/TenderAPI/Generated/, clients/python/tender_client/proto/ and
# clients/cpp/generated/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$root/codegen/generate.sh" "$tmp"
status=0
for dir in Sources/TenderAPI/Generated clients/python/tender_client/proto clients/cpp/generated; do
  if ! diff -r "$root/$dir" "$tmp/$dir" >"$tmp/diff.txt" 2>&1; then
    echo "codegen check: $dir differs from what proto/ generates; run codegen/generate.sh and commit:" >&2
    head -n 40 "$tmp/diff.txt" >&2
    status=1
  fi
done
[ "$status" -eq 0 ] && echo "codegen check: generated code matches proto/"
exit "$status"
