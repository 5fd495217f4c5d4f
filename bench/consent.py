"""Consent benchmarks against cedarpy (AWS Cedar), in one run.

Run ``python -m bench.consent`` (100k-merchant decision set, 10⁶-merchant
cohort, 100k-entry manifest; several minutes, mostly Cedar) or
``python -m bench.consent --merchants 2000 --cohort 20000 --manifest 2000``
for a smoke run.

* **Decisions**: the same set — one request per merchant, purposes cycling
  through all five, every status, broken signatures, frequency limits and
  merchants without consent — is decided by fedgate's snapshot check
  (:meth:`consent.ConsentIndex.check`) and by Cedar with an equivalent policy
  (:data:`CEDAR_POLICY`, one ``Consent`` entity per merchant). The run fails
  unless the two agree on every request. Latency is the mean per decision over
  single calls (``cedarpy.is_authorized`` with pre-parsed policy and entities).
* **Cohort**: :meth:`consent.ConsentIndex.cohort` over 10⁶ merchants (best of
  three), then checked against the pure :func:`consent.evaluate` on a sample.
* **Manifest**: ``sign_manifest`` + ``verify_manifest`` of a 100k-entry
  manifest (build time reported separately); the verified manifest must equal
  the built one.

Inputs are built before each timed loop; outputs are folded into a digest.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import cedarpy
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import consent
from consent import (
    PURPOSES,
    ConsentArtefact,
    ConsentIndex,
    ConsentRecord,
    ConsentState,
    Frequency,
    ManifestEntry,
    ManifestReplayGuard,
    SignedArtefact,
    Status,
)

DEFAULT_MERCHANTS = 100_000
DEFAULT_COHORT = 1_000_000
DEFAULT_MANIFEST = 100_000
SINGLE_SAMPLE = 2_000  # single-call latency is the mean over this many calls per engine
PROVIDER, CONSUMER = "isv-a", "lender-1"
AT = datetime(2026, 9, 1, 12, 30, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"fedgate consent bench").digest())
PURPOSE_CODES = sorted(PURPOSES)
CATEGORY_CODES = sorted(consent.CATEGORIES)
UNITS = ("hour", "day", "month", "year")
QUERY_KEYS = (
    "merchant_id", "data_provider", "data_consumer", "purpose", "categories", "at", "data_range",
)  # fmt: skip

CEDAR_POLICY = """
permit (principal, action == Action::"use", resource)
when {
  resource.status == "ACTIVE" && resource.signature_ok &&
  resource.provider == context.provider && resource.consumer == context.consumer &&
  resource.start <= context.at && context.at < resource.expiry &&
  resource.purposes.contains(context.purpose) &&
  resource.categories.containsAll(context.categories) &&
  resource.data_from <= context.data_from && context.data_from <= context.data_to &&
  context.data_to <= resource.data_to &&
  (if resource.last_period ==
        (if resource.unit == "hour" then context.period_hour
         else if resource.unit == "day" then context.period_day
         else if resource.unit == "month" then context.period_month
         else context.period_year)
   then resource.period_uses else 0) < resource.max_uses
};
"""
"""fedgate's allow rule in Cedar: a consent allows a use only if every condition holds."""


@dataclass(frozen=True, slots=True)
class BenchRow:
    """One measured line of the table."""

    metric: str
    fedgate: float
    unit: str
    peer_value: float | None = None
    target: str = ""
    met: bool | None = None

    @property
    def ratio(self) -> float | None:
        """Cedar's time ÷ fedgate's (higher is better), None without a peer."""
        if self.peer_value is None or self.fedgate == 0:
            return None
        return self.peer_value / self.fedgate

    def __repr__(self) -> str:
        ratio = f"{self.ratio:.1f}x" if self.ratio is not None else "n/a"
        return f"BenchRow({self.metric}: {self.fedgate:,.6f} {self.unit}, vs cedarpy {ratio})"


@dataclass(frozen=True, slots=True)
class BenchResult:
    """What one run measured, keyed by input sizes."""

    merchants: int
    cohort: int
    manifest: int
    rows: tuple[BenchRow, ...]
    allowed: int
    digest: str


def _us(at: datetime) -> int:
    return (at - EPOCH) // timedelta(microseconds=1)


