#!/usr/bin/env bash
# Regenerates everything derived from proto/: Swift messages and gRPC stubs, the policy table,
# reflection descriptors (Sources/TenderAPI/Generated/), the Python stubs (clients/python/) and the
# C++ stubs (clients/cpp/generated/, with Debian's protoc and grpc_cpp_plugin, which match the
# libprotobuf and libgrpc++ the C++ client is built against).
# Usage: codegen/generate.sh [OUTPUT_ROOT]   (default: the repository itself)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root}
bin=$("$root/codegen/build-plugins.sh")
command -v protoc >/dev/null || { echo "codegen: protoc not found (apt-get install protobuf-compiler)" >&2; exit 1; }
python3 -c "import grpc_tools" 2>/dev/null || { echo "codegen: grpcio-tools missing (pip install -r clients/python/requirements.txt)" >&2; exit 1; }
command -v grpc_cpp_plugin >/dev/null || { echo "codegen: grpc_cpp_plugin not found (apt-get install protobuf-compiler-grpc)" >&2; exit 1; }

swift_out="$out/Sources/TenderAPI/Generated"
py_out="$out/clients/python/tender_client/proto"
cpp_out="$out/clients/cpp/generated"
rm -rf "$swift_out" "$py_out" "$cpp_out"
mkdir -p "$swift_out" "$py_out" "$cpp_out"

cd "$root/proto"
# Files served by Tender, in a stable order.
mapfile -t protos < <(find tender grpc -name '*.proto' | LC_ALL=C sort)
wkt=$(python3 -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')

protoc -I . -I "$wkt" \
  --plugin=protoc-gen-swift="$bin/protoc-gen-swift" \
  --plugin=protoc-gen-grpc-swift="$bin/protoc-gen-grpc-swift-2" \
  --swift_out="$swift_out" \
  --swift_opt=Visibility=Public,FileNaming=PathToUnderscores \
  --grpc-swift_out="$swift_out" \
  --grpc-swift_opt=Visibility=Public,FileNaming=PathToUnderscores,Server=true,Client=true \
  "${protos[@]}"
# Messages-only files produce an empty .grpc.swift: drop those.
find "$swift_out" -name '*.grpc.swift' -print0 | while IFS= read -r -d '' f; do
  grep -q 'GRPCCore' "$f" || rm -f "$f"
done

python3 -m grpc_tools.protoc -I . -I "$wkt" \
  --python_out="$py_out" --pyi_out="$py_out" --grpc_python_out="$py_out" "${protos[@]}"
# Make the generated tree importable as packages and rewrite absolute imports into the package.
find "$py_out" -type d -print0 | while IFS= read -r -d '' d; do touch "$d/__init__.py"; done
find "$py_out" -name '*.py' -o -name '*.pyi' | LC_ALL=C sort | while read -r f; do
  sed -i -E 's/^from (tender|grpc\.health|grpc\.reflection)(\.[a-z0-9_.]+)? import /from tender_client.proto.\1\2 import /' "$f"
done

# C++: Tender's services and messages, and google.rpc.Status/ErrorInfo (kept verbatim in
# proto/google/rpc/) to read the error details Tender sends.
mapfile -t cpp_protos < <(find tender google -name '*.proto' | LC_ALL=C sort)
protoc -I . -I "$wkt" --cpp_out="$cpp_out" --grpc_out="$cpp_out" \
  --plugin=protoc-gen-grpc="$(command -v grpc_cpp_plugin)" "${cpp_protos[@]}"
# Messages-only files produce stub files with no service: drop those pairs.
find "$cpp_out" -name '*.grpc.pb.h' -print0 | while IFS= read -r -d '' f; do
  grep -q '^class .* final {' "$f" || rm -f "$f" "${f%.h}.cc"
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
protoc -I . -I "$wkt" --include_imports --descriptor_set_out="$tmp/tender.pb" "${protos[@]}"
served=$(IFS=,; echo "${protos[*]}")
python3 "$root/codegen/policy_table.py" "$tmp/tender.pb" "$served" "$swift_out" "$out/clients/python"
