"""All-or-nothing bulk import of consents with merchant approvals (``fedgate consent import``).

A file is JSON Lines, one consent per line::

    {"terms": {...}, "merchant_signature": "<detached JWS>", "merchant_key": "<PEM>"}

``terms`` is what :func:`consent.parse_terms` takes and must carry its
``created_at`` (the approval is a signature over the exact body, so the body
must not depend on when it is imported); ``merchant_signature`` is the
merchant's detached approval (:func:`consent.approve_artefact`) and
``merchant_key`` the merchant's Ed25519 public key (PEM). Every line is
parsed, every approval verified and every id checked (unique in the file and
new to the database) **before the first write**; then each consent is signed
by the consent manager and written as :func:`consent.grant` would write it —
artefact row, ``granted`` and ``activated`` events with their two ledger
entries, state ACTIVE — in set-based inserts inside the caller's transaction.
One bad line refuses the whole file (:class:`ImportRefused` names the line)
and nothing is written. Superseding consents are refused here (one at a time
through ``consent grant``). Receipts are not returned per consent: the ledger
entries are the record.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from joserfc.util import json_b64encode, urlsafe_b64encode
from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from ledger import append_many, canonical_json

from ._artefact import (
    APPROVAL_TYPE,
    ARTEFACT_TYPE,
    ConsentArtefact,
    SignedArtefact,
    _verify_jws,
    artefact_body,
    artefact_hash,
    parse_terms,
)
from ._errors import ConsentError, ImportRefused, InvalidConsentRequest
from ._jose import ALGORITHM
from ._lifecycle import Status
from ._models import ArtefactRow, EventRow, StateRow
from ._reads import _now

__all__ = ["ImportResult", "import_consents"]

_CHUNK = 5000
_VERIFY_CHUNK = 1000  # lines per task (parsed and verified in a worker when workers > 1)
_LINE_KEYS = {"terms", "merchant_signature", "merchant_key"}


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What :func:`import_consents` wrote: consents and the ledger range of their events."""

    count: int
    first_seq: int | None
    last_seq: int | None


def _key(pem: object, line: int, cache: dict[str, Ed25519PublicKey]) -> Ed25519PublicKey:
    """The merchant's public key object; a PEM seen before in the file is parsed once."""
    if isinstance(pem, str) and pem in cache:
        return cache[pem]
    if not isinstance(pem, str):
        raise ImportRefused("merchant_key must be a PEM string", code="SIGNATURE_INVALID",
                            line=line)
    try:
        key = serialization.load_pem_public_key(pem.encode("ascii"))
    except (ValueError, UnicodeError) as exc:
        raise ImportRefused(f"merchant_key unreadable: {exc}", code="SIGNATURE_INVALID",
                            line=line) from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ImportRefused("merchant_key is not Ed25519", code="SIGNATURE_INVALID", line=line)
    cache[pem] = key
    return key


_HEADER = json_b64encode({"alg": ALGORITHM, "typ": ARTEFACT_TYPE})
_SIG64 = re.compile(r"[A-Za-z0-9_-]{85}[AQgw]")  # exactly 64 bytes, canonical base64url
_APPROVAL_PREFIX = json_b64encode({"alg": ALGORITHM, "typ": APPROVAL_TYPE}).decode() + ".."


def _verify_approval(signature: str, payload: bytes, key: Ed25519PublicKey) -> None:
    """A merchant's detached approval over ``payload``; ``SIGNATURE_INVALID`` otherwise.

    An approval with exactly the header bytes :func:`consent.approve_artefact` writes is
    checked with one Ed25519 verification (the signing input is fixed by those bytes);
    any other header goes through joserfc's full JWS parse, which accepts the same
    tokens, so speed never changes which approvals pass.
    """
    tail = signature[len(_APPROVAL_PREFIX):]
    if signature.startswith(_APPROVAL_PREFIX) and _SIG64.fullmatch(tail):
        head = _APPROVAL_PREFIX[:-2].encode()
        try:
            sig = base64.urlsafe_b64decode(tail + "==")
            key.verify(sig, head + b"." + urlsafe_b64encode(payload))
        except (InvalidSignature, ValueError, binascii.Error) as exc:
            raise InvalidConsentRequest(f"signature does not verify: {exc!r}",
                                        code="SIGNATURE_INVALID") from exc
        return
    _verify_jws(signature, key, APPROVAL_TYPE, payload=payload)