def make_records(n: int, seed: int, prefix: str = "m") -> tuple[list[ConsentRecord], list[str]]:
    """``n`` merchants, ~95 % with one consent of mixed status; returns (records, merchant ids).

    Times, dates and code tuples come from small pools so a million records
    share their immutable parts and fit in memory.
    """
    rnd = random.Random(seed)
    statuses = [Status.ACTIVE] * 12 + [s for s in Status if s is not Status.ACTIVE]
    starts = [AT - timedelta(days=d) for d in range(-10, 150, 3)]
    windows = [timedelta(days=d) for d in (60, 120, 200, 300, 360)]
    firsts = [date(2025, 1, 1) + timedelta(days=d) for d in range(0, 90, 7)]
    spans = [timedelta(days=d) for d in (180, 365, 500, 700)]
    purpose_sets = [
        tuple(sorted(rnd.sample(PURPOSE_CODES, k))) for k in (2, 3, 4, 5, 5) for _ in range(4)
    ]
    category_sets = [
        tuple(sorted(rnd.sample(CATEGORY_CODES, k))) for k in (3, 5, 8, 10, 10) for _ in range(4)
    ]
    frequencies = [Frequency(u, unit) for u in (1, 2, 5, 50) for unit in UNITS]
    lasts = [
        None,
        None,
        AT - timedelta(minutes=10),
        AT - timedelta(hours=5),
        AT - timedelta(days=40),
    ]
    records, merchants = [], []
    for i in range(n):
        merchant = f"{prefix}{i:07d}"
        merchants.append(merchant)
        if rnd.random() < 0.05:
            continue  # no consent at all
        start = rnd.choice(starts)
        first = rnd.choice(firsts)
        frequency = rnd.choice(frequencies)
        artefact = ConsentArtefact(
            consent_id=f"c-{merchant}",
            merchant_id=merchant,
            data_provider=PROVIDER if rnd.random() < 0.97 else "isv-b",
            data_consumer=CONSUMER if rnd.random() < 0.97 else "lender-2",
            purposes=rnd.choice(purpose_sets),
            categories=rnd.choice(category_sets),
            data_from=first,
            data_to=first + rnd.choice(spans),
            frequency=frequency,
            data_life_days=90,
            consent_start=start,
            consent_expiry=start + rnd.choice(windows),
            created_at=start,
        )
        last = rnd.choice(lasts)
        state = ConsentState(
            consent_id=artefact.consent_id,
            status=rnd.choice(statuses),
            version=2,
            use_count=0 if last is None else 7,
            period_uses=0 if last is None else rnd.randint(0, 3),
            last_used_at=last,
            updated_at=start,
        )
        signed = SignedArtefact(artefact, "", f"{i:064x}")
        records.append(ConsentRecord(signed, state, rnd.random() > 0.01))
    return records, merchants


def make_requests(merchants: Sequence[str], seed: int) -> list[dict[str, Any]]:
    """One request per merchant: purposes cycle through all five; categories and ranges vary."""
    rnd = random.Random(seed)
    out = []
    for i, merchant in enumerate(merchants):
        lo = date(2025, 1, 1) + timedelta(days=rnd.randrange(0, 200))
        out.append(
            {
                "merchant_id": merchant,
                "data_provider": PROVIDER,
                "data_consumer": CONSUMER,
                "purpose": PURPOSE_CODES[i % len(PURPOSE_CODES)],
                "categories": tuple(sorted(rnd.sample(CATEGORY_CODES, rnd.choice((1, 1, 2))))),
                "at": AT,
                "data_range": (lo, lo + timedelta(days=rnd.choice((30, 90)))),
            }
        )
    return out


def cedar_entities(records: Sequence[ConsentRecord]) -> str:
    """One Cedar ``Consent`` entity per merchant, carrying what fedgate's rule reads."""
    entities = []
    for r in records:
        a, s = r.signed.artefact, r.state
        last = -1
        if s.last_used_at is not None:
            last = _us(a.frequency.period_start(s.last_used_at))
        entities.append(
            {
                "uid": {"type": "Consent", "id": a.merchant_id},
                "attrs": {
                    "status": s.status.value,
                    "signature_ok": r.signature_ok,
                    "provider": a.data_provider,
                    "consumer": a.data_consumer,
                    "start": _us(a.consent_start),
                    "expiry": _us(a.consent_expiry),
                    "purposes": list(a.purposes),
                    "categories": list(a.categories),
                    "data_from": a.data_from.toordinal(),
                    "data_to": a.data_to.toordinal(),
                    "unit": a.frequency.unit,
                    "max_uses": a.frequency.uses,
                    "period_uses": s.period_uses,
                    "last_period": last,
                },
                "parents": [],
            }
        )
    return json.dumps(entities)


def cedar_request(query: dict[str, Any]) -> dict[str, Any]:
    """The Cedar request equivalent to one fedgate query."""
    at = query["at"]
    periods = {u: _us(Frequency(1, u).period_start(at)) for u in UNITS}
    return {
        "principal": {"type": "Consumer", "id": query["data_consumer"]},
        "action": {"type": "Action", "id": "use"},
        "resource": {"type": "Consent", "id": query["merchant_id"]},
        "context": {
            "provider": query["data_provider"],
            "consumer": query["data_consumer"],
            "at": _us(at),
            "purpose": query["purpose"],
            "categories": list(query["categories"]),
            "data_from": query["data_range"][0].toordinal(),
            "data_to": query["data_range"][1].toordinal(),
            "period_hour": periods["hour"],
            "period_day": periods["day"],
            "period_month": periods["month"],
            "period_year": periods["year"],
        },
    }


