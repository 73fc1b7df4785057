#!/usr/bin/env python3
"""Writes the fuzzers' seed corpus (fuzz/corpus/TARGET/NAME) from Tender's own messages.

Deterministic: running it again rewrites the same files. Inputs a fuzzer finds and that are
worth keeping are added beside these by hand (name them after what they found); this script
does not remove them. The layout of each target's input is documented on FuzzTarget
(Sources/TenderFuzzing/FuzzTargets.swift).
"""
import base64
import json
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(root / "clients" / "python"))

from tender_client.proto.grpc.health.v1 import health_pb2  # noqa: E402
from tender_client.proto.tender.auth.v1 import auth_service_pb2 as auth  # noqa: E402
from tender_client.proto.tender.payments.v1 import payment_service_pb2 as payments  # noqa: E402
from tender_client.proto.tender.refunds.v1 import refund_service_pb2 as refunds  # noqa: E402
from tender_client.proto.tender.type.v1 import money_pb2  # noqa: E402

corpus = root / "fuzz" / "corpus"

# The unary RPCs in the policy table's order: the requests target picks one by its first byte.
table = (root / "Sources" / "TenderAPI" / "Generated" / "PolicyTable.swift").read_text()
unary = [
    m.group(1)
    for m in re.finditer(r'method: "(\w+)", requiredScope: [^,]+, idempotency: [^,]+, isPublic: \w+, kind: \.unary', table)
]

WRITER, READER, STRANGER, NO_TOKEN = 0, 2, 4, 6


def write(target: str, name: str, data: bytes) -> None:
    directory = corpus / target
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(data)


def request(name: str, method: str, message, flags: int = WRITER, key: bytes | None = None) -> None:
    body = message if isinstance(message, bytes) else message.SerializeToString()
    prefix = bytes([unary.index(method), flags | (1 if key is not None else 0)])
    if key is not None:
        prefix += bytes([len(key)]) + key
    write("requests", name, prefix + body)


def money(minor: int, currency: str = "USD"):
    return money_pb2.Money(amount_minor=minor, currency=currency)


create = payments.CreatePaymentRequest(
    amount=money(1250), capture_method=payments.CAPTURE_METHOD_AUTOMATIC, payment_method_token="pm_card_visa",
    description="Order 1042", customer_reference="cus_42", metadata={"order": "1042"})
request("create-payment", "CreatePayment", create)
manual = payments.CreatePaymentRequest()
manual.CopyFrom(create)
manual.capture_method = payments.CAPTURE_METHOD_MANUAL
request("create-payment-manual", "CreatePayment", manual)
pan = payments.CreatePaymentRequest()
pan.CopyFrom(create)
pan.description = "card 4242 4242 4242 4242 exp 12/30"
request("create-payment-card-in-description", "CreatePayment", pan)
nul = payments.CreatePaymentRequest()
nul.CopyFrom(create)
nul.metadata["k\x00"] = "v\x01"
request("create-payment-control-characters", "CreatePayment", nul)
marks = payments.CreatePaymentRequest()
marks.CopyFrom(create)
marks.customer_reference = "e" + "\u0301" * 300
request("create-payment-combining-marks", "CreatePayment", marks)
request("create-payment-no-amount", "CreatePayment", payments.CreatePaymentRequest(payment_method_token="pm_card_visa"))
request("create-payment-bad-currency", "CreatePayment",
        payments.CreatePaymentRequest(amount=money(-5, "usd"), capture_method=payments.CAPTURE_METHOD_AUTOMATIC,
                                      payment_method_token="pm_card_visa"))
request("create-payment-read-token", "CreatePayment", create, flags=READER)
request("create-payment-no-token", "CreatePayment", create, flags=NO_TOKEN)
request("create-payment-key-is-a-card", "CreatePayment", create, key=b"4111111111111111")
request("create-payment-key-with-nul", "CreatePayment", create, key=b"key\x00with-nul")
request("create-payment-truncated", "CreatePayment", create.SerializeToString()[:7])
request("create-payment-garbage", "CreatePayment", b"\xff\xff\xff\xff\x0f\x12\x80")
request("get-payment", "GetPayment", payments.GetPaymentRequest(payment_id="pay_0123456789abcdefABCDEF01"))
request("get-payment-card-as-id", "GetPayment", payments.GetPaymentRequest(payment_id="pay_4111111111111111"))
request("get-payment-other-merchant", "GetPayment", payments.GetPaymentRequest(payment_id="pay_x"), flags=STRANGER)
request("list-payments", "ListPayments", payments.ListPaymentsRequest(
    page_size=5, statuses=[payments.PAYMENT_STATUS_SUCCEEDED], customer_reference="cus_42"))
request("list-payments-page-size", "ListPayments", payments.ListPaymentsRequest(page_size=100000))
request("list-payments-token", "ListPayments", payments.ListPaymentsRequest(page_token="djF8bWVyX3Rlc3Q.AAAA"))
request("capture-payment", "CapturePayment", payments.CapturePaymentRequest(
    payment_id="pay_0123456789abcdefABCDEF01", amount_minor=500))