def _sign(artefact: ConsentArtefact, payload: bytes, key: Ed25519PrivateKey) -> SignedArtefact:
    """:func:`consent.sign_artefact` without re-encoding: byte-identical compact JWS.

    The same header bytes joserfc writes (``json_b64encode`` of the header) and a
    deterministic Ed25519 signature, so the token equals ``sign_artefact``'s (a test pins it).
    """
    signing_input = _HEADER + b"." + urlsafe_b64encode(payload)
    token = (signing_input + b"." + urlsafe_b64encode(key.sign(signing_input))).decode("ascii")
    return SignedArtefact(artefact=artefact, token=token, hash=artefact_hash(token))


def _line_doc(n: int, raw: str | bytes) -> dict[str, Any] | None:
    """One line of a consent JSON Lines file, shape-checked; ``None`` for a blank line."""
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    if not text.strip():
        return None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ImportRefused(f"not JSON: {exc}", code="MALFORMED_JSON", line=n) from exc
    if not isinstance(doc, dict) or set(doc) != _LINE_KEYS:
        raise ImportRefused(f"a line has exactly the keys {sorted(_LINE_KEYS)}",
                            code="MALFORMED", line=n)
    if not isinstance(doc["terms"], dict) or "created_at" not in doc["terms"]:
        raise ImportRefused("terms must be an object with created_at", code="MALFORMED",
                            line=n)
    return doc


def consent_lines(lines: Iterable[str | bytes]) -> Iterator[tuple[int, dict[str, Any]]]:
    """The ``(line number, document)`` pairs of a consent JSON Lines file, shape-checked.

    Each non-blank line is ``{"terms": {…, "created_at"}, "merchant_signature",
    "merchant_key"}``: the format of ``fedgate consent import`` and of the ISV's
    ``fedgate node approve``. Raises :class:`ImportRefused` (``MALFORMED_JSON``,
    ``MALFORMED``) with the 1-based line number.
    """
    for n, raw in enumerate(lines, start=1):
        doc = _line_doc(n, raw)
        if doc is not None:
            yield n, doc


_Parsed = tuple[ConsentArtefact, str, str, bytes]  # terms, approval, merchant key, payload
_Failure = tuple[int, str, str]  # line, code, message


def _prepare(chunk: list[tuple[int, str | bytes]], now: datetime
             ) -> tuple[list[tuple[int, _Parsed]], _Failure | None]:
    """Parse, check and verify a run of lines, in order, up to the first bad one.

    Pure (its arguments are all it reads), so it runs in the importing process or
    in a worker. Returns the good lines before the first failure and that failure
    as ``(line, code, message)``.
    """
    out: list[tuple[int, _Parsed]] = []
    keys: dict[str, Ed25519PublicKey] = {}
    for n, raw in chunk:
        try:
            doc = _line_doc(n, raw)
            if doc is None:
                continue
            terms = parse_terms(doc["terms"], now=now)
            if terms.supersedes is not None:
                raise InvalidConsentRequest("bulk import takes first grants only; supersede "
                                            "with consent grant", code="SUPERSEDE_INVALID")
            if now >= terms.consent_expiry:
                raise InvalidConsentRequest("consent would expire before it is granted",
                                            code="ALREADY_EXPIRED")
            key = _key(doc["merchant_key"], n, keys)
            signature = doc["merchant_signature"]
            if not isinstance(signature, str):
                raise InvalidConsentRequest("merchant_signature must be a string",
                                            code="SIGNATURE_INVALID")
            payload = canonical_json(artefact_body(terms))  # once: verified, then signed
            _verify_approval(signature, payload, key)
        except ConsentError as exc:
            return out, (n, exc.code, str(exc).removeprefix(f"line {n}: "))
        out.append((n, (terms, signature, doc["merchant_key"], payload)))
    return out, None