def _best(fn: Any, repeat: int = 3) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def _warm_up_manifest() -> None:
    """Sign and verify a one-entry manifest so import and registry set-up is not timed."""
    entry = ManifestEntry("m", "c", "0" * 64, AT - timedelta(days=1), AT + timedelta(days=1),
                          date(2025, 1, 1), date(2025, 1, 2))  # fmt: skip
    manifest = consent.build_manifest(
        job_id="warm", round=0, data_provider=PROVIDER, data_consumer=CONSUMER,
        purpose="model_training", categories=["margins"], entries=[entry], issued_at=AT,
        ttl=timedelta(minutes=1),
    )  # fmt: skip
    consent.verify_manifest(
        consent.sign_manifest(manifest, KEY), gateway_key=KEY.public_key(),
        data_provider=PROVIDER, now=AT, replay_guard=ManifestReplayGuard(),
    )  # fmt: skip


def run(merchants: int, cohort_size: int, manifest_size: int, seed: int = 7) -> BenchResult:
    """Run every benchmark once; raises AssertionError when a correctness check fails."""
    rows: list[BenchRow] = []
    log = lambda msg: print(f"[bench.consent] {msg}", file=sys.stderr, flush=True)  # noqa: E731

    # --- decisions: fedgate vs Cedar on the same set -------------------------------
    log(f"building {merchants:,} merchants and requests")
    records, ids = make_records(merchants, seed)
    queries = make_requests(ids, seed + 1)
    index = ConsentIndex(records)
    check = index.check
    fed_time = time.perf_counter()
    fed = [check(**q) for q in queries]
    fed_time = time.perf_counter() - fed_time
    sample = queries[: min(SINGLE_SAMPLE, len(queries))]
    # Plain keyword calls, as a caller writes them: unpacking a dict per call
    # (check(**q)) would add ~0.3 µs of harness time to a ~1 µs decision.
    calls = [tuple(q[k] for k in QUERY_KEYS) for q in sample]
    fed_single, _ = _best(
        lambda: [
            check(
                merchant_id=m,
                data_provider=p,
                data_consumer=c,
                purpose=u,
                categories=g,
                at=a,
                data_range=r,
            )
            for m, p, c, u, g, a, r in calls
        ]  # fmt: skip
    )
    fed_single /= len(sample)

    log("parsing Cedar entities and policy")
    policies = cedarpy.PolicySet.from_str(CEDAR_POLICY)
    entities = cedarpy.Entities.from_json_str(cedar_entities(records))
    requests = [cedar_request(q) for q in queries]
    log(f"Cedar deciding {len(requests):,} requests")
    cedar_time = time.perf_counter()
    cedar_allowed: list[bool] = []
    for i in range(0, len(requests), 5_000):
        batch = cedarpy.is_authorized_batch(requests[i : i + 5_000], policies, entities)
        cedar_allowed.extend(r.allowed for r in batch)
    cedar_time = time.perf_counter() - cedar_time
    cedar_sample = requests[: len(sample)]
    cedar_single, _ = _best(
        lambda: [cedarpy.is_authorized(req, policies, entities) for req in cedar_sample]
    )
    cedar_single /= len(cedar_sample)

    fed_allowed = [d.allowed for d in fed]
    mismatches = [
        q["merchant_id"]
        for q, f, c in zip(queries, fed_allowed, cedar_allowed, strict=True)
        if f != c
    ]
    assert not mismatches, f"fedgate and Cedar disagree on {len(mismatches)}: {mismatches[:5]}"
    digest = hashlib.sha256("".join(d.code or "ALLOW" for d in fed).encode()).hexdigest()
    codes: dict[str, int] = {}
    for d in fed:
        codes[d.code or "ALLOW"] = codes.get(d.code or "ALLOW", 0) + 1
    log(f"decisions agree on all {len(fed):,}; outcomes {dict(sorted(codes.items()))}")
    ratio = cedar_single / fed_single
    rows.append(
        BenchRow(
            "single decision latency",
            fed_single * 1e6,
            "µs",
            cedar_single * 1e6,
            "≥100x faster",
            ratio >= 100,
        )  # fmt: skip
    )
    rows.append(BenchRow(f"whole decision set ({len(fed):,})", fed_time, "s", cedar_time, "", None))

    # --- cohort check over a million merchants -------------------------------------
    log(f"building {cohort_size:,}-merchant snapshot")
    big_records, big_ids = make_records(cohort_size, seed + 2, prefix="b")
    big = ConsentIndex(big_records)
    del big_records
    cohort_query = {
        "data_provider": PROVIDER,
        "data_consumer": CONSUMER,
        "purpose": "model_training",
        "categories": ("margins",),
        "at": AT,
        "data_range": (date(2025, 3, 1), date(2025, 4, 30)),
    }
    cohort_time, cohort = _best(lambda: big.cohort(**cohort_query))
    rnd = random.Random(seed)
    chosen = set(cohort.merchant_ids.tolist())
    for merchant in rnd.sample(big_ids, min(2_000, cohort_size)):
        decision = big.check(merchant_id=merchant, **cohort_query)
        assert decision.allowed == (merchant in chosen), merchant
    rows.append(
        BenchRow(
            f"cohort check ({cohort_size:,} merchants, {len(cohort):,} allowed)",
            cohort_time,
            "s",
            None,
            "≤1 s",
            cohort_time <= 1.0,
        )  # fmt: skip
    )

    # --- a signed cohort manifest --------------------------------------------------
    log(f"building {manifest_size:,}-entry manifest")
    _warm_up_manifest()
    entries = [
        ManifestEntry(
            f"m{i:07d}",
            f"c-m{i:07d}",
            hashlib.sha256(b"%d" % i).hexdigest(),
            AT - timedelta(days=30, seconds=i),
            AT + timedelta(days=90, seconds=i),
            date(2025, 1, 1),
            date(2025, 12, 31),
            i % 2,
        )  # fmt: skip
        for i in range(manifest_size)
    ]
    build_time, manifest = _best(
        lambda: consent.build_manifest(
            job_id="bench-job",
            round=1,
            data_provider=PROVIDER,
            data_consumer=CONSUMER,
            purpose="model_training",
            categories=["margins", "turnover"],
            entries=entries,
            issued_at=AT,
            ttl=timedelta(minutes=15),
        ),  # fmt: skip
        repeat=1,
    )
    start = time.perf_counter()
    token = consent.sign_manifest(manifest, KEY)
    sign_time = time.perf_counter() - start
    start = time.perf_counter()
    verified = consent.verify_manifest(
        token, gateway_key=KEY.public_key(), data_provider=PROVIDER,
        now=AT + timedelta(seconds=30), replay_guard=ManifestReplayGuard(),
    )  # fmt: skip
    verify_time = time.perf_counter() - start
    assert verified == manifest, "verified manifest differs from the built one"
    total = sign_time + verify_time
    rows.append(BenchRow(f"manifest build ({manifest_size:,} entries)", build_time, "s"))
    rows.append(BenchRow("manifest sign", sign_time, "s"))
    rows.append(BenchRow("manifest verify", verify_time, "s"))
    rows.append(
        BenchRow(
            f"manifest sign + verify ({len(token) / 1e6:.1f} MB)",
            total,
            "s",
            None,
            "≤1 s",
            total <= 1.0,
        )  # fmt: skip
    )
    allowed = sum(fed_allowed)
    return BenchResult(merchants, cohort_size, manifest_size, tuple(rows), allowed, digest)


