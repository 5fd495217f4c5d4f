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

The register is a JSON-lines file in the node's state directory. Each line
carries an HMAC-SHA256 under the node's secret hashing key
(:func:`federation.receipts.hash_key`), checked on read, so a line written by
anyone without that key does not count; checking an HMAC costs about a
microsecond, where an Ed25519 verification costs ~100 µs (10⁷ approvals at
the bench's scale). The Ed25519 countersignature the ISV hands to the platform
is made by :meth:`ApprovalRegister.register` (one approval, as a merchant
approves) or on demand by :meth:`ApprovalRegister.countersign`.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from consent import CohortManifest, ManifestEntry, SignedArtefact

__all__ = ["Approval", "ApprovalRegister", "approval_payload"]

_CONTEXT = b"fedgate-node-approval\n"
_CACHE: dict[str, tuple[tuple[str, int, int, bytes], dict[str, Approval]]] = {}


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
        """JSON-ready terms (dates ISO 8601, times RFC 3339 UTC)."""
        out = asdict(self)
        out["purposes"] = sorted(self.purposes)
        out["categories"] = sorted(self.categories)
        for k in ("data_from", "data_to"):
            out[k] = getattr(self, k).isoformat()
        for k in ("consent_start", "consent_expiry"):
            out[k] = getattr(self, k).astimezone(UTC).isoformat()
        return out

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
    return _CONTEXT + rfc8785.dumps(approval.body())


class ApprovalRegister:
    """The node's append-only register of merchant approvals (JSON lines, locked on write).

    Parameters
    ----------
    path : Path
        The register file.
    key : Ed25519PrivateKey
        The node key: countersigns new records and checks the stored ones.
    """

    def __init__(self, path: Path, key: Ed25519PrivateKey, mac_key: bytes) -> None:
        self.path = Path(path)
        self._key = key
        self._pub: Ed25519PublicKey = key.public_key()
        self._mac_key = mac_key

    def _mac(self, approval: Approval) -> str:
        return hmac.new(self._mac_key, approval_payload(approval), hashlib.sha256).hexdigest()

    def _line(self, approval: Approval) -> str:
        return json.dumps({"terms": approval.body(), "mac": self._mac(approval)}, sort_keys=True)

    @contextmanager
    def _append(self) -> Iterator[Any]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield fh
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _write(self, lines: Iterable[str]) -> None:
        with self._append() as fh:
            fh.write("".join(line + "\n" for line in lines))

    def register(self, approval: Approval) -> bytes:
        """Record a merchant's approval; returns the node's Ed25519 countersignature."""
        self._write([self._line(approval)])
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
        """Record several approvals at once (a bulk import); returns how many."""
        count = 0
        with self._append() as fh:  # streamed: a bulk import never holds all lines at once
            for a in approvals:
                fh.write(self._line(a) + "\n")
                count += 1
        return count

    def revoke(self, consent_id: str) -> None:
        """Record that the merchant revoked ``consent_id`` in the ISV's system."""
        current = self.current().get(consent_id)
        if current is None:
            raise KeyError(f"no approval {consent_id!r} in the node's register")
        from dataclasses import replace

        self._write([self._line(replace(current, revoked=True))])

    def current(self) -> dict[str, Approval]:
        """The latest authentic record per consent id (lines failing the HMAC are skipped).

        Parsed once per process and file state (size, mtime), then served from memory.
        """
        if not self.path.exists():
            return {}
        st = self.path.stat()
        key = (str(self.path.resolve()), st.st_size, st.st_mtime_ns, self._mac_key)
        cached = _CACHE.get(key[0])
        if cached is not None and cached[0] == key:
            return cached[1]
        out: dict[str, Approval] = {}
        for raw in self.path.read_text("utf-8").splitlines():
            try:
                line = json.loads(raw)
                approval = Approval.from_body(line["terms"])
                ok = hmac.compare_digest(str(line["mac"]), self._mac(approval))
            except (ValueError, KeyError, TypeError):
                continue
            if ok:
                out[approval.consent_id] = approval
        _CACHE[key[0]] = (key, out)
        return out

    def unmatched(self, manifest: CohortManifest, entries: Sequence[ManifestEntry]) -> int:
        """How many of ``entries`` no live approval in the register covers."""
        held = self.current()
        return sum(
            1
            for e in entries
            if (a := held.get(e.consent_id)) is None or not a.covers(e, manifest)
        )
