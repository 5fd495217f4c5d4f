"""Per-message state shared by the mods and the handlers of one ClientApp call.

The manifest mod puts the verified request here; the handler reads it (and
refuses to run without it) and records what it used; the receipt mod reads
that usage. Context variables keep each call's state apart even when one
worker process serves several messages.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from consent import CohortManifest

from ..node import NodePolicy
from ..schema import FieldSpec
from ._node import NodeConfig

__all__ = [
    "VerifiedRequest",
    "Usage",
    "current_request",
    "current_usage",
    "bind",
    "secagg_active",
    "secagg_scope",
]


@dataclass(frozen=True, slots=True)
class VerifiedRequest:
    """A message that passed the manifest mod: whose node, which manifest, which action."""

    node: NodeConfig
    manifest: CohortManifest | None  # None only for the identification handshake
    action: str  # "train", "evaluate", "query.sketch", "query.score", "query.identify"
    policy: NodePolicy | None = None  # the node's own policy (None only for identify)
    extras: tuple[FieldSpec, ...] = ()  # the job's extra fields, checked against the node's


@dataclass(slots=True)
class Usage:
    """What a handler read and what it used; the receipt mod signs both."""

    rows_used: int = 0
    merchant_ids: list[str] = field(default_factory=list)
    epsilon: float = 0.0
    delta: float = 0.0
    rows_read: int = 0
    read_ids: list[str] = field(default_factory=list)
    recorded: bool = False

    def record(
        self,
        *,
        rows_used: int,
        merchant_ids: list[str],
        epsilon: float,
        delta: float,
        rows_read: int | None = None,
        read_ids: list[str] | None = None,
    ) -> None:
        """Note the rows and merchants this reply read and used, and the job's ε after it.

        ``rows_read`` / ``read_ids`` default to what was used (a handler that used every
        row it read).
        """
        self.rows_used = rows_used
        self.merchant_ids = list(merchant_ids)
        self.epsilon = epsilon
        self.delta = delta
        self.rows_read = rows_used if rows_read is None else rows_read
        self.read_ids = list(merchant_ids if read_ids is None else read_ids)
        self.recorded = True


_request: ContextVar[VerifiedRequest | None] = ContextVar("fedgate_request", default=None)
_usage: ContextVar[Usage | None] = ContextVar("fedgate_usage", default=None)
_secagg: ContextVar[bool] = ContextVar("fedgate_secagg", default=False)


def secagg_active() -> bool:
    """Is the current call inside Flower's SecAgg+ mod (the update leaves masked)?"""
    return _secagg.get()


@contextmanager
def secagg_scope() -> Iterator[None]:
    """Mark the calls made inside SecAgg+'s mod (the node signs it into its receipt)."""
    token = _secagg.set(True)
    try:
        yield
    finally:
        _secagg.reset(token)


def current_request() -> VerifiedRequest:
    """The verified request of the current call; ``RuntimeError`` without the manifest mod."""
    req = _request.get()
    if req is None:
        raise RuntimeError("no verified request: the manifest mod must run before any handler")
    return req


def current_usage() -> Usage:
    """The usage tracker of the current call (a throwaway one outside the receipt mod)."""
    usage = _usage.get()
    return usage if usage is not None else Usage()


@contextmanager
def bind(*, request: VerifiedRequest | None = None, usage: Usage | None = None) -> Iterator[None]:
    """Set the request and/or usage for the duration of a ``call_next``."""
    tokens = []
    if request is not None:
        tokens.append((_request, _request.set(request)))
    if usage is not None:
        tokens.append((_usage, _usage.set(usage)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)  # type: ignore[attr-defined]