request("cancel-payment", "CancelPayment", payments.CancelPaymentRequest(payment_id="pay_0123456789abcdefABCDEF01"))
request("create-refund", "CreateRefund", refunds.CreateRefundRequest(
    payment_id="pay_0123456789abcdefABCDEF01", amount_minor=100, reason=refunds.REFUND_REASON_REQUESTED_BY_CUSTOMER,
    metadata={"ticket": "T-1"}))
request("get-refund", "GetRefund", refunds.GetRefundRequest(refund_id="re_0123456789abcdef"))
request("list-refunds", "ListRefunds", refunds.ListRefundsRequest(payment_id="pay_0123", page_size=2))
request("issue-token", "IssueToken", auth.IssueTokenRequest(client_id="cli_fuzz", client_secret="secret"), flags=NO_TOKEN)
request("create-client", "CreateClient", auth.CreateClientRequest(
    merchant_id="mer_test", scopes=["payments:read", "platform"], display_name="Fuzz"))
request("create-client-other-merchant", "CreateClient", auth.CreateClientRequest(
    merchant_id="mer_other", scopes=["payments:read"], display_name="x"))
request("rotate-client-secret", "RotateClientSecret", auth.RotateClientSecretRequest(client_id="cli_nobody"))
request("revoke-token", "RevokeToken", auth.RevokeTokenRequest(token="eyJhbGciOiJub25lIn0.e30."))
request("introspect-token", "IntrospectToken", auth.IntrospectTokenRequest(token="abc"))
request("health-check", "Check", health_pb2.HealthCheckRequest(service="tender.payments.v1.PaymentService"))
request("health-check-long-name", "Check", health_pb2.HealthCheckRequest(service="x" * 300), flags=NO_TOKEN)


def b64(value) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


claims = {"iss": "tender", "sub": "cli_fuzz", "aud": "tender", "exp": 4102444800, "iat": 1700000000,
          "jti": "tok_fuzz", "scope": "payments:read", "mer": "mer_test"}
tokens = {
    "alg-none": b64({"alg": "none"}) + "." + b64(claims) + ".",
    "hs256": b64({"alg": "HS256", "typ": "JWT"}) + "." + b64(claims) + "." + b64(b"\x00" * 32),
    "eddsa-unknown-kid": b64({"alg": "EdDSA", "kid": "key_unknown", "typ": "JWT"}) + "." + b64(claims) + "." + b64(b"\x01" * 64),
    "es256-bad-signature": b64({"alg": "ES256", "kid": "k1"}) + "." + b64(claims) + "." + b64(b"\x02" * 64),
    "not-json": b64(b"{") + "." + b64(b"[") + "." + b64(b"x"),
    "two-parts": b64({"alg": "ES256"}) + "." + b64(claims),
    "huge-header": b64({"alg": "ES256", "kid": "k" * 4000}) + "." + b64(claims) + ".",
}
for name, token in tokens.items():
    write("access-tokens", name, b"\x00" + token.encode())
write("access-tokens", "raw-basic", b"\x01Basic dXNlcjpwYXNz")
write("access-tokens", "raw-bearer-empty", b"\x01Bearer ")

page = {
    "v1-unsigned": b64(b"v1|mer_test|00|1700000000000000|pay_1") + "." + b64(b"\x00" * 32),
    "w2-unsigned": b64(b"w2|mer_test|12|34") + "." + b64(b"\x00" * 32),
    "three-parts": "a.b.c",
    "not-base64": "!!!.???",
    "long": "A" * 2000 + "." + "B" * 43,
    "negative-cursor": b64(b"w2|mer_test|-1|-1") + "." + b64(b"\x03" * 32),
}
for name, token in page.items():
    write("page-tokens", name, token.encode())

write("webhook-signatures", "stripe", b"\x00t=1800000000,v1=" + b"ab" * 32 + b"\x00{\"id\":\"evt_1\"}")
write("webhook-signatures", "stripe-v0-and-spaces", b"\x00 t = 1800000000 , v0=00, v1=zz\x00{}")
write("webhook-signatures", "stripe-no-timestamp", b"\x00v1=" + b"00" * 32 + b"\x00body")
write("webhook-signatures", "stripe-old-timestamp", b"\x00t=1,v1=" + b"00" * 32 + b"\x00body")
write("webhook-signatures", "standard", b"\x01msg_1\x001800000000\x00v1," + base64.b64encode(b"\x00" * 32) + b"\x00{}")
write("webhook-signatures", "standard-several", b"\x01msg_2\x001800000000\x00v1a,xx v1,!!! v2,AAAA\x00{}")
write("webhook-signatures", "standard-bad-timestamp", b"\x01msg_3\x00soon\x00v1,AAAA\x00{}")
print(f"seeds written under {corpus.relative_to(root)}: "
      + ", ".join(f"{d.name} {len(list(d.iterdir()))}" for d in sorted(corpus.iterdir())))
