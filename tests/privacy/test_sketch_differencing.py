"""Attack 4 — sketch differencing: two statistics over cohorts that differ by one merchant."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from federation.apps import ERR
from federation.apps._keys import SKETCH_KEY
from federation.dp import PrivacyLedger
from federation.features import QuantileSketch

from ..federation._flworld import World
from ._platform import (
    FEATURES,
    manifest,
    own_node,
    refusal_receipt,
    reply_receipt,
    send,
    sketch_message,
)

TARGET = "m0x007"


def _column_totals(sketch: QuantileSketch, arrays: dict[str, np.ndarray]) -> dict[str, float]:
    """Σ weight × point per column: the exact column total of a bucket-mean sketch."""
    out = {}
    for i, col in enumerate(sketch.columns):
        out[col] = float((arrays[f"{i:04d}:{col}:values"] * arrays[f"{i:04d}:{col}:weights"]).sum())
    return out


def _difference(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    sa, sb = QuantileSketch.from_arrays(a), QuantileSketch.from_arrays(b)
    ta, tb = _column_totals(sa, a), _column_totals(sb, b)
    return {c: ta[c] - tb[c] for c in ta}


def test_differencing_works_on_k_anonymous_sketches(world: World) -> None:
    """Control: the old bucket-mean sketches give the merchant's values back exactly."""
    frame = world.erp["isv0"]
    with_target = QuantileSketch.from_frame(frame, FEATURES).to_arrays()
    without = QuantileSketch.from_frame(frame[frame["merchant_id"] != TARGET], FEATURES).to_arrays()

    guess = _difference(with_target, without)

    truth = frame.set_index("merchant_id").loc[TARGET]
    assert all(abs(guess[c] - float(truth[c])) <= 1e-6 * max(1.0, abs(truth[c])) for c in FEATURES)


def test_differencing_two_node_sketches_recovers_nothing(world: World, tmp_path: Path) -> None:
    """Two DP grid sketches (new job ids) differ by noise, not by the merchant's values."""
    node = own_node(world, "isv0", tmp_path, "min-cohort = 5")
    entries = world.cohort.by_isv["isv0"]
    replies = []
    for job, cohort in (("job-all", entries), ("job-but-one", [e for e in entries
                                                               if e.merchant_id != TARGET])):
        reply = send(node, sketch_message(manifest(world, "isv0", cohort, job_id=job, round=0,
                                                   with_labels=False), job_id=job))
        assert not reply.has_error(), reply.error.reason if reply.has_error() else None
        replies.append({k: v.numpy() for k, v in reply.content.array_records[SKETCH_KEY].items()})

    guess = _difference(*replies)

    truth = world.erp["isv0"].set_index("merchant_id").loc[TARGET]
    for col in FEATURES:  # not one value within 10 % (or 100 units of money)
        err = abs(guess[col] - float(truth[col]))
        assert err > max(0.1 * abs(float(truth[col])), 100.0 if col in ("cash", "debt") else 0.01)
    # Every sketch is charged: the merchant's lifetime account and the receipt say so.
    assert PrivacyLedger(node.privacy_ledger_path).merchant_spent(TARGET) > 0
    assert reply_receipt(node, reply).epsilon_spent > 0


def test_sketch_leaves_out_merchants_whose_lifetime_is_spent(world: World, tmp_path: Path) -> None:
    """With lifetime = one job's ε, a second statistics request finds no merchant to use."""
    node = own_node(world, "isv1", tmp_path,
                    "min-cohort = 5\nmax-epsilon-per-job = 3.0\nmax-epsilon-lifetime = 3.0")
    entries = world.cohort.by_isv["isv1"]
    first = send(node, sketch_message(manifest(world, "isv1", entries, job_id="job-s1", round=0,
                                               with_labels=False), job_id="job-s1"))
    assert not first.has_error()

    second = send(node, sketch_message(manifest(world, "isv1", entries, job_id="job-s2", round=0,
                                                with_labels=False), job_id="job-s2"))

    assert second.has_error() and second.error.code == ERR.POLICY_REFUSED
    assert refusal_receipt(node, second).refusal == "MIN_COHORT"
