"""The policy-table generator refuses schemas with an RPC that declares no policy."""
import os
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _generate(proto_root, tmp_path):
    import grpc_tools

    wkt = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    protos = sorted(str(p.relative_to(proto_root)) for p in proto_root.rglob("*.proto"))
    descriptor = tmp_path / "set.pb"
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", str(proto_root), "-I", wkt, "--include_imports",
         f"--descriptor_set_out={descriptor}", *protos],
        check=True,
    )
    out = tmp_path / "out"
    out.mkdir()
    return subprocess.run(
        [sys.executable, str(ROOT / "codegen" / "policy_table.py"), str(descriptor), ",".join(protos), str(out),
         str(ROOT / "clients" / "python")],
        capture_output=True,
        text=True,
    ), out


def test_committed_schemas_generate_the_committed_table(tmp_path):
    result, out = _generate(ROOT / "proto", tmp_path)
    assert result.returncode == 0, result.stderr
    committed = (ROOT / "Sources" / "TenderAPI" / "Generated" / "PolicyTable.swift").read_text()
    assert (out / "PolicyTable.swift").read_text() == committed


def test_an_rpc_without_a_policy_fails_naming_it(tmp_path):
    proto_root = tmp_path / "proto"
    shutil.copytree(ROOT / "proto", proto_root)
    service = proto_root / "tender" / "payments" / "v1" / "payment_service.proto"
    text = service.read_text()
    unguarded = text.replace(
        """  rpc GetPayment(GetPaymentRequest) returns (GetPaymentResponse) {
    option (tender.options.v1.policy) = {
      scope: "payments:read"
      idempotency: IDEMPOTENCY_NONE
    };
  }""",
        "  rpc GetPayment(GetPaymentRequest) returns (GetPaymentResponse);",
    )
    assert unguarded != text
    service.write_text(unguarded)
    result, out = _generate(proto_root, tmp_path)
    assert result.returncode != 0
    assert "tender.payments.v1.PaymentService/GetPayment" in result.stderr
    assert "declare no (tender.options.v1.policy)" in result.stderr
    assert not (out / "PolicyTable.swift").exists()


def test_a_policy_without_scope_or_public_fails(tmp_path):
    proto_root = tmp_path / "proto"
    shutil.copytree(ROOT / "proto", proto_root)
    service = proto_root / "tender" / "refunds" / "v1" / "refund_service.proto"
    text = service.read_text()
    broken = text.replace('      scope: "refunds:read"\n', "", 1)
    assert broken != text
    service.write_text(broken)
    result, _ = _generate(proto_root, tmp_path)
    assert result.returncode != 0
    assert "tender.refunds.v1.RefundService/GetRefund: declares neither a scope nor public: true" in result.stderr
