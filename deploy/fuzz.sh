#!/usr/bin/env bash
# Fuzzing: builds tender-fuzz with libFuzzer and AddressSanitizer (in its own build folder,
# .build-fuzz) and runs each target (FuzzTarget in Sources/TenderFuzzing) for FUZZ_SECONDS
# (default 60) over a copy of its seed corpus in fuzz/corpus. Prints what each run tried; fails on
# any finding (a crash, a sanitizer report, a broken property, a timeout), whose input is kept in
# .build-fuzz/findings/ and can be replayed with
#   TENDER_FUZZ_TARGET=TARGET .build-fuzz/debug/tender-fuzz FILE
# Usage: deploy/fuzz.sh [TARGET ...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
seconds=${FUZZ_SECONDS:-60}
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(requests access-tokens page-tokens webhook-signatures)

# Swift 6.3's `-sanitize=fuzzer -sanitize=address` (SwiftPM passes them in this order) leaves Swift
# code without coverage counters, so libFuzzer would see only the C dependencies' edges; the
# coverage is asked for explicitly (edges, and comparisons for libFuzzer to solve), and checked.
swift build --sanitize=fuzzer --sanitize=address \
  -Xswiftc -sanitize-coverage=edge,inline-8bit-counters,pc-table,trace-cmp \
  --product tender-fuzz --scratch-path "$root/.build-fuzz"
binary="$root/.build-fuzz/debug/tender-fuzz"
objects="$root/.build-fuzz/$(uname -m)-unknown-linux-gnu/debug"
for object in TenderCore.build/CardNumbers.swift.o TenderRPC.build/PaymentRPCService.swift.o; do
  # grep -c reads all of objdump's output (grep -q would stop early and fail the pipe).
  if [ "$(objdump -h "$objects/$object" | grep -c __sancov_cntrs)" -eq 0 ]; then
    echo "fuzz: $object has no coverage counters: the fuzzer would be blind to Tender's code" >&2
    exit 2
  fi
done
findings="$root/.build-fuzz/findings"
mkdir -p "$findings"

status=0
summary=()
for target in "${targets[@]}"; do
  [ -d "fuzz/corpus/$target" ] || { echo "fuzz: no corpus for $target" >&2; exit 2; }
  work=$(mktemp -d)
  cp -R "fuzz/corpus/$target" "$work/corpus"
  seeds=$(find "$work/corpus" -type f | wc -l)
  echo "fuzz: $target for ${seconds}s from $seeds seeds" >&2
  rc=0
  # Leaks are not findings here (the in-process server lives until exit); memory is bounded by
  # -rss_limit_mb and each input by -timeout.
  TENDER_FUZZ_TARGET=$target TENDER_TEST_LOG_LEVEL=critical ASAN_OPTIONS=detect_leaks=0 SWIFT_BACKTRACE=enable=no "$binary" \
    -max_total_time="$seconds" -max_len=4096 -timeout=20 -rss_limit_mb=4096 -detect_leaks=0 \
    -print_final_stats=1 -artifact_prefix="$findings/$target-" "$work/corpus" > "$work/log" 2>&1 || rc=$?
  executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log" | tail -n 1)
  peak=$(sed -n 's/^stat::peak_rss_mb: *//p' "$work/log" | tail -n 1)
  coverage=$(grep -o 'cov: [0-9]*' "$work/log" | tail -n 1 | cut -d' ' -f2)
  kept=$(find "$work/corpus" -type f | wc -l)
  line="$target: ${executions:-?} executions in ${seconds}s, coverage ${coverage:-?} edges, corpus $seeds → $kept inputs, peak RSS ${peak:-?} MB"
  if [ "$rc" -ne 0 ]; then
    status=1
    line="$line — FINDING (exit $rc)"
    grep -E "finding:|ERROR: |SUMMARY: |Fatal error|Test unit written" "$work/log" | head -n 20 >&2 || true
    tail -n 30 "$work/log" >&2
  fi
  echo "fuzz: $line" >&2
  summary+=("$line")
  rm -rf "$work"
done
printf 'fuzz summary:\n' >&2
printf '  %s\n' "${summary[@]}" >&2
exit "$status"
