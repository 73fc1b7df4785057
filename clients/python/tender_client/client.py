"""TenderClient: Tender's payments and refunds over TLS, with tokens, idempotency keys, retries
and typed errors taken care of."""
from __future__ import annotations

import json
import pathlib
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Dict, Iterable, Iterator, Mapping, Optional, Sequence, Union

import grpc
from google.protobuf import timestamp_pb2

from . import errors
from ._calls import Caller, RetryPolicy, TokenSource, needs_idempotency_key
from .proto.tender.payments.v1 import payment_service_pb2 as payments_pb2
from .proto.tender.payments.v1 import payment_service_pb2_grpc as payments_grpc
from .proto.tender.refunds.v1 import refund_service_pb2 as refunds_pb2
from .proto.tender.refunds.v1 import refund_service_pb2_grpc as refunds_grpc
from .proto.tender.type.v1 import money_pb2

Payment = payments_pb2.Payment
Refund = refunds_pb2.Refund
PaymentEvent = payments_pb2.WatchPaymentsResponse

_PAYMENTS = payments_pb2.DESCRIPTOR.services_by_name["PaymentService"]
_REFUNDS = refunds_pb2.DESCRIPTOR.services_by_name["RefundService"]
# A watch broken by these is opened again after its last event: the server restarted or drained
# (UNAVAILABLE), the connection broke mid-stream (INTERNAL, UNKNOWN), or the stream limit was
# reached while the old stream was still being closed (RESOURCE_EXHAUSTED).
_WATCH_AGAIN = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
                grpc.StatusCode.RESOURCE_EXHAUSTED)


@dataclass(frozen=True)
class Credentials:
    """A client's id and secret (and the scopes to ask for; all of the client's when empty)."""

    client_id: str
    client_secret: str = field(repr=False)
    scopes: Sequence[str] = ()

    @classmethod
    def from_file(cls, path: Union[str, pathlib.Path]) -> "Credentials":
        """Reads a JSON credentials file such as the one ``tender dev`` writes
        (``client_id`` or ``clientID``, ``client_secret`` or ``clientSecret``)."""
        data = json.loads(pathlib.Path(path).read_text())
        return cls(
            client_id=data.get("client_id") or data["clientID"],
            client_secret=data.get("client_secret") or data["clientSecret"],
            scopes=tuple(data.get("scopes", ())),
        )


def _read(path: Optional[Union[str, pathlib.Path]]) -> Optional[bytes]:
    return pathlib.Path(path).read_bytes() if path is not None else None


def _timestamp(value: Optional[datetime]) -> Optional[timestamp_pb2.Timestamp]:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


