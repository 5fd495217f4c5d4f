"""Before a job starts: which merchants' consents refuse it, and why, per ISV.

A consent's frequency limit counts **uses**; one use is one ISV node's round of
one job touching the merchant: the statistics pass, each training round (its
training and evaluation share the round's manifest), or one scoring request.
A training job of ``R`` rounds therefore needs ``R + 1`` uses of every
merchant's consent within one frequency period, a scoring job one.

:func:`consent_refusals` runs the platform's own consent check (the same
snapshot the cohort check uses, every signature verified) for each merchant
the ISV's table holds and counts the deny codes, adding
``FREQUENCY_EXCEEDED`` for consents that allow the first round but not all
``uses_needed`` (they would drop out of the job half-way). The CLI prints the
counts in the job's summary and error, so a job that ends up with no
consented rows says why.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.orm import Session

__all__ = ["Refusals", "consent_refusals", "uses_needed"]


@dataclass(frozen=True, slots=True)
class Refusals:
    """Per ISV: merchants in its table, merchants allowed for the whole job, deny counts."""

    merchants: Mapping[str, int]
    allowed: Mapping[str, int]
    denied: Mapping[str, Mapping[str, int]]

    def lines(self) -> list[str]:
        """``isv: CODE × n, …`` for every ISV with a refusal."""
        out = []
        for isv in sorted(self.denied):
            codes = ", ".join(f"{c} × {n}" for c, n in sorted(self.denied[isv].items()))
            if codes:
                out.append(f"{isv}: {self.allowed[isv]}/{self.merchants[isv]} merchants "
                           f"allowed; refused: {codes}")
        return out


def uses_needed(mode: str, rounds: int) -> int:
    """Consent uses a job takes from each merchant: ``rounds + 1`` to train, 1 to score."""
    return rounds + 1 if mode == "train" else 1


def consent_refusals(
    session: Session,
    merchants: Mapping[str, Sequence[str]],
    *,
    data_consumer: str,
    purpose: str,
    categories: Iterable[str],
    needed: int,
    consent_manager_key: Ed25519PublicKey,
    at: datetime | None = None,
) -> Refusals:
    """Count, per ISV, the merchants whose consent refuses the job and the reasons.

    Parameters
    ----------
    session : Session
        Reads committed consents.
    merchants : Mapping[str, Sequence[str]]
        ISV id → merchant ids in its table.
    data_consumer, purpose, categories
        The job's use.
    needed : int
        Uses the job takes from each consent (:func:`uses_needed`).
    consent_manager_key : Ed25519PublicKey
        Every artefact's signature is verified.
    at : datetime | None, default now
    """
    from consent import ConsentIndex, Use

    when = at or datetime.now(UTC)
    wanted = tuple(categories)
    denied: dict[str, Counter[str]] = {}
    allowed: dict[str, int] = {}
    for isv, ids in merchants.items():
        index = ConsentIndex.load(session, consent_manager_key=consent_manager_key,
                                  data_provider=isv)
        counts: Counter[str] = Counter()
        ok = 0
        use = Use(data_provider=isv, data_consumer=data_consumer, purpose=purpose,
                  categories=wanted, at=when)
        for m in ids:
            d = index.check(use.for_merchant(m))
            if not d.allowed:
                counts[str(d.code)] += 1
                continue
            record = next(r for r in index._by_key.get((m, isv, data_consumer), ())  # noqa: SLF001
                          if r.signed.artefact.consent_id == d.consent_id) if needed > 1 else None
            if record is not None:
                freq = record.signed.artefact.frequency
                left = freq.uses - record.state.uses_in_period(freq, when)
                if left < needed:
                    counts["FREQUENCY_EXCEEDED"] += 1
                    continue
            ok += 1
        denied[isv] = counts
        allowed[isv] = ok
    return Refusals({k: len(v) for k, v in merchants.items()}, allowed,
                    {k: dict(v) for k, v in denied.items()})
