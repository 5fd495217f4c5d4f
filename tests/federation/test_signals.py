"""The node's ERP signals query (``query.signals``), played by a curious platform.

Called through the real ClientApp (manifest, egress guard, receipt mods) without a
runtime. Each ISV node here holds two ERP snapshots per merchant (2025-03-31 and
2025-06-30) with known changes; the platform asks for more than the node's policy
releases in every way it can, and must get nothing finer, nothing else and nobody
outside its manifest.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from federation.apps import ERR, NodeConfig, build_client_app
from federation.apps._keys import (
    JOB_KEY,
    KEY_JOB_ID,
    KEY_MANIFEST,
    KEY_MERCHANT_IDS,
    KEY_RECEIPT,
    KEY_ROUND,
    KEY_SIGNAL_AS_OF,
    KEY_SIGNAL_KIND,
    KEY_SIGNAL_SINCE,
    KEY_SINCE_DATES,
    KEY_SINCE_IDS,
    METRICS_KEY,
    RECEIPT_KEY,
    SIGNAL_IDS_KEY,
    SIGNALS_KEY,
)
from federation.node import NodePolicy, load_policy
from federation.receipts import verify_receipt
from federation.signals import (
    CHANGE_SIGNALS,
    ERP_CHANGES,
    REVENUE_3M,
    SIGNAL_CATEGORIES,
    SignalRules,
    erp_changes,
    release_problem,
    revenue_3m,
)

from ._flworld import World, approve_at_node, incoming, make_world, node_context, signed_manifest

THEN, NOW = date(2025, 3, 31), date(2025, 6, 30)
MONITORING = SIGNAL_CATEGORIES[ERP_CHANGES]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """A small world (three ISVs, 60 merchants each; every other one consents to scoring
    and monitoring, the rest to training only)."""
    return make_world(tmp_path_factory.mktemp("signals-world"))


def _two_snapshots(world: World, isv: str, *, one_only: int = 0) -> pd.DataFrame:
    """``isv``'s table with an earlier snapshot per merchant whose levels make the changes
    non-round (revenue +12.3456 %, shipping −35.55 %, orders +30.4 %, margin −15.26 pt);
    the first ``one_only`` merchants keep only their single snapshot."""
    now = world.erp[isv].copy()
    now["as_of"] = pd.Timestamp(NOW)
    then = now.copy()
    then["as_of"] = pd.Timestamp(THEN)
    then["monthly_revenue"] = np.round(now["monthly_revenue"] / 1.123456).astype(np.int64)
    then["shipping_cost_per_order"] = np.round(now["shipping_cost_per_order"] / 0.6445).astype(
        np.int64
    )
    then["orders_shipped"] = np.round(now["orders_shipped"] / 1.304).astype(np.int64)
    then["gross_margin"] = now["gross_margin"] + 0.1526
    then = then.iloc[one_only:]
    return pd.concat([then, now], ignore_index=True)


def _node(
    world: World, isv: str, tmp_path: Path, policy: str = "", *, min_score: int = 5,
    one_only: int = 0,
) -> NodeConfig:
    """``isv``'s node over a two-snapshot ERP table, own state, approvals and policy."""
    erp = tmp_path / f"{isv}-erp.parquet"
    _two_snapshots(world, isv, one_only=one_only).to_parquet(erp, index=False)
    path = tmp_path / f"{isv}-node.toml"
    path.write_text(
        f"[policy]\nmin-cohort = 5\nmin-score-cohort = {min_score}\n{policy}\n", "utf-8"
    )
    node = replace(world.node(isv), erp_path=erp, state_dir=tmp_path / f"{isv}-state",
                   policy=path)  # fmt: skip
    approve_at_node(node, world.cohort.by_isv[isv], scoring_ok=world.cohort.scoring_ok)
    return node


def _message(
    world: World,
    isv: str,
    job: str,
    *,
    kind: str = ERP_CHANGES,
    purpose: str = "post_loan_monitoring",
    categories: tuple[str, ...] = MONITORING,
    entries: list | None = None,  # type: ignore[type-arg]
    extra: dict | None = None,  # type: ignore[type-arg]
) -> Message:
    token = signed_manifest(world, isv, job_id=job, round=0, purpose=purpose,
                            categories=categories, entries=entries)  # fmt: skip
    cfg = ConfigRecord(
        {
            KEY_JOB_ID: job,
            KEY_ROUND: 0,
            KEY_MANIFEST: token,
            KEY_SIGNAL_KIND: kind,
            KEY_SIGNAL_AS_OF: NOW.isoformat(),
            KEY_SIGNAL_SINCE: THEN.isoformat(),
            **(extra or {}),
        }
    )
    return incoming(RecordDict({JOB_KEY: cfg}), "query.signals")


