"""The consent check: a pure function of explicit records, purpose, categories and time.

Shaped like a proof verifier: every input is an argument, nothing is read from
a database or a clock here, and the answer is a :class:`Decision` value. A
denial carries exactly one code from :data:`consent.DENY_CODES`; callers that
prefer an exception use :meth:`Decision.require`.

Precedence when several things are wrong with one consent (first wins)::

    SIGNATURE_INVALID > SUPERSEDED > REVOKED > NO_CONSENT (pending, rejected)
    > EXPIRED > NOT_YET_VALID > PAUSED > PURPOSE_NOT_COVERED
    > CATEGORY_NOT_COVERED > RANGE_NOT_COVERED > FREQUENCY_EXCEEDED
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime

from ._artefact import SignedArtefact
from ._errors import ConsentDenied, InvalidConsentRequest
from ._lifecycle import ConsentState, Status

__all__ = ["Decision", "ConsentRecord", "evaluate", "evaluate_one", "require_consent"]


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one consent check.

    ``allowed`` with the consent id and artefact hash that allow the use, or a
    denial with exactly one ``code`` and a human ``reason``.
    """

    allowed: bool
    code: str | None
    consent_id: str | None
    artefact_hash: str | None
    reason: str

    @classmethod
    def allow(cls, consent_id: str, artefact_hash: str) -> Decision:
        """An allowing decision citing the consent that covers the use."""
        return cls(True, None, consent_id, artefact_hash, "covered by consent")

    @classmethod
    def deny(
        cls,
        code: str,
        reason: str,
        consent_id: str | None = None,
        artefact_hash: str | None = None,
    ) -> Decision:
        """A denial with its code (and the consent it concerns, when there is one)."""
        return cls(False, code, consent_id, artefact_hash, reason)

    def require(self) -> Decision:
        """Return ``self`` when allowed; raise :class:`ConsentDenied` with the code otherwise."""
        if not self.allowed:
            raise ConsentDenied(self.reason, code=self.code)
        return self


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    """What a check needs about one consent: its signed terms, state, and signature verdict."""

    signed: SignedArtefact
    state: ConsentState
    signature_ok: bool = True


def evaluate_one(
    record: ConsentRecord,
    *,
    purpose: str,
    categories: Iterable[str],
    at: datetime,
    data_range: tuple[date, date] | None = None,
) -> Decision:
    """Check one consent against a use; see the module docstring for precedence.

    Parameters
    ----------
    record : ConsentRecord
        The consent.
    purpose : str
        The purpose code of the use.
    categories : Iterable[str]
        Data categories the use reads (all must be covered).
    at : datetime
        Time of the use (timezone-aware).
    data_range : tuple[date, date] | None, default None
        The data period the use reads; ``None`` skips the range test (the use
        then reads only within the consent's own range).
    """
    a = record.signed.artefact
    cid, digest = a.consent_id, record.signed.hash
    status = record.state.status
    if not record.signature_ok:
        return Decision.deny("SIGNATURE_INVALID", "artefact signature does not verify", cid, digest)
    if status is Status.SUPERSEDED:
        return Decision.deny("SUPERSEDED", "terms were replaced by a newer artefact", cid, digest)
    if status is Status.REVOKED:
        return Decision.deny("REVOKED", "the merchant revoked this consent", cid, digest)
    if status is Status.PENDING or status is Status.REJECTED:
        return Decision.deny("NO_CONSENT", f"consent is {status.value.lower()}", cid, digest)
    if status is Status.EXPIRED or at >= a.consent_expiry:
        return Decision.deny("EXPIRED", "consent has expired", cid, digest)
    if at < a.consent_start:
        return Decision.deny("NOT_YET_VALID", "consent has not started", cid, digest)
    if status is Status.PAUSED:
        return Decision.deny("PAUSED", "the merchant paused this consent", cid, digest)
    if purpose not in a.purposes:
        return Decision.deny("PURPOSE_NOT_COVERED", f"purpose {purpose} not consented", cid, digest)
    if not frozenset(a.categories).issuperset(categories):
        return Decision.deny("CATEGORY_NOT_COVERED", "a category is not consented", cid, digest)
    if data_range is not None and not (a.data_from <= data_range[0] <= data_range[1] <= a.data_to):
        return Decision.deny("RANGE_NOT_COVERED", "data range outside the consent", cid, digest)
    if record.state.uses_in_period(a.frequency, at) >= a.frequency.uses:
        return Decision.deny("FREQUENCY_EXCEEDED", "use limit for this period reached", cid, digest)
    return Decision.allow(cid, digest)


def _relevance(record: ConsentRecord, purpose: str) -> tuple[bool, bool, int, str]:
    a = record.signed.artefact
    return (
        purpose in a.purposes,
        record.state.status is not Status.SUPERSEDED,
        a.version,
        a.created_at.isoformat(),
    )


def evaluate(
    records: Sequence[ConsentRecord],
    *,
    merchant_id: str,
    data_provider: str,
    data_consumer: str,
    purpose: str,
    categories: Iterable[str],
    at: datetime,
    data_range: tuple[date, date] | None = None,
) -> Decision:
    """Check a use against every consent a merchant gave; the pure core of ``check``.

    Records for other merchants, providers or consumers are ignored. If any
    consent allows the use, the newest such consent is cited; otherwise the
    denial of the most relevant consent is returned (one covering the purpose,
    not superseded, newest), or ``NO_CONSENT`` when there is none.
    """
    if at.tzinfo is None:
        raise InvalidConsentRequest("at must be timezone-aware", code="MALFORMED")
    wanted = tuple(categories)
    if not wanted:
        raise InvalidConsentRequest("a use reads at least one category", code="MALFORMED")
    mine = [
        r
        for r in records
        if r.signed.artefact.merchant_id == merchant_id
        and r.signed.artefact.data_provider == data_provider
        and r.signed.artefact.data_consumer == data_consumer
    ]
    if not mine:
        return Decision.deny("NO_CONSENT", "no consent from this merchant for this use")
    mine.sort(key=lambda r: _relevance(r, purpose), reverse=True)
    decisions = [
        evaluate_one(r, purpose=purpose, categories=wanted, at=at, data_range=data_range)
        for r in mine
    ]
    for decision in decisions:
        if decision.allowed:
            return decision
    return decisions[0]


def require_consent(
    records: Sequence[ConsentRecord],
    *,
    merchant_id: str,
    data_provider: str,
    data_consumer: str,
    purpose: str,
    categories: Iterable[str],
    at: datetime,
    data_range: tuple[date, date] | None = None,
) -> Decision:
    """:func:`evaluate`, raising :class:`ConsentDenied` (with the code) on denial."""
    return evaluate(
        records,
        merchant_id=merchant_id,
        data_provider=data_provider,
        data_consumer=data_consumer,
        purpose=purpose,
        categories=categories,
        at=at,
        data_range=data_range,
    ).require()
