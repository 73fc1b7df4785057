"""The operator CLI (`tender payments …`, `tender refunds …`) against a live `tender dev` over
TLS: tables for people, --json for scripts, exit status by gRPC status, errors with reason and
field."""
import json
import queue
import subprocess
import threading
import uuid

import pytest


def tender(server, *arguments, check=True):
    """Runs the CLI as the dev client; returns (exit status, stdout, stderr)."""
    command = [server["binary"], *arguments, "--target", server["target"], "--ca-file", str(server["ca"]),
               "--credentials", str(server["state"] / "dev-client.json")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if check:
        assert done.returncode == 0, (arguments, done.stdout, done.stderr)
    return done.returncode, done.stdout, done.stderr


def tender_json(server, *arguments):
    return json.loads(tender(server, *arguments, "--json")[1])


class Watch:
    """`tender payments watch --json` in the background, its lines as events."""

    def __init__(self, server):
        self.process = subprocess.Popen(
            [server["binary"], "payments", "watch", "--json", "--target", server["target"], "--ca-file",
             str(server["ca"]), "--credentials", str(server["state"] / "dev-client.json")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(None)

    def until(self, predicate, timeout=30):
        while True:
            event = self.lines.get(timeout=timeout)
            assert event is not None, self.process.stderr.read()
            if predicate(event):
                return event

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=10)


def test_create_capture_refund_list_and_watch(cli_server):
    reference = f"cli-{uuid.uuid4().hex[:10]}"
    watch = Watch(cli_server)
    try:
        # The watch starts from now: marker payments until it shows one, so the rest is watched.
        for _ in range(30):
            marker = tender_json(cli_server, "payments", "create", "--amount", "1.00", "--currency", "EUR",
                                 "--payment-method", "pm_card_visa")
            try:
                watch.until(lambda e: e["payment_id"] == marker["payment_id"], timeout=2)
                break
            except queue.Empty:
                continue
        else:
            pytest.fail("the watch never showed a marker payment")

        payment = tender_json(cli_server, "payments", "create", "--amount", "10.00", "--currency", "EUR",
                              "--payment-method", "pm_card_visa", "--capture", "manual",
                              "--customer-reference", reference, "--metadata", "order=A-1")
        assert payment["status"] == "PAYMENT_STATUS_REQUIRES_CAPTURE"
        assert payment["amount"] == {"amount_minor": "1000", "currency": "EUR"}
        assert payment["metadata"] == {"order": "A-1"}
        pid = payment["payment_id"]

        captured = tender_json(cli_server, "payments", "capture", pid, "--amount", "6.00")
        assert captured["status"] == "PAYMENT_STATUS_SUCCEEDED" and captured["amount_captured_minor"] == "600"

        refund = tender_json(cli_server, "refunds", "create", pid, "--amount-minor", "250")
        assert refund["payment_id"] == pid and refund["amount"]["amount_minor"] == "250"
        assert tender_json(cli_server, "refunds", "get", refund["refund_id"])["refund_id"] == refund["refund_id"]
        refunds = tender_json(cli_server, "refunds", "list", "--payment", pid)["refunds"]
        assert [r["refund_id"] for r in refunds] == [refund["refund_id"]]

        listed = tender_json(cli_server, "payments", "list", "--customer-reference", reference)["payments"]
        assert [p["payment_id"] for p in listed] == [pid]
        assert tender_json(cli_server, "payments", "get", pid)["payment_id"] == pid

        # A table for people.
        _, table, _ = tender(cli_server, "payments", "get", pid)
        assert f"payment_id          {pid}" in table
        assert "captured            6.00 EUR" in table
        _, rows, _ = tender(cli_server, "payments", "list", "--customer-reference", reference)
        assert rows.splitlines()[0].split()[:3] == ["PAYMENT", "STATUS", "AMOUNT"]
        assert pid in rows.splitlines()[1] and "10.00 EUR" in rows.splitlines()[1]

        ours = lambda e: e["payment_id"] == pid  # noqa: E731
        watch.until(lambda e: ours(e) and e["event_type"] == "PAYMENT_EVENT_TYPE_PAYMENT_SUCCEEDED")
        watch.until(lambda e: ours(e) and e["event_type"] == "PAYMENT_EVENT_TYPE_REFUND_CREATED")
        settled = watch.until(lambda e: ours(e) and e["event_type"] == "PAYMENT_EVENT_TYPE_REFUND_SUCCEEDED")
        assert settled["refund_id"] == refund["refund_id"]
    finally:
        watch.stop()


def test_the_same_key_gives_the_same_payment(cli_server):
    key = f"cli-order-{uuid.uuid4()}"
    arguments = ("payments", "create", "--amount-minor", "700", "--currency", "EUR", "--payment-method",
                 "pm_card_visa", "--idempotency-key", key)
    assert tender_json(cli_server, *arguments)["payment_id"] == tender_json(cli_server, *arguments)["payment_id"]


def test_failures_exit_with_their_status_and_print_reason_and_field(cli_server):
    payment = tender_json(cli_server, "payments", "create", "--amount", "5.00", "--currency", "EUR",
                          "--payment-method", "pm_card_visa")
    status, out, err = tender(cli_server, "refunds", "create", payment["payment_id"], "--amount", "5.01", "--json",
                              check=False)
    assert status == 9 and out == ""  # FAILED_PRECONDITION
    refusal = json.loads(err)
    assert refusal["code"] == "FAILED_PRECONDITION" and refusal["reason"] == "REFUND_EXCEEDS_CAPTURED"
    assert refusal["metadata"]["field"] == "amount_minor"

    status, _, err = tender(cli_server, "refunds", "create", payment["payment_id"], "--amount", "5.01", check=False)
    assert status == 9
    assert err.startswith("tender: FAILED_PRECONDITION REFUND_EXCEEDS_CAPTURED (field amount_minor): ")

    status, _, err = tender(cli_server, "payments", "get", "pay_" + "0" * 24, check=False)
    assert status == 5 and "NOT_FOUND" in err  # NOT_FOUND

    status, _, err = tender(cli_server, "payments", "create", "--amount-minor", "0", "--currency", "EUR",
                            "--payment-method", "pm_card_visa", "--json", check=False)
    assert status == 3 and json.loads(err)["metadata"]["field"]  # INVALID_ARGUMENT

    status, _, err = tender(cli_server, "payments", "create", "--amount", "1.005", "--currency", "EUR",
                            "--payment-method", "pm_card_visa", check=False)
    assert status == 64 and "at most 2 decimals" in err  # refused before any call


def test_wrong_credentials_are_unauthenticated(cli_server, tmp_path):
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"client_id": cli_server["client_id"], "client_secret": "not-the-secret"}))
    done = subprocess.run(
        [cli_server["binary"], "payments", "list", "--json", "--target", cli_server["target"], "--ca-file",
         str(cli_server["ca"]), "--credentials", str(wrong)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 16  # UNAUTHENTICATED
    assert json.loads(done.stderr)["reason"] == "INVALID_CLIENT"
    assert "not-the-secret" not in done.stderr