def _monitored(world: World, isv: str) -> list[str]:
    return sorted(
        e.merchant_id for e in world.cohort.by_isv[isv] if e.merchant_id in world.cohort.scoring_ok
    )


def _released(reply: Message) -> tuple[list[str], dict[str, np.ndarray]]:
    assert not reply.has_error(), reply.error.reason if reply.has_error() else None
    ids = [str(m) for m in reply.content.config_records[SIGNAL_IDS_KEY][KEY_MERCHANT_IDS]]  # type: ignore[union-attr]
    arrays = reply.content.array_records[SIGNALS_KEY]
    return ids, {k: v.numpy() for k, v in arrays.items()}


def _expected_changes(world: World, isv: str, ids: list[str]) -> dict[str, np.ndarray]:
    """The true changes of the two snapshots, rounded as the default policy says."""
    t = _two_snapshots(world, isv)
    a = t[t["as_of"] == pd.Timestamp(THEN)].set_index("merchant_id").loc[ids]
    b = t[t["as_of"] == pd.Timestamp(NOW)].set_index("merchant_id").loc[ids]

    def snap(x: pd.Series, step: float, lo: float, hi: float) -> np.ndarray:
        return np.clip(np.round(x.to_numpy(dtype=float) / step), lo / step, hi / step) * step

    return {
        "revenue_change": snap(b.monthly_revenue / a.monthly_revenue - 1, 0.01, -1, 2),
        "shipping_cost_per_order_change": snap(
            b.shipping_cost_per_order / a.shipping_cost_per_order - 1, 0.01, -1, 2
        ),
        "orders_shipped_change": snap(b.orders_shipped / a.orders_shipped - 1, 0.01, -1, 2),
        "gross_margin_change_pt": snap(100 * (b.gross_margin - a.gross_margin), 0.5, -50, 50),
    }


def test_erp_changes_are_released_rounded_for_monitoring_merchants_only(
    world: World, tmp_path: Path
) -> None:
    """Exactly the four changes on the node's grid; merchants without a monitoring consent
    are absent; the receipt records the rows used (two snapshots each) and ε 0."""
    node = _node(world, "isv0", tmp_path)

    ids, values = _released(build_client_app()(_message(world, "isv0", "sig-ok"),
                                               node_context(node)))  # fmt: skip

    monitored = _monitored(world, "isv0")
    assert ids == monitored and len(ids) == 30
    assert list(values) == list(CHANGE_SIGNALS)
    want = _expected_changes(world, "isv0", ids)
    for name in CHANGE_SIGNALS:
        np.testing.assert_allclose(values[name], want[name], atol=1e-9)
    # Non-round true changes came out on the grid (the levels never did).
    assert set(np.round(values["revenue_change"], 6)) <= {0.12, 0.13}
    assert set(np.round(values["gross_margin_change_pt"], 6)) <= {-15.5, -15.0}
    from federation.apps._node import _public_key

    reply = build_client_app()(_message(world, "isv0", "sig-ok-2"), node_context(node))
    receipt = verify_receipt(
        reply.content.config_records[RECEIPT_KEY][KEY_RECEIPT],  # type: ignore[arg-type]
        _public_key(node.node_key.with_suffix(".pub.pem")),
    )
    assert receipt.action == "query.signals" and receipt.epsilon_spent == 0.0
    assert (receipt.rows_used, receipt.merchants_used) == (60, 30)
    assert (receipt.rows_read, receipt.merchants_read) == (60, 30)


def test_a_merchant_without_two_snapshots_is_left_out(world: World, tmp_path: Path) -> None:
    """Merchants with one snapshot only in the window are not in the reply."""
    node = _node(world, "isv1", tmp_path, one_only=10)
    single = set(world.erp["isv1"]["merchant_id"].iloc[:10])

    ids, _ = _released(build_client_app()(_message(world, "isv1", "sig-one"), node_context(node)))

    assert set(ids) == set(_monitored(world, "isv1")) - single
    assert len(ids) == 25