def _chunks(lines: Iterable[str | bytes]) -> Iterator[list[tuple[int, str | bytes]]]:
    chunk: list[tuple[int, str | bytes]] = []
    for n, raw in enumerate(lines, start=1):
        chunk.append((n, raw))
        if len(chunk) >= _VERIFY_CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _parse(lines: Iterable[str | bytes], now: datetime, workers: int) -> list[_Parsed]:
    """Every line parsed and its approval verified, or the lowest bad line refused.

    With ``workers > 1``, runs of lines are parsed and verified in forked worker
    processes while this one reads the rest; results are taken in file order, so
    the refused line and the code are the same as with one process.
    """
    if workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers,
                                 mp_context=multiprocessing.get_context("fork")) as pool:
            futures = [pool.submit(_prepare, c, now) for c in _chunks(lines)]
            results: Iterable[tuple[list[tuple[int, _Parsed]], _Failure | None]] = [
                f.result() for f in futures]
    else:
        results = (_prepare(c, now) for c in _chunks(lines))
    out: list[_Parsed] = []
    seen: set[str] = set()
    for good, failure in results:
        for n, parsed in good:
            if parsed[0].consent_id in seen:
                raise ImportRefused(f"consent id {parsed[0].consent_id!r} twice in the file",
                                    code="DUPLICATE_ID", line=n)
            seen.add(parsed[0].consent_id)
            out.append(parsed)
        if failure is not None:
            line, code, message = failure
            raise ImportRefused(message, code=code, line=line)
    return out


# A string's RFC 8785 form: the stdlib encoder without ASCII escaping writes the same
# escapes (``canonical_json`` takes this path too); a lone surrogate fails at ``encode``.
_str = json.JSONEncoder(ensure_ascii=False).encode
_PENDING, _ACTIVE = _str(Status.PENDING.value), _str(Status.ACTIVE.value)


def _event_bodies(s: SignedArtefact, signature: str) -> tuple[bytes, bytes]:
    """The canonical bytes of the ``granted`` and ``activated`` ledger bodies of one consent.

    Equal to ``canonical_json`` of the bodies :func:`consent.grant` writes
    (:func:`event_body`, plus ``artefact`` and ``merchant_signature`` on the grant; a test
    holds them equal), spliced from the JSON strings with the keys in RFC 8785 order.
    """
    a = s.artefact
    common = (
        f'"artefact_hash":{_str(s.hash)},"consent_id":{_str(a.consent_id)},'
        f'"data_consumer":{_str(a.data_consumer)},"data_provider":{_str(a.data_provider)},'
        '"detail":'
    )
    merchant = _str(a.merchant_id)
    granted = (
        f'{{"artefact":{_str(s.token)},{common}{{}},"event_version":1,"from_status":null,'
        f'"merchant_id":{merchant},"merchant_signature":{_str(signature)},"status":{_PENDING}}}'
    )
    activated = (
        f'{{{common}{{"merchant_approval":true}},"event_version":2,"from_status":{_PENDING},'
        f'"merchant_id":{merchant},"status":{_ACTIVE}}}'
    )
    return granted.encode("utf-8"), activated.encode("utf-8")


def _insert(session: Session, table: Table, rows: list[dict[str, Any]]) -> None:
    """Rows into ``table`` on the session's connection (its transaction).

    PostgreSQL: one ``COPY … FROM STDIN`` (every value is a str, int, None or a
    timezone-aware UTC datetime, which psycopg writes as ``timestamptz`` text);
    SQLite: Core ``executemany`` (its datetime storage stays SQLAlchemy's).
    """
    conn = session.connection()
    if conn.dialect.name == "postgresql" and rows:
        columns = list(rows[0])
        cols = ", ".join(f'"{c}"' for c in columns)
        raw = conn.connection.driver_connection
        if raw is None:
            raise ConsentError("the session's PostgreSQL connection is closed",
                               code="NO_CONNECTION")
        with raw.cursor() as cur, cur.copy(f'COPY "{table.name}" ({cols}) FROM STDIN') as copy:
            for row in rows:
                copy.write_row([row[c] for c in columns])
        return
    for i in range(0, len(rows), _CHUNK):
        conn.execute(table.insert(), rows[i:i + _CHUNK])


