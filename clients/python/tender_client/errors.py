"""Tender's refusals as exceptions: one class per gRPC status code, and one per ErrorInfo reason a
caller is likely to handle (each a subclass of its status code's class).

Every refusal Tender sends carries a ``google.rpc.ErrorInfo`` in the ``grpc-status-details-bin``
trailer: ``reason`` says what happened, ``metadata["field"]`` which request field was at fault.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Type

import grpc
from google.rpc import error_details_pb2, status_pb2

#: The ErrorInfo domain of Tender's refusals.
DOMAIN = "tender.dev"


class TenderError(Exception):
    """A call Tender refused, or one that did not reach it."""

    #: The status code this class stands for (subclasses set it).
    status_code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason: str = "",
        metadata: Optional[Mapping[str, str]] = None,
    ) -> None:
        super().__init__(f"{code.name} {reason or '-'}: {message}")
        self.code = code
        self.message = message
        self.reason = reason
        self.metadata: Dict[str, str] = dict(metadata or {})

    @property
    def field(self) -> Optional[str]:
        """The request field at fault, when Tender named one."""
        return self.metadata.get("field")


class InvalidArgumentError(TenderError):
    status_code = grpc.StatusCode.INVALID_ARGUMENT


class NotFoundError(TenderError):
    status_code = grpc.StatusCode.NOT_FOUND


class AlreadyExistsError(TenderError):
    status_code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDeniedError(TenderError):
    status_code = grpc.StatusCode.PERMISSION_DENIED


class UnauthenticatedError(TenderError):
    status_code = grpc.StatusCode.UNAUTHENTICATED


class FailedPreconditionError(TenderError):
    status_code = grpc.StatusCode.FAILED_PRECONDITION


class AbortedError(TenderError):
    status_code = grpc.StatusCode.ABORTED


class OutOfRangeError(TenderError):
    status_code = grpc.StatusCode.OUT_OF_RANGE


class ResourceExhaustedError(TenderError):
    status_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class UnavailableError(TenderError):
    status_code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceededError(TenderError):
    status_code = grpc.StatusCode.DEADLINE_EXCEEDED


class CancelledError(TenderError):
    status_code = grpc.StatusCode.CANCELLED


class InternalError(TenderError):
    status_code = grpc.StatusCode.INTERNAL


class UnimplementedError(TenderError):
    status_code = grpc.StatusCode.UNIMPLEMENTED


# Reasons a caller acts on.


class CardDeclined(FailedPreconditionError):
    """The provider declined the payment; ``metadata["decline_reason"]`` says why and
    ``metadata["payment_id"]`` names the failed payment."""


class ProviderError(FailedPreconditionError):
    """The provider failed the payment permanently."""


class RefundExceedsCaptured(FailedPreconditionError):
    """The refund asks for more than is left of the captured amount."""


class CaptureExceedsAuthorized(FailedPreconditionError):
    """The capture asks for more than was authorized."""


class PaymentNotCapturable(FailedPreconditionError):
    pass


class PaymentNotCancelable(FailedPreconditionError):
    pass


class PaymentNotRefundable(FailedPreconditionError):
    pass


class CurrencyMismatch(FailedPreconditionError):
    pass


class PaymentNotFound(NotFoundError):
    pass


class RefundNotFound(NotFoundError):
    pass


class ScopeMissing(PermissionDeniedError):
    """The access token lacks the method's scope (``metadata["required_scope"]``)."""


class TokenExpired(UnauthenticatedError):
    pass


class TokenRevoked(UnauthenticatedError):
    pass


class TokenInvalid(UnauthenticatedError):
    pass


class ClientDisabled(UnauthenticatedError):
    pass


class InvalidClient(UnauthenticatedError):
    """IssueToken: the client id or secret is wrong."""


class CardDataRejected(InvalidArgumentError):
    """A field held what looks like a card number; Tender takes provider tokens only."""


class IdempotencyKeyReused(InvalidArgumentError):
    """The idempotency key was used before for a different request."""


class IdempotencyKeyInUse(AbortedError):
    """A request with the same idempotency key is still running; retry later with the same key."""


class RateLimited(ResourceExhaustedError):
    pass


class ProviderUnavailable(UnavailableError):
    """Nothing reached the provider; retry with the same idempotency key."""


class DatabaseUnavailable(UnavailableError):
    pass


_BY_CODE: Dict[grpc.StatusCode, Type[TenderError]] = {
    cls.status_code: cls
    for cls in (
        InvalidArgumentError, NotFoundError, AlreadyExistsError, PermissionDeniedError, UnauthenticatedError,
        FailedPreconditionError, AbortedError, OutOfRangeError, ResourceExhaustedError, UnavailableError,
        DeadlineExceededError, CancelledError, InternalError, UnimplementedError,
    )
}

_BY_REASON: Dict[str, Type[TenderError]] = {
    "CARD_DECLINED": CardDeclined,
    "PROVIDER_ERROR": ProviderError,
    "REFUND_EXCEEDS_CAPTURED": RefundExceedsCaptured,
    "CAPTURE_EXCEEDS_AUTHORIZED": CaptureExceedsAuthorized,
    "PAYMENT_NOT_CAPTURABLE": PaymentNotCapturable,
    "PAYMENT_NOT_CANCELABLE": PaymentNotCancelable,
    "PAYMENT_NOT_REFUNDABLE": PaymentNotRefundable,
    "CURRENCY_MISMATCH": CurrencyMismatch,
    "PAYMENT_NOT_FOUND": PaymentNotFound,
    "REFUND_NOT_FOUND": RefundNotFound,
    "SCOPE_MISSING": ScopeMissing,
    "TOKEN_EXPIRED": TokenExpired,
    "TOKEN_REVOKED": TokenRevoked,
    "TOKEN_INVALID": TokenInvalid,
    "CLIENT_DISABLED": ClientDisabled,
    "INVALID_CLIENT": InvalidClient,
    "CARD_DATA_REJECTED": CardDataRejected,
    "IDEMPOTENCY_KEY_REUSED": IdempotencyKeyReused,
    "IDEMPOTENCY_KEY_IN_USE": IdempotencyKeyInUse,
    "RATE_LIMITED": RateLimited,
    "PROVIDER_UNAVAILABLE": ProviderUnavailable,
    "DATABASE_UNAVAILABLE": DatabaseUnavailable,
}


def from_rpc_error(error: grpc.RpcError) -> TenderError:
    """The typed exception for a failed call: by ErrorInfo reason when the class's status code
    matches, else by status code."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message = error.details() if hasattr(error, "details") else str(error)
    reason, metadata = "", {}
    trailers = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for key, value in trailers or ():
        if key != "grpc-status-details-bin":
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info) and info.domain == DOMAIN:
                reason, metadata = info.reason, dict(info.metadata)
                break
    cls = _BY_REASON.get(reason)
    if cls is None or cls.status_code != code:
        cls = _BY_CODE.get(code, TenderError)
    return cls(code, message or "", reason, metadata)
