"""TenderClient against a live Tender over TLS: the flow a team runs, typed errors, idempotent
retries, token refresh and a watch that survives a server restart."""
import pathlib
import queue
import shutil
import tempfile
import threading
import time
import uuid

import grpc
import pytest

import tender_client
from tender_client import Credentials, RetryPolicy, TenderClient, TokenSource, errors
from tender_client.proto.tender.payments.v1 import payment_service_pb2 as payments_pb2
from tender_dev import free_port, tender_dev


def connect(server, **options):
    return TenderClient(server["target"], Credentials(server["client_id"], server["client_secret"]),
                        ca_file=server["ca"], **options)


class Watcher:
    """Reads a watch in a thread, keeping every event."""

    def __init__(self, tender):
        self.events = queue.Queue()
        self.seen = []
        self.error = None
        self._thread = threading.Thread(target=self._run, args=(tender,), daemon=True)
        self._thread.start()

    def _run(self, tender):
        try:
            for event in tender.watch_payments():
                self.events.put(event)
        except Exception as error:  # noqa: BLE001 - kept for the test to report
            self.error = error
            self.events.put(None)

    def until(self, predicate, timeout=60):
        """Events until one matches; fails after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no matching event in {timeout} s; saw {[e.event_type for e in self.seen]}")
            try:
                event = self.events.get(timeout=remaining)
            except queue.Empty:
                continue
            if event is None:
                raise AssertionError(f"the watch ended: {self.error!r}")
            self.seen.append(event)
            if predicate(event):
                return event


def subscribed(tender, watcher):
    """Creates marker payments until the watcher sees one, so later events are surely watched."""
    for _ in range(30):
        marker = tender.create_payment(100, "EUR", "pm_card_visa", description="watch marker")
        try:
            watcher.until(lambda e: e.payment_id == marker.payment_id, timeout=2)
            return
        except AssertionError:
            continue
    raise AssertionError("the watch never saw a marker payment")


def test_the_package_is_the_installed_one():
    path = pathlib.Path(tender_client.__file__).resolve()
    assert "site-packages" in path.parts, path
    assert (path.parent / "py.typed").exists()


def test_manual_capture_refund_list_and_watch(server):
    reference = f"cust-{uuid.uuid4().hex[:12]}"
    with connect(server) as tender:
        watcher = Watcher(tender)
        subscribed(tender, watcher)

        payment = tender.create_payment(1000, "EUR", "pm_card_visa", capture="manual",
                                        customer_reference=reference, metadata={"order": "A-17"})
        assert payment.status == payments_pb2.PAYMENT_STATUS_REQUIRES_CAPTURE
        assert payment.amount.amount_minor == 1000 and payment.amount_capturable_minor == 1000

        captured = tender.capture_payment(payment.payment_id, 600)
        assert captured.status == payments_pb2.PAYMENT_STATUS_SUCCEEDED
        assert captured.amount_captured_minor == 600

        refund = tender.create_refund(payment.payment_id, 250)
        assert refund.payment_id == payment.payment_id and refund.amount.amount_minor == 250
        assert tender.get_refund(refund.refund_id).refund_id == refund.refund_id
        assert [r.refund_id for r in tender.list_refunds(payment.payment_id)] == [refund.refund_id]

        found = [p.payment_id for p in tender.list_payments(customer_reference=reference)]
        assert found == [payment.payment_id]
        assert tender.get_payment(payment.payment_id).amount_refunded_minor in (0, 250)

        ours = lambda e: e.payment_id == payment.payment_id  # noqa: E731
        watcher.until(lambda e: ours(e) and e.event_type == payments_pb2.PAYMENT_EVENT_TYPE_PAYMENT_REQUIRES_CAPTURE)
        watcher.until(lambda e: ours(e) and e.event_type == payments_pb2.PAYMENT_EVENT_TYPE_PAYMENT_SUCCEEDED)
        created = watcher.until(lambda e: ours(e) and e.event_type == payments_pb2.PAYMENT_EVENT_TYPE_REFUND_CREATED)
        assert created.refund_id == refund.refund_id
        settled = watcher.until(lambda e: ours(e) and e.refund_id == refund.refund_id and e.event_type in (
            payments_pb2.PAYMENT_EVENT_TYPE_REFUND_SUCCEEDED, payments_pb2.PAYMENT_EVENT_TYPE_REFUND_FAILED))
        assert settled.event_type == payments_pb2.PAYMENT_EVENT_TYPE_REFUND_SUCCEEDED
        assert settled.payment.amount_refunded_minor == 250


def test_pages_are_followed(server):
    reference = f"cust-{uuid.uuid4().hex[:12]}"
    with connect(server) as tender:
        made = {tender.create_payment(300 + i, "EUR", "pm_card_visa", customer_reference=reference).payment_id
                for i in range(5)}
        listed = [p.payment_id for p in tender.list_payments(customer_reference=reference, page_size=2)]
    assert sorted(listed) == sorted(made) and len(listed) == 5


def test_typed_errors(server):
    with connect(server) as tender:
        payment = tender.create_payment(500, "EUR", "pm_card_visa")
        with pytest.raises(errors.RefundExceedsCaptured) as refused:
            tender.create_refund(payment.payment_id, 501)
        assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert refused.value.field == "amount_minor"
        assert isinstance(refused.value, errors.FailedPreconditionError)

        with pytest.raises(errors.CardDeclined) as declined:
            tender.create_payment(500, "EUR", "pm_card_chargeDeclined")
        assert declined.value.metadata["payment_id"].startswith("pay_")

        with pytest.raises(errors.PaymentNotFound):
            tender.get_payment("pay_" + "0" * 24)
        with pytest.raises(errors.InvalidArgumentError) as invalid:
            tender.create_payment(0, "EUR", "pm_card_visa")
        assert invalid.value.field

    reader = TenderClient(server["target"], Credentials(server["client_id"], server["client_secret"],
                                                        scopes=("payments:read",)), ca_file=server["ca"])
    with reader:
        with pytest.raises(errors.ScopeMissing) as missing:
            reader.create_payment(500, "EUR", "pm_card_visa")
        assert missing.value.code == grpc.StatusCode.PERMISSION_DENIED
        assert missing.value.metadata["required_scope"] == "payments:write"

    wrong = TenderClient(server["target"], Credentials(server["client_id"], "not-the-secret"), ca_file=server["ca"])
    with wrong, pytest.raises(errors.InvalidClient):
        wrong.get_payment("pay_" + "0" * 24)


def test_the_same_key_gives_the_same_payment(server):
    key = f"order-{uuid.uuid4()}"
    reference = f"cust-{uuid.uuid4().hex[:12]}"
    with connect(server) as tender:
        first = tender.create_payment(700, "EUR", "pm_card_visa", customer_reference=reference, idempotency_key=key)
        again = tender.create_payment(700, "EUR", "pm_card_visa", customer_reference=reference, idempotency_key=key)
        assert again.payment_id == first.payment_id
        with pytest.raises(errors.IdempotencyKeyReused):
            tender.create_payment(701, "EUR", "pm_card_visa", idempotency_key=key)
        assert len(list(tender.list_payments(customer_reference=reference))) == 1


class LoseFirstAnswer(grpc.UnaryUnaryClientInterceptor):
    """Lets the first CreatePayment reach the server, then reports UNAVAILABLE as if its answer
    had been lost on the way back; records the idempotency key of every attempt."""

    def __init__(self):
        self.keys = []

    def intercept_unary_unary(self, continuation, details, request):
        outcome = continuation(details, request)
        if details.method.endswith("/CreatePayment"):
            self.keys.append(dict(details.metadata or ()).get("idempotency-key"))
            if len(self.keys) == 1:
                outcome.result()  # the server has done the work

                class Lost(grpc.RpcError, grpc.Call):
                    def code(self):
                        return grpc.StatusCode.UNAVAILABLE

                    def details(self):
                        return "connection lost after the request was sent"

                    def trailing_metadata(self):
                        return ()

                raise Lost()
        return outcome


def test_a_lost_answer_is_retried_with_the_same_key_and_charges_once(server):
    reference = f"cust-{uuid.uuid4().hex[:12]}"
    lossy = LoseFirstAnswer()
    tls = grpc.ssl_channel_credentials(root_certificates=pathlib.Path(server["ca"]).read_bytes())
    channel = grpc.intercept_channel(grpc.secure_channel(server["target"], tls), lossy)
    waits = []
    tender = TenderClient(server["target"], Credentials(server["client_id"], server["client_secret"]),
                          channel=channel, sleep=waits.append)
    payment = tender.create_payment(900, "EUR", "pm_card_visa", customer_reference=reference)
    assert len(lossy.keys) == 2 and lossy.keys[0] == lossy.keys[1] and lossy.keys[0]
    assert len(waits) == 1 and 0 <= waits[0] <= RetryPolicy().initial_backoff
    assert [p.payment_id for p in tender.list_payments(customer_reference=reference)] == [payment.payment_id]
    channel.close()


def test_tokens_are_reused_and_refreshed_before_expiry(server):
    now = [time.time()]
    tls = grpc.ssl_channel_credentials(root_certificates=pathlib.Path(server["ca"]).read_bytes())
    with grpc.secure_channel(server["target"], tls) as channel:
        tokens = TokenSource(channel, server["client_id"], server["client_secret"], clock=lambda: now[0])
        first = tokens.token()
        assert tokens.token() == first and tokens.issued == 1
        lifetime = tokens.expire_time - now[0]
        assert lifetime > 0
        now[0] += lifetime * 0.5
        assert tokens.token() == first and tokens.issued == 1
        now[0] = tokens.expire_time - 1  # inside the refresh window, before expiry
        second = tokens.token()
        assert tokens.issued == 2 and second != first


def test_a_watch_resumes_from_its_cursor_across_a_restart():
    state = pathlib.Path(tempfile.mkdtemp(prefix="tender-pytest-"))
    ports = (free_port(), free_port())
    watcher = None
    try:
        with tender_dev(state=state, ports=ports) as first:
            tender = connect(first, retry=RetryPolicy(max_attempts=10, max_backoff=2.0))
            watcher = Watcher(tender)
            subscribed(tender, watcher)
            before = tender.create_payment(410, "EUR", "pm_card_visa")
            watcher.until(lambda e: e.payment_id == before.payment_id)
        # Stopped: the watch is broken and reconnecting. Restarted, events made before the watch
        # is back must still reach it, after the last one it saw.
        with tender_dev(state=state, ports=ports) as second:
            after = tender.create_payment(420, "EUR", "pm_card_visa")
            seen = watcher.until(lambda e: e.payment_id == after.payment_id
                                 and e.event_type == payments_pb2.PAYMENT_EVENT_TYPE_PAYMENT_SUCCEEDED, timeout=120)
            assert seen.payment.amount.amount_minor == 420
            cursors = [e.cursor for e in watcher.seen]
            assert len(cursors) == len(set(cursors)), "an event was delivered twice"
            kinds = [e.event_type for e in watcher.seen if e.payment_id == after.payment_id]
            assert payments_pb2.PAYMENT_EVENT_TYPE_PAYMENT_CREATED in kinds, kinds
            tender.close()
            assert second["ports"] == first["ports"]
    finally:
        shutil.rmtree(state, ignore_errors=True)
