"""The consent check: a pure function of explicit records, purpose, categories and time.

Shaped like a proof verifier: every input is an argument, nothing is read from
a database or a clock here, and the answer is a :class:`Decision` value. A
denial carries exactly one code from :data:`consent.DENY_CODES`; callers that
prefer an exception use :meth:`Decision.require` (``evaluate(records, use).require()``;
:func:`consent.require` is the database check that raises).

Precedence when several things are wrong with one consent (first wins)::

    SIGNATURE_INVALID > SUPERSEDED > REVOKED > NO_CONSENT (pending, rejected)
    > EXPIRED > NOT_YET_VALID > PAUSED > PURPOSE_NOT_COVERED
    > CATEGORY_NOT_COVERED > RANGE_NOT_COVERED > FREQUENCY_EXCEEDED

A request that is itself malformed (a naive ``at``, no category, a data range
whose start is after its end) is not a denial: it raises
:class:`~consent.InvalidConsentRequest` with code ``MALFORMED`` before any
consent is looked at, so a caller's bug is never reported as the merchant's
refusal.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import NamedTuple

from ._artefact import SignedArtefact
from ._errors import ConsentDenied, InvalidConsentRequest
from ._lifecycle import ConsentState, Status
from ._use import Use

__all__ = [
    "Decision",
    "ConsentRecord",
    "evaluate",
    "evaluate_one",
    "check_range",
]


class Decision(NamedTuple):
    """The answer to one consent check.

    ``allowed`` with the consent id and artefact hash that allow the use, or a
    denial with exactly one ``code`` and a human ``reason``. Immutable and
    compared by value; a ``NamedTuple`` rather than a frozen dataclass because
    the snapshot check builds one per decision and a frozen dataclass costs
    several times more to construct.
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
    if at.tzinfo is None:
        raise InvalidConsentRequest("at must be timezone-aware", code="MALFORMED")
    check_range(data_range)
    return _evaluate_one(record, purpose, tuple(categories), at, data_range)


def check_range(data_range: tuple[date, date] | None) -> None:
    """Refuse a data range whose first day is after its last (``MALFORMED``)."""
    if data_range is not None and data_range[0] > data_range[1]:
        raise InvalidConsentRequest(
            f"data range {data_range[0]} .. {data_range[1]} ends before it starts",
            code="MALFORMED",
        )


_D = Decision
_new = tuple.__new__
"""``_new(Decision, (...))`` is ``Decision(...)`` without NamedTuple's Python-level
``__new__``: the same value at a fraction of the cost, on the single-check hot path."""

Compiled = tuple[
    Decision | None,  # the status-only denial, if any (fixed for this record)
    Decision,  # the allow decision (fixed for this record)
    str,  # consent id
    str,  # artefact hash
    datetime,  # consent_start
    datetime,  # consent_expiry
    bool,  # paused
    frozenset[str],  # purposes
    frozenset[str],  # categories
    date,  # data_from
    date,  # data_to
    int,  # uses allowed per period
    int,  # uses in the period of the last use (an upper bound on this period's)
    ConsentRecord,
]
"""A record flattened for :func:`_decide`; the snapshot keeps one per consent."""


_SETS: dict[tuple[str, ...], frozenset[str]] = {}


def _shared_set(codes: tuple[str, ...]) -> frozenset[str]:
    """One frozenset per distinct code tuple (a few hundred at most, from a fixed vocabulary).

    Sets make membership one C-level test per query; sharing them keeps 10^5
    compiled records on a few cache lines instead of 10^5 separate sets.
    """
    shared = _SETS.get(codes)
    if shared is None:
        shared = _SETS[codes] = frozenset(codes)
    return shared


def compile_record(record: ConsentRecord) -> Compiled:
    """Precompute everything about ``record`` that does not depend on the query."""
    a = record.signed.artefact
    cid, digest = a.consent_id, record.signed.hash
    status = record.state.status
    static: Decision | None = None
    if not record.signature_ok:
        static = _D(False, "SIGNATURE_INVALID", cid, digest, "artefact signature does not verify")
    elif status is Status.SUPERSEDED:
        static = _D(False, "SUPERSEDED", cid, digest, "terms were replaced by a newer artefact")
    elif status is Status.REVOKED:
        static = _D(False, "REVOKED", cid, digest, "the merchant revoked this consent")
    elif status is Status.PENDING or status is Status.REJECTED:
        static = _D(False, "NO_CONSENT", cid, digest, f"consent is {status.value.lower()}")
    elif status is Status.EXPIRED:
        static = _D(False, "EXPIRED", cid, digest, "consent has expired")
    return (
        static,
        _D(True, None, cid, digest, "covered by consent"),
        cid,
        digest,
        a.consent_start,
        a.consent_expiry,
        status is Status.PAUSED,
        _shared_set(a.purposes),
        _shared_set(a.categories),
        a.data_from,
        a.data_to,
        a.frequency.uses,
        record.state.period_uses,
        record,
    )


