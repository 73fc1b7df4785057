"""Python client for Tender's payments gRPC API.

``TenderClient`` is the client most code wants (TLS, tokens, idempotency keys, retries, typed
errors). The generated messages and stubs are under ``tender_client.proto``, in the schemas'
package layout, e.g. ``tender_client.proto.tender.payments.v1.payment_service_pb2_grpc``; they are
generated from proto/ by codegen/generate.sh.
"""
from . import errors
from ._calls import RetryPolicy, TokenSource
from .client import Credentials, Payment, PaymentEvent, Refund, TenderClient, new_idempotency_key
from .errors import TenderError

__all__ = [
    "Credentials", "Payment", "PaymentEvent", "Refund", "RetryPolicy", "TenderClient", "TenderError", "TokenSource",
    "errors", "new_idempotency_key",
]
__version__ = "0.1.0"