def import_consents(
    session: Session,
    lines: Iterable[str | bytes],
    *,
    key: Ed25519PrivateKey,
    at: datetime | None = None,
    workers: int = 1,
) -> ImportResult:
    """Import every consent of a JSON Lines file, or none (see the module docstring).

    Parameters
    ----------
    session : Session
        The caller's session; everything is written in its transaction.
    lines : Iterable[str | bytes]
        The file's lines (blank lines are skipped).
    key : Ed25519PrivateKey
        The consent manager's signing key.
    at : datetime | None, default now (UTC)
        Time of every ``granted`` and ``activated`` event.
    workers : int, default 1
        Processes that parse lines and verify merchant approvals (forked; ``1``:
        this process). Every approval is verified either way, and the refused line
        is the same; this process signs and writes.

    Raises
    ------
    ImportRefused
        The first bad line (its ``code`` as :func:`consent.grant` would give, or
        ``DUPLICATE_ID`` for an id already stored or repeated); nothing is written.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    when = _now(at)
    parsed = _parse(lines, when, workers)
    if not parsed:
        return ImportResult(0, None, None)
    ids = [p[0].consent_id for p in parsed]
    for i in range(0, len(ids), _CHUNK):
        taken = session.execute(
            select(ArtefactRow.consent_id).where(ArtefactRow.consent_id.in_(ids[i:i + _CHUNK]))
        ).scalars().first()
        if taken is not None:
            line = ids.index(taken) + 1
            raise ImportRefused(f"consent id {taken!r} is taken", code="DUPLICATE_ID",
                                line=line)
    signed = [_sign(t, payload, key) for t, _, _, payload in parsed]
    bodies: list[tuple[str, bytes]] = []
    for s, (_, signature, _, _) in zip(signed, parsed, strict=True):
        granted, activated = _event_bodies(s, signature)
        bodies.append(("consent.granted", granted))
        bodies.append(("consent.activated", activated))
    first = append_many(session, bodies, at=when)
    artefacts, events, states = [], [], []
    granted_detail = canonical_json({}).decode()
    active_detail = canonical_json({"merchant_approval": True}).decode()
    for i, (s, (t, signature, pem, _)) in enumerate(zip(signed, parsed, strict=True)):
        artefacts.append({
            "consent_id": t.consent_id, "merchant_id": t.merchant_id,
            "data_provider": t.data_provider, "data_consumer": t.data_consumer,
            "version": t.version, "supersedes": None, "token": s.token,
            "artefact_hash": s.hash, "merchant_signature": signature, "merchant_key": pem,
            "consent_start": t.consent_start, "consent_expiry": t.consent_expiry,
            "created_at": t.created_at, "frequency_unit": t.frequency.unit,
        })
        events.append({"consent_id": t.consent_id, "version": 1, "kind": "granted", "at": when,
                       "status": Status.PENDING.value, "ledger_seq": first + 2 * i,
                       "detail": granted_detail})
        events.append({"consent_id": t.consent_id, "version": 2, "kind": "activated",
                       "at": when, "status": Status.ACTIVE.value,
                       "ledger_seq": first + 2 * i + 1, "detail": active_detail})
        states.append({"consent_id": t.consent_id, "merchant_id": t.merchant_id,
                       "data_provider": t.data_provider, "data_consumer": t.data_consumer,
                       "status": Status.ACTIVE.value, "version": 2, "use_count": 0,
                       "period_uses": 0, "last_used_at": None, "updated_at": when})
    for model, rows in ((ArtefactRow, artefacts), (EventRow, events), (StateRow, states)):
        _insert(session, cast(Table, model.__table__), rows)
    session.flush()
    return ImportResult(len(parsed), first, first + len(bodies) - 1)