def test_revenue_3m_is_floored_to_the_node_granularity(world: World, tmp_path: Path) -> None:
    """Three times the latest monthly revenue at or before as-of, rounded down to the node's
    step (this node: 100 yuan; the world's revenues are a few hundred yuan a month)."""
    node = _node(world, "isv2", tmp_path, "signal-revenue-step = 10000")
    msg = _message(world, "isv2", "sig-rev", kind=REVENUE_3M, purpose="credit_scoring",
                   categories=("turnover",))  # fmt: skip

    ids, values = _released(build_client_app()(msg, node_context(node)))

    latest = world.erp["isv2"].set_index("merchant_id").loc[ids, "monthly_revenue"]
    want = (3 * latest.to_numpy(dtype=np.int64) // 10_000) * 10_000
    assert ids == _monitored(world, "isv2")
    assert values["revenue_3m"].dtype == np.int64
    np.testing.assert_array_equal(values["revenue_3m"], want)
    assert (values["revenue_3m"] <= 3 * latest.to_numpy()).all() and (want > 0).all()
    assert not (values["revenue_3m"] % 10_000).any()


@pytest.mark.parametrize(
    ("case", "code", "rule"),
    [
        ("forbidden-signal", ERR.POLICY_REFUSED, "SIGNAL_NOT_ALLOWED"),
        ("unknown-signal", ERR.POLICY_REFUSED, "SIGNAL_UNKNOWN"),
        ("changes-for-scoring", ERR.MANIFEST_MISMATCH, "PURPOSE_MISMATCH"),
        ("revenue-for-monitoring", ERR.MANIFEST_MISMATCH, "PURPOSE_MISMATCH"),
        ("training-manifest", ERR.MANIFEST_MISMATCH, ""),
        ("fewer-categories", ERR.POLICY_REFUSED, "CATEGORY_NOT_CONSENTED"),
        ("unapproved-merchant", ERR.CONSENT_NOT_APPROVED, "CONSENT_NOT_APPROVED"),
        ("bad-date", ERR.POLICY_REFUSED, "BAD_REQUEST"),
        ("below-min-cohort", ERR.POLICY_REFUSED, "MIN_COHORT"),
    ],
)
def test_a_request_outside_the_node_policy_is_refused(
    world: World, tmp_path: Path, case: str, code: int, rule: str
) -> None:
    """Another kind, another purpose, fewer categories, an unapproved merchant, a bad date
    or a cohort below the minimum: an error reply with a code, and no signal."""
    policy = 'allowed-signals = ["erp-changes"]' if case == "forbidden-signal" else ""
    # 30 merchants are monitored: a minimum of 31 refuses them all.
    node = _node(world, "isv0", tmp_path, policy, min_score=31 if "min" in case else 5)
    job = f"sig-{case}"
    kw: dict = {}  # type: ignore[type-arg]
    if case == "forbidden-signal":
        kw = {"kind": REVENUE_3M, "purpose": "credit_scoring", "categories": ("turnover",)}
    elif case == "unknown-signal":
        kw = {"kind": "erp-levels"}
    elif case == "changes-for-scoring":
        kw = {"purpose": "credit_scoring"}
    elif case == "revenue-for-monitoring":
        kw = {"kind": REVENUE_3M}
    elif case == "training-manifest":
        kw = {"purpose": "model_training"}
    elif case == "fewer-categories":
        kw = {"categories": ("turnover", "margins")}
    elif case == "unapproved-merchant":
        outside = [
            e for e in world.cohort.by_isv["isv0"] if e.merchant_id not in world.cohort.scoring_ok
        ]
        approved = [
            e for e in world.cohort.by_isv["isv0"] if e.merchant_id in world.cohort.scoring_ok
        ]
        kw = {"entries": [*outside[:1], *approved]}
    elif case == "bad-date":
        kw = {"extra": {KEY_SIGNAL_AS_OF: "2025-06-31"}}

    reply = build_client_app()(_message(world, "isv0", job, **kw), node_context(node))

    assert reply.has_error() and reply.error.code == code, reply
    assert rule in reply.error.reason


def test_asking_for_finer_rounding_or_other_fields_gets_the_same_release(
    world: World, tmp_path: Path
) -> None:
    """Keys a request may not set (a step, a clip, fields, a minimum) are never read: the
    reply is the policy's release, value for value."""
    node = _node(world, "isv0", tmp_path)
    plain = _released(build_client_app()(_message(world, "isv0", "sig-plain"), node_context(node)))
    greedy = _message(
        world, "isv0", "sig-greedy",
        extra={"signal-change-step": 1e-9, "signal-margin-step-pt": 1e-9,
               "signal-max-change": 1e9, "min-score-cohort": 1, "fields": ["cash", "debt"],
               "signal-revenue-step": 1, "categories": "cash_and_debt"},
    )  # fmt: skip

    ids, values = _released(build_client_app()(greedy, node_context(node)))

    assert ids == plain[0]
    assert list(values) == list(CHANGE_SIGNALS)
    for name in CHANGE_SIGNALS:
        np.testing.assert_array_equal(values[name], plain[1][name])


def test_since_for_merchants_outside_the_manifest_releases_nobody_more(
    world: World, tmp_path: Path
) -> None:
    """Per-merchant since days naming merchants outside the manifest (no monitoring consent)
    add nobody to the reply; a listed manifest merchant uses its own day."""
    node = _node(world, "isv0", tmp_path, min_score=1)
    outsiders = [m for m in world.erp["isv0"]["merchant_id"] if m not in world.cohort.scoring_ok]
    inside = _monitored(world, "isv0")[0]
    msg = _message(
        world, "isv0", "sig-since",
        extra={KEY_SIGNAL_SINCE: "", KEY_SINCE_IDS: [*outsiders, inside],
               KEY_SINCE_DATES: [THEN.isoformat()] * (len(outsiders) + 1)},
    )  # fmt: skip

    ids, _ = _released(build_client_app()(msg, node_context(node)))

    assert ids == [inside]


def _leaky_app(kind: str, world: World) -> ClientApp:
    """fedgate's real mods around a signals handler that tries to send more than the policy."""
    from federation.apps import egress_guard_mod, manifest_mod, usage_receipt_mod
    from federation.apps._node import load_cohort
    from federation.apps._request import current_request, current_usage

    app = ClientApp(mods=[manifest_mod, egress_guard_mod, usage_receipt_mod])

    @app.query("signals")
    def leak(msg: Message, ctx: Context) -> Message:
        from datetime import UTC, datetime

        req = current_request()
        assert req.manifest is not None
        cohort = load_cohort(req.node, req.manifest, now=datetime.now(UTC), history=True)
        rules = NodePolicy(min_score_cohort=5).signal_rules()
        out = erp_changes(cohort.frame, as_of=NOW, since=THEN, since_by_merchant={},
                          rules=rules)  # fmt: skip
        ids, values = list(out.merchant_ids), dict(out.values)
        used = list(ids)  # what the receipt says; the reply may claim otherwise
        latest = cohort.frame.drop_duplicates("merchant_id", keep="last").set_index("merchant_id")
        if kind == "unrounded":
            values["revenue_change"] = values["revenue_change"] + 0.003456
        elif kind == "levels":
            values["revenue_change"] = latest.loc[ids, "monthly_revenue"].to_numpy(float)
        elif kind == "extra-array":
            values["cash"] = latest.loc[ids, "cash"].to_numpy(float)
        elif kind == "outside-merchant":
            ids[0] = next(m for m in world.erp["isv0"]["merchant_id"]
                          if m not in world.cohort.scoring_ok)  # fmt: skip
        elif kind == "below-min-cohort":
            ids, values = ids[:2], {k: v[:2] for k, v in values.items()}
        elif kind == "extra-metric":
            pass
        if kind == "below-min-cohort":
            used = ids
        current_usage().record(
            rows_used=2 * len(used), merchant_ids=used, epsilon=0.0, delta=0.0,
            rows_read=cohort.rows_read, read_ids=cohort.merchant_ids,
        )  # fmt: skip
        metrics = {"num-examples": len(ids)}
        if kind == "extra-metric":
            metrics["auc"] = float(latest["gross_margin"].mean())
        return Message(
            RecordDict(
                {
                    SIGNALS_KEY: ArrayRecord({k: Array(np.ascontiguousarray(v))
                                              for k, v in values.items()}),  # fmt: skip
                    SIGNAL_IDS_KEY: ConfigRecord({KEY_MERCHANT_IDS: ids}),
                    METRICS_KEY: MetricRecord(metrics),
                }
            ),
            reply_to=msg,
        )

    return app


@pytest.mark.parametrize(
    "kind",
    ["unrounded", "levels", "extra-array", "outside-merchant", "below-min-cohort",
     "extra-metric", "none"],
)  # fmt: skip
def test_egress_guard_blocks_a_handler_that_releases_more(
    world: World, tmp_path: Path, kind: str
) -> None:
    """Off-grid changes, levels, another field, a merchant outside the manifest, too few
    merchants or another metric: the guard turns the reply into EGRESS_BLOCKED (the same
    handler releasing the policy's values passes, so the guard is what stops the others)."""
    node = _node(world, "isv0", tmp_path, "allowed-metrics = [\"auc\"]")
    msg = _message(world, "isv0", f"sig-leak-{kind}",
                   categories=(*MONITORING, "cash_and_debt"))  # fmt: skip

    reply = _leaky_app(kind, world)(msg, node_context(node))

    if kind == "none":
        assert not reply.has_error(), reply.error.reason if reply.has_error() else None
    else:
        assert reply.has_error() and reply.error.code == ERR.EGRESS_BLOCKED, kind


def test_release_problem_is_a_pure_check() -> None:
    """The guard's check on hand-made arrays: the policy's grid and clip, nothing else."""
    rules = SignalRules(min_cohort=2)
    good = {k: np.asarray([0.12, -0.35]) for k in CHANGE_SIGNALS}
    good["gross_margin_change_pt"] = np.asarray([-15.5, 50.0])

    assert release_problem(ERP_CHANGES, ["a", "b"], good, rules, {"a", "b"}) is None
    clipped = {**good, "orders_shipped_change": np.asarray([2.5, 0.0])}
    assert "outside" in str(release_problem(ERP_CHANGES, ["a", "b"], clipped, rules, {"a", "b"}))
    fine = {**good, "revenue_change": np.asarray([0.123, 0.0])}
    assert "grid" in str(release_problem(ERP_CHANGES, ["a", "b"], fine, rules, {"a", "b"}))
    rev = {"revenue_3m": np.asarray([1_200_000, 1_250_000], dtype=np.int64)}
    assert "multiples" in str(release_problem(REVENUE_3M, ["a", "b"], rev, rules, {"a", "b"}))
    assert release_problem(REVENUE_3M, ["a", "b"], {"revenue_3m": rev["revenue_3m"] // 100_000
                                                    * 100_000}, rules, {"a", "b"}) is None


def test_revenue_3m_and_changes_are_pure_functions_of_the_snapshots() -> None:
    """Latest at or before as-of; then at or before since; no two distinct snapshots: absent."""
    frame = pd.DataFrame(
        {
            "merchant_id": ["a", "a", "a", "b", "c", "c"],
            "as_of": pd.to_datetime(["2025-01-31", "2025-03-31", "2025-09-30", "2025-03-31",
                                     "2025-01-31", "2025-02-28"]),
            "monthly_revenue": [1_000_000, 1_500_000, 9, 2_345_678, 100, 0],
            "shipping_cost_per_order": [1000, 700, 1, 500, 10, 10],
            "orders_shipped": [100, 150, 1, 10, 5, 5],
            "gross_margin": [0.30, 0.10, 0.9, 0.2, 0.1, 0.1],
        }
    )  # fmt: skip
    rules = SignalRules(min_cohort=1)

    ch = erp_changes(frame, as_of=date(2025, 6, 30), since=date(2025, 2, 1),
                     since_by_merchant={"zz": date(2025, 1, 1)}, rules=rules)  # fmt: skip
    rev = revenue_3m(frame, as_of=date(2025, 6, 30), rules=rules)

    assert ch.merchant_ids == ["a", "c"] and ch.rows_used == 4
    np.testing.assert_allclose(ch.values["revenue_change"], [0.5, -1.0])
    np.testing.assert_allclose(ch.values["shipping_cost_per_order_change"], [-0.3, 0.0])
    np.testing.assert_allclose(ch.values["gross_margin_change_pt"], [-20.0, 0.0])
    assert rev.merchant_ids == ["a", "b", "c"]
    assert rev.values["revenue_3m"].tolist() == [4_500_000, 7_000_000, 0]


@pytest.mark.parametrize(
    "table",
    [
        'allowed-signals = ["erp-levels"]',
        "signal-change-step = 0.0",
        "signal-max-change = 2.005",
        "signal-revenue-step = 0",
    ],
)
def test_bad_signal_policy_is_refused(tmp_path: Path, table: str) -> None:
    """An unknown kind, a zero step or a clip off its grid: BAD_POLICY, never a guess."""
    from federation import FederationError

    path = tmp_path / "node.toml"
    path.write_text(f"[policy]\n{table}\n", "utf-8")

    with pytest.raises(FederationError) as info:
        load_policy(path)

    assert info.value.code == "BAD_POLICY"