def _decide(
    c: Compiled,
    purpose: str,
    categories: tuple[str, ...],
    at: datetime,
    data_range: tuple[date, date] | None,
) -> Decision:
    """The rules, in precedence order, over a compiled record: the one implementation.

    ``data_range`` must already be in order (:func:`check_range`).
    """
    (static, allow, cid, digest, start, expiry, paused, purposes, covered, lo, hi, limit,
     period_uses, rec) = c  # fmt: skip
    if static is not None:
        return static
    if at >= expiry:
        return _new(_D, (False, "EXPIRED", cid, digest, "consent has expired"))
    if at < start:
        return _new(_D, (False, "NOT_YET_VALID", cid, digest, "consent has not started"))
    if paused:
        return _new(_D, (False, "PAUSED", cid, digest, "the merchant paused this consent"))
    if purpose not in purposes:
        return _new(_D, (False, "PURPOSE_NOT_COVERED", cid, digest, "purpose not consented"))
    if not covered.issuperset(categories):
        return _new(_D, (False, "CATEGORY_NOT_COVERED", cid, digest, "a category is not consented"))
    if data_range is not None and not (lo <= data_range[0] and data_range[1] <= hi):
        return _new(_D, (False, "RANGE_NOT_COVERED", cid, digest, "data range outside the consent"))
    # period_uses bounds the uses in any one period, so the calendar maths is rarely needed.
    frequency = rec.signed.artefact.frequency
    if period_uses >= limit and rec.state.uses_in_period(frequency, at) >= limit:
        return _new(
            _D, (False, "FREQUENCY_EXCEEDED", cid, digest, "use limit for this period reached")
        )
    return allow


_NO_CONSENT = Decision.deny("NO_CONSENT", "no consent from this merchant for this use")


def _evaluate_one(
    record: ConsentRecord,
    purpose: str,
    categories: tuple[str, ...],
    at: datetime,
    data_range: tuple[date, date] | None,
) -> Decision:
    """:func:`evaluate_one` with positional arguments."""
    return _decide(compile_record(record), purpose, categories, at, data_range)


def _relevance(record: ConsentRecord, purpose: str) -> tuple[bool, bool, int, datetime, str]:
    """Sort key, most relevant last; the consent id breaks ties so the choice is total."""
    a = record.signed.artefact
    return (
        purpose in a.purposes,
        record.state.status is not Status.SUPERSEDED,
        a.version,
        a.created_at,
        a.consent_id,
    )


def evaluate(records: Sequence[ConsentRecord], use: Use) -> Decision:
    """Check a use against every consent a merchant gave; the pure core of ``check``.

    Records for other merchants, providers or consumers are ignored. If any
    consent allows the use, the newest such consent is cited; otherwise the
    denial of the most relevant consent is returned (one covering the purpose,
    not superseded, highest version, newest, then highest consent id), or
    ``NO_CONSENT`` when there is none.

    Parameters
    ----------
    records : Sequence[ConsentRecord]
        The consents to consider.
    use : Use
        The use; it must name its merchant (``MALFORMED`` otherwise).
    """
    merchant_id = use.merchant_id
    if merchant_id is None:
        raise InvalidConsentRequest("a single check names one merchant", code="MALFORMED")
    at, purpose, data_range = use.at, use.purpose, use.data_range
    if at.tzinfo is None:
        raise InvalidConsentRequest("at must be timezone-aware", code="MALFORMED")
    wanted = use.categories
    if not wanted:
        raise InvalidConsentRequest("a use reads at least one category", code="MALFORMED")
    check_range(data_range)
    mine = [
        r
        for r in records
        if r.signed.artefact.merchant_id == merchant_id
        and r.signed.artefact.data_provider == use.data_provider
        and r.signed.artefact.data_consumer == use.data_consumer
    ]
    if not mine:
        return _NO_CONSENT
    mine.sort(key=lambda r: _relevance(r, purpose), reverse=True)
    decisions = [_evaluate_one(r, purpose, wanted, at, data_range) for r in mine]
    for decision in decisions:
        if decision.allowed:
            return decision
    return decisions[0]

