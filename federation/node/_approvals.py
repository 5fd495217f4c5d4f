"""Merchant approvals the node itself holds, countersigned with the node's key.

The platform signs manifests and stores consents, so a manifest entry proves
nothing to the node on its own: the platform could put any merchant, consent,
date range or purpose in it. The node therefore keeps its **own** register of
what each merchant approved **in the ISV's system** (the ISV's ERP shows the
merchant the consent terms and records the approval), and checks every
manifest entry against it before a row is read:

* the merchant approves in the ISV's system; the ISV calls
  :meth:`ApprovalRegister.register` (or :meth:`register_artefact` with the
  consent artefact the merchant was shown). The node stores the terms and
  returns its **countersignature** (Ed25519 over the canonical terms, with the
  node key), which the ISV hands to the platform as proof the ISV witnessed the
  approval;
* a manifest entry counts only if the register holds an approval with the same
  consent id, merchant id and artefact hash, for this node's ISV, the manifest's
  data consumer and purpose, covering every manifest category, and a data range
  and consent window that contain the entry's (:meth:`ApprovalRegister.match`);
* the merchant revokes in the ISV's system: :meth:`revoke` (append-only; the
  latest record per consent wins).

The register is an SQLite file in the node's state directory (WAL, synchronous
FULL, as :mod:`ledger._engine` sets up the project's SQLite databases; stdlib
:mod:`sqlite3`, as this is the node's own local state). It is append-only: one
row per record, holding the canonical terms (:func:`approval_payload` less the
context) and an HMAC-SHA256 over :func:`approval_payload` under the node's
secret hashing key (:func:`federation.receipts.hash_key`), checked on read, so
a row written by anyone without that key (the curious platform editing the
file) does not count. The latest **authentic** row per consent id wins, so a
revocation (a newer authentic row with ``revoked``) beats the approval it
revokes, and a forged newer row is skipped as if absent. Checking an HMAC costs
about a microsecond, where an Ed25519 verification costs ~100 µs (10⁷ approvals
at the bench's scale). The Ed25519 countersignature the ISV hands to the platform
is made by :meth:`ApprovalRegister.register` (one approval, as a merchant
approves) or on demand by :meth:`ApprovalRegister.countersign`.

Lookups never load the register: :meth:`ApprovalRegister.unmatched` queries the
manifest entries' consent ids in chunks of :data:`CHUNK` through the
``(consent_id, seq)`` index, so memory is O(chunk), not O(register) — a process
no longer holds a dict of every approval (2.5 kB each; ~23 GiB per Ray actor at
10⁷ approvals).

**Legacy JSON-lines registers are refused, not imported implicitly**: if the
configured path holds a JSON-lines file, or the database does not exist yet but
an ``approvals.jsonl`` lies beside it, opening the register raises
:class:`~federation.FederationError` ``LEGACY_APPROVALS``. The operator imports
it once, explicitly, with :meth:`ApprovalRegister.import_jsonl` on a register
opened with ``check_legacy=False`` (HMAC-checked line by line under the node's
key; lines failing it are not imported), so no
approval silently disappears and none is forged in by a changed file.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from consent import CohortManifest, ManifestEntry, SignedArtefact
from ledger import canonical_json

from .._sqlite import connect, is_sqlite_file, write_transaction

__all__ = ["Approval", "ApprovalRegister", "approval_payload"]

_CONTEXT = b"fedgate-node-approval\n"
_T = TypeVar("_T")
_decode = json.JSONDecoder().decode  # str in: skips json.loads' per-call encoding sniffing
CHUNK = 500
"""Consent ids per lookup query (below SQLite's 999 bound-parameter floor)."""
_SCHEMA = """
CREATE TABLE IF NOT EXISTS approvals (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    consent_id TEXT NOT NULL,
    terms BLOB NOT NULL,
    mac BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS approvals_consent ON approvals (consent_id, seq);
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class Approval:
    """What one merchant approved for one consent, as the ISV recorded it."""

    consent_id: str
    merchant_id: str
    artefact_hash: str  # "" = registered from the signed terms (federation.node.approve_lines)
    data_provider: str
    data_consumer: str
    purposes: tuple[str, ...]
    categories: tuple[str, ...]
    data_from: date
    data_to: date
    consent_start: datetime
    consent_expiry: datetime
    data_life_days: int
    revoked: bool = False

    def body(self) -> dict[str, Any]:
        """JSON-ready terms (dates ISO 8601, times RFC 3339 UTC).

        Spelled out rather than :func:`dataclasses.asdict` (which deep-copies): a bulk
        registration builds 10⁷ of these, and ``asdict`` was most of their cost.
        """
        return {
            "consent_id": self.consent_id,
            "merchant_id": self.merchant_id,
            "artefact_hash": self.artefact_hash,
            "data_provider": self.data_provider,
            "data_consumer": self.data_consumer,
            "purposes": sorted(self.purposes),
            "categories": sorted(self.categories),
            "data_from": self.data_from.isoformat(),
            "data_to": self.data_to.isoformat(),
            "consent_start": self.consent_start.astimezone(UTC).isoformat(),
            "consent_expiry": self.consent_expiry.astimezone(UTC).isoformat(),
            "data_life_days": self.data_life_days,
            "revoked": self.revoked,
        }

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Approval:
        """Inverse of :meth:`body`."""
        return cls(
            consent_id=str(body["consent_id"]),
            merchant_id=str(body["merchant_id"]),
            artefact_hash=str(body["artefact_hash"]),
            data_provider=str(body["data_provider"]),
            data_consumer=str(body["data_consumer"]),
            purposes=tuple(body["purposes"]),
            categories=tuple(body["categories"]),
            data_from=date.fromisoformat(body["data_from"]),
            data_to=date.fromisoformat(body["data_to"]),
            consent_start=datetime.fromisoformat(body["consent_start"]),
            consent_expiry=datetime.fromisoformat(body["consent_expiry"]),
            data_life_days=int(body["data_life_days"]),
            revoked=bool(body.get("revoked", False)),
        )

    @classmethod
    def from_terms(cls, a: Any, artefact_hash: str) -> Approval:
        """The approval of consent terms ``a`` (a :class:`consent.ConsentArtefact`)."""
        return cls(
            consent_id=a.consent_id,
            merchant_id=a.merchant_id,
            artefact_hash=artefact_hash,
            data_provider=a.data_provider,
            data_consumer=a.data_consumer,
            purposes=tuple(a.purposes),
            categories=tuple(a.categories),
            data_from=a.data_from,
            data_to=a.data_to,
            consent_start=a.consent_start,
            consent_expiry=a.consent_expiry,
            data_life_days=a.data_life_days,
        )

    def covers(self, entry: ManifestEntry, manifest: CohortManifest) -> bool:
        """Does this (live) approval allow ``entry`` of ``manifest``?"""
        return (
            not self.revoked
            and entry.consent_id == self.consent_id
            and entry.merchant_id == self.merchant_id
            and (not self.artefact_hash or entry.artefact_hash == self.artefact_hash)
            and manifest.data_provider == self.data_provider
            and manifest.data_consumer == self.data_consumer
            and manifest.purpose in self.purposes
            and set(manifest.categories) <= set(self.categories)
            and self.data_from <= entry.data_from
            and entry.data_to <= self.data_to
            and self.consent_start <= entry.consent_start
            and entry.consent_expiry <= self.consent_expiry
            and (entry.data_life_days is None or entry.data_life_days <= self.data_life_days)
        )


def approval_payload(approval: Approval) -> bytes:
    """The bytes the node countersigns: a context string and the canonical terms."""
    return _CONTEXT + canonical_json(approval.body())


class ApprovalRegister:
    """The node's append-only register of merchant approvals (an SQLite file).

    Parameters
    ----------
    path : Path
        The register database (created on first write).
    key : Ed25519PrivateKey
        The node key: countersigns approvals for the platform.
    mac_key : bytes
        The node's secret hashing key: authenticates every stored record.
    check_legacy : bool, default True
        ``False`` only to :meth:`import_jsonl` a JSON-lines register lying beside
        ``path`` (once imported, the database exists and the check passes).

    Raises
    ------
    FederationError
        ``LEGACY_APPROVALS`` if ``path`` (or an ``approvals.jsonl`` beside a missing
        database) is a JSON-lines register: import it with :meth:`import_jsonl`.
    """

    def __init__(
        self, path: Path, key: Ed25519PrivateKey, mac_key: bytes, *, check_legacy: bool = True
    ) -> None:
        self.path = Path(path)
        self._key = key
        self._pub: Ed25519PublicKey = key.public_key()
        self._mac_key = mac_key
        if check_legacy:
            self._check_not_legacy()

    # -- storage ---------------------------------------------------------------

    def _check_not_legacy(self) -> None:
        legacy: Path | None = None
        if self.path.is_file() and self.path.stat().st_size and not is_sqlite_file(self.path):
            legacy = self.path
        elif not self.path.exists() and _is_jsonl_register(self.path.parent / "approvals.jsonl"):
            legacy = self.path.parent / "approvals.jsonl"
        if legacy is not None:
            from .._errors import FederationError  # lazily: federation imports torch

            raise FederationError(
                f"{legacy} is a JSON-lines approval register (or not a register at all); the "
                f"register is now an SQLite database ({self.path}). Import it once with "
                f"`fedgate node import-approvals {legacy} --config node.toml` (HMAC-checked; "
                "in Python: ApprovalRegister(db, key, mac_key, check_legacy=False)"
                ".import_jsonl(legacy)), with db a new file that is not the JSON-lines one.",
                code="LEGACY_APPROVALS",
            )

    def _connect(self, *, create: bool) -> sqlite3.Connection | None:
        if not create and not self.path.exists():
            return None
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        return connect(self.path, schema=_SCHEMA if create else None)

    def _terms(self, approval: Approval) -> bytes:
        return canonical_json(approval.body())

    def _mac(self, terms: bytes) -> bytes:
        # hmac.digest: OpenSSL's one-shot path, several times cheaper than hmac.new per row.
        return hmac.digest(self._mac_key, _CONTEXT + terms, "sha256")

    def _row(self, approval: Approval) -> tuple[str, bytes, bytes]:
        terms = self._terms(approval)
        return approval.consent_id, terms, self._mac(terms)

    def _authentic(self, terms: bytes, mac: bytes) -> Approval | None:
        """The approval a stored row holds, or ``None`` if it fails the HMAC or parse."""
        if not isinstance(mac, bytes) or not hmac.compare_digest(mac, self._mac(bytes(terms))):
            return None
        try:
            return Approval.from_body(_decode(bytes(terms).decode("utf-8")))
        except (ValueError, KeyError, TypeError):
            return None

    # -- writing ---------------------------------------------------------------

    def register(self, approval: Approval) -> bytes:
        """Record a merchant's approval; returns the node's Ed25519 countersignature."""
        self.register_many([approval])
        return self.countersign(approval)

    def countersign(self, approval: Approval) -> bytes:
        """The node's Ed25519 signature over :func:`approval_payload` (for the platform)."""
        return self._key.sign(approval_payload(approval))

    def verify_countersignature(self, approval: Approval, signature: bytes) -> bool:
        """Does ``signature`` countersign ``approval`` with this node's key?"""
        try:
            self._pub.verify(signature, approval_payload(approval))
        except InvalidSignature:
            return False
        return True

    def register_artefact(self, signed: SignedArtefact) -> bytes:
        """Record the approval of the consent artefact the merchant was shown."""
        return self.register(Approval.from_terms(signed.artefact, signed.hash))

    def register_many(self, approvals: Iterable[Approval]) -> int:
        """Record several approvals in one transaction (a bulk import); returns how many.

        Streamed through ``executemany``: the import never holds all rows at once, and
        either every approval is recorded or (on any error) none is.
        """
        conn = self._connect(create=True)
        assert conn is not None
        count = 0

        def rows() -> Iterator[tuple[str, bytes, bytes]]:
            nonlocal count
            for a in approvals:
                count += 1
                yield self._row(a)

        with write_transaction(conn):
            conn.executemany(
                "INSERT INTO approvals (consent_id, terms, mac) VALUES (?, ?, ?)", rows()
            )
        return count

    def revoke(self, consent_id: str) -> None:
        """Record that the merchant revoked ``consent_id`` in the ISV's system."""
        from dataclasses import replace

        current = self.lookup([consent_id]).get(consent_id)
        if current is None:
            raise KeyError(f"no approval {consent_id!r} in the node's register")
        self.register_many([replace(current, revoked=True)])

    def import_jsonl(self, legacy: Path) -> tuple[int, int]:
        """Import a JSON-lines register (the format before SQLite) once; HMAC-checked.

        Lines whose HMAC (hex, over :func:`approval_payload`) fails under this node's
        key, or that do not parse, are skipped; the rest are recorded in file order, so
        the latest authentic line per consent still wins. Returns (imported, skipped).
        The legacy file is left in place: the operator removes or renames it.

        Refused (``REGISTER_NOT_EMPTY``) once the database holds any record: a second
        import would append the old approvals after later revocations and, the latest
        record winning, bring them back.
        """
        conn = self._connect(create=False)
        if conn is not None:
            try:
                held = conn.execute("SELECT EXISTS (SELECT 1 FROM approvals)").fetchone()[0]
            finally:
                conn.close()
            if held:
                from .._errors import FederationError  # lazily: federation imports torch

                raise FederationError(
                    f"{self.path} already holds approval records; importing {legacy} again "
                    "would undo revocations recorded since",
                    code="REGISTER_NOT_EMPTY",
                )
        skipped = 0

        def authentic() -> Iterator[Approval]:
            nonlocal skipped
            with Path(legacy).open(encoding="utf-8") as fh:
                for raw in fh:
                    if not raw.strip():
                        continue
                    try:
                        line = json.loads(raw)
                        approval = Approval.from_body(line["terms"])
                        want = hmac.new(self._mac_key, approval_payload(approval),
                                        hashlib.sha256).hexdigest()
                        ok = hmac.compare_digest(str(line["mac"]), want)
                    except (ValueError, KeyError, TypeError):
                        ok = False
                    if ok:
                        yield approval
                    else:
                        skipped += 1

        return self.register_many(authentic()), skipped

    # -- reading ---------------------------------------------------------------

    def lookup(self, consent_ids: Iterable[str]) -> dict[str, Approval]:
        """The latest authentic record for each of ``consent_ids`` that has one.

        Queried :data:`CHUNK` ids at a time through the ``(consent_id, seq)`` index;
        rows failing the HMAC are skipped, so a forged newer row does not hide an
        authentic older one and a forged row never counts.
        """
        out: dict[str, Approval] = {}
        with self._reader() as query:
            for chunk in _chunks(consent_ids):
                out.update(query(chunk))
        return out

    @contextmanager
    def _reader(self) -> Iterator[Callable[[Sequence[str]], dict[str, Approval]]]:
        """One read connection; yields ``query(ids) -> {id: latest authentic approval}``."""
        conn = self._connect(create=False)
        if conn is None:
            yield lambda ids: {}
            return
        tables = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'approvals'"
        ).fetchone()

        def query(ids: Sequence[str]) -> dict[str, Approval]:
            if tables is None or not ids:
                return {}
            uniq = sorted(set(ids))
            cur = conn.execute(
                "SELECT consent_id, terms, mac FROM approvals WHERE consent_id IN "
                f"({','.join('?' * len(uniq))}) ORDER BY consent_id, seq DESC",
                uniq,
            )
            return self._latest(cur)

        try:
            yield query
        finally:
            conn.close()

    def _latest(self, rows: Iterable[tuple[str, bytes, bytes]]) -> dict[str, Approval]:
        """First authentic row per consent id of rows ordered by (consent_id, seq DESC)."""
        out: dict[str, Approval] = {}
        for cid, terms, mac in rows:
            if cid in out:
                continue
            approval = self._authentic(terms, mac)
            # The id column is not authenticated: trust only the id inside the MAC'd terms.
            if approval is not None and approval.consent_id == cid:
                out[cid] = approval
        return out

    def current(self) -> dict[str, Approval]:
        """Every consent's latest authentic record: loads the whole register.

        For inspection and tests only; matching uses :meth:`lookup` /
        :meth:`unmatched`, which never hold more than a chunk.
        """
        conn = self._connect(create=False)
        if conn is None:
            return {}
        try:
            cur = conn.execute(
                "SELECT consent_id, terms, mac FROM approvals ORDER BY consent_id, seq DESC"
            )
            return self._latest(cur)
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return {}
            raise
        finally:
            conn.close()

    def unmatched(self, manifest: CohortManifest, entries: Iterable[ManifestEntry]) -> int:
        """How many of ``entries`` no live approval in the register covers.

        Memory is O(:data:`CHUNK`): entries are matched a chunk at a time.
        """
        missing = 0
        with self._reader() as query:
            for chunk in _chunks(entries):
                held = query([e.consent_id for e in chunk])
                missing += sum(
                    1
                    for e in chunk
                    if (a := held.get(e.consent_id)) is None or not a.covers(e, manifest)
                )
        return missing


def _chunks(items: Iterable[_T]) -> Iterator[list[_T]]:
    """``items`` in lists of :data:`CHUNK`."""
    chunk: list[_T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _is_jsonl_register(path: Path) -> bool:
    """Is ``path`` a JSON-lines approval register (first line ``{"mac": …, "terms": …}``)?"""
    if not path.is_file():
        return False
    with path.open("rb") as fh:
        first = fh.readline(1 << 16)
    try:
        line = json.loads(first)
    except ValueError:
        return False
    return isinstance(line, dict) and {"mac", "terms"} <= line.keys()