class TenderClient:
    """A client of one Tender deployment.

    >>> with TenderClient("localhost:8443", Credentials.from_file("dev-client.json"),
    ...                   ca_file=".tender-dev/tls/ca.pem") as tender:
    ...     payment = tender.create_payment(1250, "EUR", "pm_card_visa", capture="manual")

    Every money-moving call (create, capture, cancel, refund) sends an idempotency key: the one
    given, or a new one for the operation, reused by each of its retries, so a retry after a
    timeout or a dropped connection can never charge or refund twice. Pass your own key (an order
    id, say) to make the operation idempotent across processes and restarts too.
    """

    def __init__(
        self,
        target: str,
        credentials: Credentials,
        *,
        ca_file: Optional[Union[str, pathlib.Path]] = None,
        cert_file: Optional[Union[str, pathlib.Path]] = None,
        key_file: Optional[Union[str, pathlib.Path]] = None,
        server_name: Optional[str] = None,
        timeout: float = 10.0,
        retry: RetryPolicy = RetryPolicy(),
        channel: Optional[grpc.Channel] = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """
        :param target: ``host:port`` of Tender's gRPC listener.
        :param ca_file: PEM roots that sign the server's certificate (the system's when None).
        :param cert_file: PEM certificate chain of this client, for servers that require mTLS
            (with ``key_file``).
        :param server_name: the name to verify in the server's certificate, when not the host.
        :param timeout: deadline of each attempt of a unary call, in seconds.
        :param channel: a channel to use instead (its credentials are the caller's business).
        """
        if (cert_file is None) != (key_file is None):
            raise ValueError("cert_file and key_file go together")
        if channel is None:
            tls = grpc.ssl_channel_credentials(
                root_certificates=_read(ca_file), private_key=_read(key_file), certificate_chain=_read(cert_file))
            options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
            channel = grpc.secure_channel(target, tls, options=options)
            self._owns_channel = True
        else:
            self._owns_channel = False
        self.channel = channel
        self.tokens = TokenSource(channel, credentials.client_id, credentials.client_secret, credentials.scopes,
                                  timeout=timeout)
        self._caller = Caller(self.tokens, timeout, retry, sleep)
        self._retry = retry
        self._sleep = sleep
        self._payments = payments_grpc.PaymentServiceStub(channel)
        self._refunds = refunds_grpc.RefundServiceStub(channel)

    def close(self) -> None:
        if self._owns_channel:
            self.channel.close()

    def __enter__(self) -> "TenderClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, service: Any, method: str, stub: Any, request: Any, idempotency_key: Optional[str],
              timeout: Optional[float]) -> Any:
        keyed = needs_idempotency_key(service, method)
        return self._caller.unary(getattr(stub, method), request, idempotency_key=idempotency_key if keyed else None,
                                  keyed=keyed, timeout=timeout)

    def _pages(self, service: Any, method: str, stub: Any, request: Any, items: str,
               timeout: Optional[float]) -> Iterator[Any]:
        """The items of every page, fetching the next page as the caller gets to it."""
        while True:
            page = self._call(service, method, stub, request, None, timeout)
            yield from getattr(page, items)
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    # Payments

    def create_payment(
        self,
        amount_minor: int,
        currency: str,
        payment_method_token: str,
        *,
        capture: str = "automatic",
        description: str = "",
        customer_reference: str = "",
        metadata: Optional[Mapping[str, str]] = None,
        idempotency_key: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> Payment:
        """Charges (``capture="automatic"``) or authorizes (``"manual"``) an amount in minor
        units. A declined card raises :class:`~tender_client.errors.CardDeclined`."""
        methods = {"automatic": payments_pb2.CAPTURE_METHOD_AUTOMATIC, "manual": payments_pb2.CAPTURE_METHOD_MANUAL}
        if capture not in methods:
            raise ValueError("capture must be 'automatic' or 'manual'")
        request = payments_pb2.CreatePaymentRequest(
            amount=money_pb2.Money(amount_minor=amount_minor, currency=currency),
            payment_method_token=payment_method_token, capture_method=methods[capture], description=description,
            customer_reference=customer_reference, metadata=dict(metadata or {}))
        return self._call(_PAYMENTS, "CreatePayment", self._payments, request, idempotency_key, timeout).payment

    def capture_payment(self, payment_id: str, amount_minor: int = 0, *, idempotency_key: Optional[str] = None,
                        timeout: Optional[float] = None) -> Payment:
        """Captures ``amount_minor`` of an authorized payment (all of it when 0)."""
        request = payments_pb2.CapturePaymentRequest(payment_id=payment_id, amount_minor=amount_minor)
        return self._call(_PAYMENTS, "CapturePayment", self._payments, request, idempotency_key, timeout).payment

    def cancel_payment(self, payment_id: str, reason: str = "", *, idempotency_key: Optional[str] = None,
                       timeout: Optional[float] = None) -> Payment:
        request = payments_pb2.CancelPaymentRequest(payment_id=payment_id, reason=reason)
        return self._call(_PAYMENTS, "CancelPayment", self._payments, request, idempotency_key, timeout).payment

    def get_payment(self, payment_id: str, *, timeout: Optional[float] = None) -> Payment:
        request = payments_pb2.GetPaymentRequest(payment_id=payment_id)
        return self._call(_PAYMENTS, "GetPayment", self._payments, request, None, timeout).payment

    def list_payments(
        self,
        *,
        statuses: Iterable[int] = (),
        customer_reference: str = "",
        created_after: Optional[datetime] = None,
        created_before: Optional[datetime] = None,
        page_size: int = 50,
        timeout: Optional[float] = None,
    ) -> Iterator[Payment]:
        """Every matching payment, newest first, fetched a page at a time as you iterate."""
        request = payments_pb2.ListPaymentsRequest(
            page_size=page_size, statuses=list(statuses), customer_reference=customer_reference,
            create_time_start=_timestamp(created_after), create_time_end=_timestamp(created_before))
        return self._pages(_PAYMENTS, "ListPayments", self._payments, request, "payments", timeout)

    def watch_payments(self, cursor: str = "", *, reconnect: bool = True) -> Iterator[PaymentEvent]:
        """The merchant's payment and refund events as they happen, after ``cursor`` (from now
        when empty). When the stream breaks (a restart, a lost connection, a token that ran out)
        it is opened again after the last event seen, so no event is lost or repeated; with
        ``reconnect=False`` the error is raised instead. Stop by breaking out of the loop."""
        failures = 0
        while True:
            token = self.tokens.token()
            call = self._payments.WatchPayments(
                payments_pb2.WatchPaymentsRequest(cursor=cursor), metadata=[("authorization", f"Bearer {token}")])
            error: Optional[errors.TenderError] = None
            try:
                for event in call:
                    failures = 0
                    cursor = event.cursor
                    yield event
            except grpc.RpcError as rpc_error:
                error = errors.from_rpc_error(rpc_error)
            finally:
                call.cancel()
            if error is None:
                # A watch has no end: one that ends anyway is watched again from its cursor.
                error = errors.UnavailableError(grpc.StatusCode.UNAVAILABLE, "the watch ended", "")
            if isinstance(error, (errors.TokenExpired, errors.TokenRevoked)):
                # The token ran out or was revoked while streaming: watch on with a new one.
                self.tokens.invalidate(token)
            elif not reconnect or error.code not in _WATCH_AGAIN:
                raise error
            failures += 1
            if not reconnect or failures > self._retry.max_attempts * 4:
                raise error
            self._sleep(self._retry.backoff(min(failures, 8)))

    # Refunds

    def create_refund(self, payment_id: str, amount_minor: int = 0, *, metadata: Optional[Mapping[str, str]] = None,
                      idempotency_key: Optional[str] = None, timeout: Optional[float] = None) -> Refund:
        """Refunds ``amount_minor`` of a captured payment (all that is left when 0). Asking for
        more than is left raises :class:`~tender_client.errors.RefundExceedsCaptured`."""
        request = refunds_pb2.CreateRefundRequest(payment_id=payment_id, amount_minor=amount_minor,
                                                  metadata=dict(metadata or {}))
        return self._call(_REFUNDS, "CreateRefund", self._refunds, request, idempotency_key, timeout).refund

    def get_refund(self, refund_id: str, *, timeout: Optional[float] = None) -> Refund:
        request = refunds_pb2.GetRefundRequest(refund_id=refund_id)
        return self._call(_REFUNDS, "GetRefund", self._refunds, request, None, timeout).refund

    def list_refunds(self, payment_id: str = "", *, page_size: int = 50,
                     timeout: Optional[float] = None) -> Iterator[Refund]:
        """Every refund (of one payment when given), a page at a time as you iterate."""
        request = refunds_pb2.ListRefundsRequest(payment_id=payment_id, page_size=page_size)
        return self._pages(_REFUNDS, "ListRefunds", self._refunds, request, "refunds", timeout)


def new_idempotency_key() -> str:
    """A fresh key for one logical operation."""
    return str(uuid.uuid4())
