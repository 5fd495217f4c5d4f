"""The log's client: send a checkpoint to witnesses, verify and store their cosignatures.

For each witness the request starts from the largest size that witness
cosigned for this log before (from ``ledger_cosignatures``), with the
consistency proof from there. A witness that answers 409 with its own size
(``text/x.tlog.size``) gets one more request from that size, as the spec
suggests; a witness whose size is beyond our checkpoint, or that reports a
fork or a failed proof, is a refusal with its reason. All witnesses are asked
at once (HTTP/1.1 keep-alive, one connection each), and every cosignature is
verified under the witness key the operator configured before it is stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

import httpx
from sqlalchemy.orm import Session

import ledger
from ledger import SIZE_CONTENT_TYPE

from ._app import CODE_HEADER

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "Refusal",
    "WitnessEndpoint",
    "WitnessOutcome",
    "collect_cosignatures",
    "parse_endpoint",
]

DEFAULT_TIMEOUT_S = 10.0
MAX_REPLY_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class WitnessEndpoint:
    """Where a witness listens (its submission prefix) and the key it must cosign with."""

    url: str
    cosigner: ledger.Cosigner


def parse_endpoint(value: str) -> WitnessEndpoint:
    """Parse ``URL,VKEY`` (the witness's add-checkpoint prefix and its cosigner vkey).

    Raises
    ------
    ValueError
        With a sentence naming what is wrong.
    """
    url, sep, vkey = value.partition(",")
    if not sep or not url.startswith(("http://", "https://")):
        raise ValueError(f"--witness {value!r}: expected URL,VKEY (e.g. http://127.0.0.1:8787,w+…)")
    try:
        cosigner = ledger.parse_cosigner_vkey(vkey.strip())
    except ledger.NoteError as exc:
        raise ValueError(f"--witness {url}: {exc}") from exc
    return WitnessEndpoint(url.rstrip("/"), cosigner)


@dataclass(frozen=True, slots=True)
class Refusal:
    """A witness that did not cosign: HTTP status (None: unreachable), code and reason."""

    witness: str
    status: int | None
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class WitnessOutcome:
    """What the witnesses answered for one checkpoint."""

    checkpoint: ledger.Checkpoint
    cosigned: tuple[ledger.Cosigned, ...]
    refusals: tuple[Refusal, ...]
    note: str
    """The checkpoint with every stored cosignature appended."""

    def met(self, quorum: int) -> bool:
        """True when at least ``quorum`` witnesses cosigned."""
        return len(self.cosigned) >= quorum


@dataclass(slots=True)
class _Try:
    endpoint: WitnessEndpoint
    old: int
    body: bytes = b""
    reply: httpx.Response | None = None
    error: str | None = None


async def _send(
    tries: Sequence[_Try], timeout: float, transport: httpx.AsyncBaseTransport | None
) -> None:
    async with httpx.AsyncClient(timeout=timeout, transport=transport) as client:

        async def one(t: _Try) -> None:
            try:
                t.reply = await client.post(
                    f"{t.endpoint.url}/add-checkpoint",
                    content=t.body,
                    headers={"Content-Type": "text/plain; charset=utf-8"},
                )
            except httpx.HTTPError as exc:
                t.error = f"{type(exc).__name__}: {exc}"

        await asyncio.gather(*(one(t) for t in tries))


def _size_of(reply: httpx.Response) -> int | None:
    if not reply.headers.get("content-type", "").startswith(SIZE_CONTENT_TYPE):
        return None
    text = reply.text.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        return None
    return int(text)


def collect_cosignatures(
    session_scope: Callable[[], AbstractContextManager[Session]],
    checkpoint: ledger.Checkpoint,
    endpoints: Sequence[WitnessEndpoint],
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    transport: httpx.AsyncBaseTransport | None = None,
) -> WitnessOutcome:
    """Ask every witness to cosign ``checkpoint`` (a stored one); store what verifies.

    Parameters
    ----------
    session_scope : Callable[[], AbstractContextManager[Session]]
        Opens one transaction (proofs are read and cosignatures written in it).
    checkpoint : ledger.Checkpoint
        The log's signed checkpoint, already stored.
    endpoints : Sequence[WitnessEndpoint]
        The witnesses and the keys they must cosign with.
    timeout : float, default 10.0
        Seconds per HTTP request.
    transport : httpx.AsyncBaseTransport | None, default None
        For tests that mount the witness app in process.
    """
    with session_scope() as s:
        tries = []
        for ep in endpoints:
            old = ledger.last_cosigned_size(s, ep.cosigner.vkey)
            old = old if old <= checkpoint.size else 0
            tries.append(_Try(ep, old, ledger.witness_request(s, checkpoint, old)))
    refusals: list[Refusal] = []
    done: list[tuple[WitnessEndpoint, str]] = []
    for round_ in range(2):
        asyncio.run(_send(tries, timeout, transport))
        again: list[_Try] = []
        for t in tries:
            name = t.endpoint.cosigner.name
            reply = t.reply
            if reply is None:
                refusals.append(Refusal(name, None, "WITNESS_UNREACHABLE", t.error or "no reply"))
                continue
            code = reply.headers.get(CODE_HEADER, "")
            if reply.status_code == 200:
                done.append((t.endpoint, reply.text[:MAX_REPLY_BYTES]))
                continue
            size = _size_of(reply) if reply.status_code == 409 else None
            if size is not None and code != "FORK" and size != t.old and round_ == 0:
                if size > checkpoint.size:
                    refusals.append(
                        Refusal(
                            name,
                            409,
                            "WITNESS_AHEAD",
                            f"the witness cosigned size {size}, beyond this checkpoint "
                            f"({checkpoint.size}): the log was rolled back",
                        )
                    )
                    continue
                again.append(_Try(t.endpoint, size))
                continue
            if size is not None and size == checkpoint.size and size == t.old and not code:
                code = "FORK"
            message = reply.text[:500].strip()
            refusals.append(Refusal(name, reply.status_code, code or "WITNESS_REFUSED", message))
        if not again:
            break
        with session_scope() as s:
            for t in again:
                t.body = ledger.witness_request(s, checkpoint, t.old)
        tries = again
    cosigned: list[ledger.Cosigned] = []
    with session_scope() as s:
        for ep, text in done:
            try:
                cosigned.append(ledger.store_cosignature(s, checkpoint, ep.cosigner, text))
            except ledger.NoteError as exc:
                refusals.append(Refusal(ep.cosigner.name, 200, exc.code, str(exc)))
        note = ledger.cosigned_note(s, checkpoint)
    return WitnessOutcome(checkpoint, tuple(cosigned), tuple(refusals), note)
