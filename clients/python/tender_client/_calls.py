"""How each call is made: access tokens, idempotency keys, deadlines and retries."""
from __future__ import annotations

import random
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Tuple

import grpc

from . import errors
from .proto.tender.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from .proto.tender.options.v1 import policy_pb2

Metadata = Sequence[Tuple[str, str]]


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of one logical operation: exponential backoff with full jitter.

    A call is retried on UNAVAILABLE (nothing was done, or the server will find the earlier
    attempt by its idempotency key), on ABORTED ``IDEMPOTENCY_KEY_IN_USE`` (the first attempt is
    still running) and, for calls with an idempotency key, on DEADLINE_EXCEEDED. Every attempt of
    an operation sends the same idempotency key, so a retry can never act twice.
    """

    max_attempts: int = 6
    initial_backoff: float = 0.2
    max_backoff: float = 5.0
    multiplier: float = 2.0

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (attempt counts from 1)."""
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))
        return random.uniform(0, ceiling)


def retryable(error: errors.TenderError, keyed: bool) -> bool:
    if error.code == grpc.StatusCode.UNAVAILABLE:
        return True
    if error.code == grpc.StatusCode.ABORTED and error.reason == "IDEMPOTENCY_KEY_IN_USE":
        return True
    return keyed and error.code == grpc.StatusCode.DEADLINE_EXCEEDED


def needs_idempotency_key(descriptor: Any, method: str) -> bool:
    """Whether the schema declares ``idempotency: IDEMPOTENCY_REQUIRED`` for the method."""
    options = descriptor.methods_by_name[method].GetOptions()
    if not options.HasExtension(policy_pb2.policy):
        return False
    return options.Extensions[policy_pb2.policy].idempotency == policy_pb2.IDEMPOTENCY_REQUIRED


class TokenSource:
    """Access tokens from AuthService.IssueToken, fetched when first needed and again before they
    expire (at ``refresh_fraction`` of their lifetime, and at least ``refresh_margin`` seconds
    early), or at once after the server refuses one as expired or revoked. Thread-safe."""

    def __init__(
        self,
        channel: grpc.Channel,
        client_id: str,
        client_secret: str,
        scopes: Sequence[str] = (),
        timeout: float = 10.0,
        refresh_fraction: float = 0.8,
        refresh_margin: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._stub = auth_service_pb2_grpc.AuthServiceStub(channel)
        self._request = auth_service_pb2.IssueTokenRequest(
            client_id=client_id, client_secret=client_secret, scopes=list(scopes))
        self._timeout = timeout
        self._refresh_fraction = refresh_fraction
        self._refresh_margin = refresh_margin
        self._clock = clock
        self._lock = threading.Lock()
        self._token: Optional[str] = None
        self._refresh_at = 0.0
        self._expire_at = 0.0
        #: How many tokens were issued (for tests and metrics).
        self.issued = 0

    def token(self) -> str:
        with self._lock:
            if self._token is None or self._clock() >= self._refresh_at:
                self._issue()
            assert self._token is not None
            return self._token

    def invalidate(self, token: str) -> None:
        """Forgets ``token`` (refused by the server) so the next call gets a new one."""
        with self._lock:
            if self._token == token:
                self._token = None

    @property
    def expire_time(self) -> float:
        return self._expire_at

    def _issue(self) -> None:
        try:
            response = self._stub.IssueToken(self._request, timeout=self._timeout)
        except grpc.RpcError as error:
            raise errors.from_rpc_error(error) from None
        now = self._clock()
        expire = response.expire_time.seconds + response.expire_time.nanos / 1e9
        lifetime = max(0.0, expire - now)
        early = max(lifetime * (1 - self._refresh_fraction), min(self._refresh_margin, lifetime / 2))
        self._token = response.access_token
        self._expire_at = expire
        self._refresh_at = expire - early
        self.issued += 1


class Caller:
    """Makes one logical operation's calls: a token on each, the same idempotency key on every
    attempt, a deadline per attempt, retries by the policy, typed errors."""

    def __init__(self, tokens: TokenSource, timeout: float, retry: RetryPolicy,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.tokens = tokens
        self.timeout = timeout
        self.retry = retry
        self._sleep = sleep

    def unary(
        self,
        method: Callable[..., Any],
        request: Any,
        *,
        idempotency_key: Optional[str] = None,
        keyed: bool = False,
        timeout: Optional[float] = None,
    ) -> Any:
        if keyed and idempotency_key is None:
            idempotency_key = str(uuid.uuid4())
        attempt = 0
        refreshed = False
        while True:
            attempt += 1
            token = self.tokens.token()
            metadata = [("authorization", f"Bearer {token}")]
            if idempotency_key is not None:
                metadata.append(("idempotency-key", idempotency_key))
            try:
                return method(request, metadata=metadata, timeout=timeout or self.timeout)
            except grpc.RpcError as rpc_error:
                error = errors.from_rpc_error(rpc_error)
            if isinstance(error, (errors.TokenExpired, errors.TokenRevoked)) and not refreshed:
                # A token can lapse or be revoked between fetching and use: one more try with a
                # new one (the call was refused before it did anything).
                self.tokens.invalidate(token)
                refreshed = True
                attempt -= 1
                continue
            if attempt >= self.retry.max_attempts or not retryable(error, idempotency_key is not None):
                raise error
            self._sleep(self.retry.backoff(attempt))
