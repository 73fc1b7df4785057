"""Webhooks signed by the reference libraries (standardwebhooks, stripe) against a running Tender."""
import datetime
import json
import os
import pathlib
import ssl
import subprocess
import tempfile
import urllib.error
import urllib.request

import standardwebhooks
from stripe import WebhookSignature

from tender_dev import STANDARD_WEBHOOK_SECRET, STRIPE_WEBHOOK_SECRET


def _post(server, path, body, headers):
    context = ssl.create_default_context(cafile=str(server["ca"]))
    request = urllib.request.Request(server["bridge"] + path, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def _event(event_id):
    return json.dumps({"id": event_id, "object": "event", "type": "customer.created", "data": {"object": {"id": "cus_1"}}}).encode()


def test_standard_webhooks_library_signature_is_accepted(tender_server):
    body = _event("evt_std_1")
    now = datetime.datetime.now(tz=datetime.timezone.utc)
    signature = standardwebhooks.Webhook(STANDARD_WEBHOOK_SECRET).sign("msg_std_1", now, body.decode())
    headers = {"webhook-id": "msg_std_1", "webhook-timestamp": str(int(now.timestamp())), "webhook-signature": signature, "content-type": "application/json"}
    assert _post(tender_server, "/webhooks/acme", body, headers) == 200
    # The same again: acknowledged, nothing new.
    assert _post(tender_server, "/webhooks/acme", body, headers) == 200
    tampered = body.replace(b"cus_1", b"cus_2")
    assert _post(tender_server, "/webhooks/acme", tampered, headers) == 401
    other = standardwebhooks.Webhook("whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY").sign("msg_std_1", now, body.decode())
    assert _post(tender_server, "/webhooks/acme", body, dict(headers, **{"webhook-signature": other})) == 401


def test_stripe_library_signature_is_accepted(tender_server):
    body = _event("evt_stripe_1")
    header = WebhookSignature.generate_signature_header(body.decode(), STRIPE_WEBHOOK_SECRET)
    assert _post(tender_server, "/webhooks/stripe", body, {"Stripe-Signature": header, "content-type": "application/json"}) == 200
    wrong = WebhookSignature.generate_signature_header(body.decode(), "whsec_wrong")
    assert _post(tender_server, "/webhooks/stripe", body, {"Stripe-Signature": wrong, "content-type": "application/json"}) == 401


def test_simulator_signer_agrees_with_stripe_library(tender_server):
    simulator = pathlib.Path(tender_server["binary"]).with_name("tender-provider-sim")
    body = _event("evt_sim_1")
    with tempfile.NamedTemporaryFile(delete=False) as file:
        file.write(body)
    try:
        timestamp = 1_700_000_000
        header = subprocess.run(
            [str(simulator), "--sign-webhook-body", file.name, "--webhook-secret", "whsec_check", "--timestamp", str(timestamp)],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
    finally:
        os.unlink(file.name)
    assert header == WebhookSignature.generate_signature_header(body.decode(), "whsec_check", timestamp=timestamp)
    # And Stripe's verifier accepts it (no tolerance: the timestamp is fixed).
    assert WebhookSignature.verify_header(body, header, "whsec_check", tolerance=None)