def render(result: BenchResult) -> str:
    """The result as a Markdown table (the README's format)."""
    lines = [
        f"consent benchmark: {result.merchants:,} decisions ({result.allowed:,} allowed), "
        f"cohort {result.cohort:,}, manifest {result.manifest:,}; digest {result.digest[:16]}",
        "",
        "| metric | fedgate | cedarpy | ratio | target | met |",
        "|---|---:|---:|---:|---|---|",
    ]
    for row in result.rows:
        peer = "—" if row.peer_value is None else f"{row.peer_value:,.3f} {row.unit}"
        ratio = "—" if row.ratio is None else f"{row.ratio:,.0f}×"
        met = "" if row.met is None else ("yes" if row.met else "NO")
        lines.append(
            f"| {row.metric} | {row.fedgate:,.3f} {row.unit} | {peer} | {ratio} | "
            f"{row.target} | {met} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run and print the table; a failed correctness check exits non-zero."""
    parser = argparse.ArgumentParser(prog="python -m bench.consent", description=__doc__)
    parser.add_argument("--merchants", type=int, default=DEFAULT_MERCHANTS)
    parser.add_argument("--cohort", type=int, default=DEFAULT_COHORT)
    parser.add_argument("--manifest", type=int, default=DEFAULT_MANIFEST)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    result = run(args.merchants, args.cohort, args.manifest, args.seed)
    print(render(result))
    missed = [r.metric for r in result.rows if r.met is False]
    if missed:
        print(f"targets missed: {', '.join(missed)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
