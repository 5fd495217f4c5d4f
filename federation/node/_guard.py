"""Errors leave the node as codes and counts only; the rest stays in the node's own log.

Every reply, error or not, passes :func:`error_guard_mod`, the outermost mod of
the ClientApp. An error reply's reason must read ``CODE[: CODE…][ name=number…]
[ receipt=<signed token>]``; anything else (a raw cell, a merchant id, an
exception text) is cut back to its leading codes, and the full text goes to
the ``fedgate.node`` logger on the ISV's machine only. An exception raised
anywhere below becomes ``NODE_FAILURE`` the same way, instead of Flower's
default reply, which would carry the exception text.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from flwr.app import Context, Error, Message

__all__ = ["error_guard_mod", "safe_reason", "REASON_GRAMMAR"]

log = logging.getLogger("fedgate.node")

CallNext = Callable[[Message, Context], Message]

_CODE = r"[A-Z][A-Z0-9_]*"
REASON_GRAMMAR = re.compile(
    rf"^{_CODE}(?:: {_CODE})*(?: [a-z][a-z0-9-]*=-?[0-9]+(?:\.[0-9]+)?)*"
    r"(?: receipt=[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)?$"
)
"""What an error reason may say: codes, then named numbers, then a signed receipt."""

_LEADING = re.compile(rf"^{_CODE}(?::\s*{_CODE}(?=:|$|\s))*")
_NODE_FAILURE_CODE = 4090


def safe_reason(reason: str) -> str:
    """``reason`` if it follows :data:`REASON_GRAMMAR`, else its leading codes only."""
    if REASON_GRAMMAR.match(reason):
        return reason
    m = _LEADING.match(reason)
    if m is None:
        return "NODE_FAILURE"
    return re.sub(r":\s*", ": ", m.group(0)).rstrip(": ")


def error_guard_mod(msg: Message, ctx: Context, call_next: CallNext) -> Message:
    """Replace any error text beyond codes and counts; turn exceptions into ``NODE_FAILURE``."""
    try:
        reply = call_next(msg, ctx)
    except Exception:  # noqa: BLE001 - nothing may escape with its text
        log.exception("node failure on a %s message", msg.metadata.message_type)
        return Message(Error(code=_NODE_FAILURE_CODE, reason="NODE_FAILURE"), reply_to=msg)
    if not reply.has_error():
        return reply
    reason = reply.error.reason or ""
    safe = safe_reason(reason)
    if safe != reason:
        log.warning("node error on a %s message (full text): %s", msg.metadata.message_type, reason)
        return Message(Error(code=reply.error.code, reason=safe), reply_to=msg)
    return reply
