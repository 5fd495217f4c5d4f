"""The ClientApp's mods and handlers, called through their real interfaces without a runtime."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from federation import is_holdout
from federation.apps import (
    ERR,
    NodeConfig,
    build_client_app,
    job_record,
    load_cohort,
    make_manifest_mod,
)
from federation.apps._keys import (
    ARRAYS_KEY,
    ENCODER_KEY,
    IDENTITY_KEY,
    JOB_KEY,
    KEY_MANIFEST,
    KEY_MERCHANT_IDS,
    KEY_NONCE,
    KEY_RECEIPT,
    METRICS_KEY,
    RECEIPT_KEY,
    SCORE_IDS_KEY,
    SCORES_KEY,
)
from federation.apps._request import current_request
from federation.dp import PrivacyLedger
from federation.features import DEFAULT_MIN_BUCKET_ROWS, BinEncoder, QuantileSketch
from federation.models import build_g_erp, get_weights
from federation.node import dp_sketch, snap_edges
from federation.receipts import hash_key, merchant_ids_hash, verify_receipt
from federation.schema import erp_fields_for
from federation.specs import DPBudget, ModelSpec, get_spec

from ._flworld import (
    World,
    approve_at_node,
    incoming,
    make_world,
    node_context,
    signed_manifest,
    training_manifest,
)

CATS = ("margins", "cash_and_debt")
SPEC = replace(get_spec("pd-erp"), categories=CATS, batch_size=16)  # DP: the node requires it


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """One small world shared by this module's tests (each test uses its own job id)."""
    return make_world(tmp_path_factory.mktemp("world"))


def _labels(world: World, isv: str) -> dict[str, int]:
    import pandas as pd

    tab = pd.read_parquet(world.labels_path)
    return dict(zip(tab["merchant_id"], tab["default_12m"].astype(int), strict=True))


def _encoder(world: World, isv: str) -> BinEncoder:
    cols = erp_fields_for(CATS)
    # Edges on the public grid: the only encoders a node accepts.
    return BinEncoder(snap_edges(QuantileSketch.from_frame(world.erp[isv], cols).bin_edges(4)))


def _model_content(
    world: World, isv: str, token: bytes, *, job_id: str, round: int, spec=SPEC
) -> RecordDict:  # noqa: ANN001
    enc = _encoder(world, isv)
    model = build_g_erp(spec.arch, enc.n_outputs)
    return RecordDict(
        {
            JOB_KEY: job_record(spec=spec, job_id=job_id, round=round, manifest=token),
            ARRAYS_KEY: ArrayRecord({str(i): Array(w) for i, w in enumerate(get_weights(model))}),
            ENCODER_KEY: ArrayRecord({k: Array(v) for k, v in enc.to_arrays().items()}),
        }
    )


def _train_message(
    world: World, isv: str, job_id: str, *, round: int = 1, spec: ModelSpec = SPEC
) -> Message:
    token = signed_manifest(
        world, isv, job_id=job_id, round=round, categories=CATS, labels=_labels(world, isv)
    )
    return incoming(
        _model_content(world, isv, token, job_id=job_id, round=round, spec=spec), "train"
    )


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[set[str]]:
    """The merchant ids of every frame a connector returns to a node (one set per read)."""
    from federation.data import Connector

    seen: list[set[str]] = []
    real = Connector.read_selected

    def spy(self: Connector, *args: object, **kwargs: object) -> pd.DataFrame:
        frame = real(self, *args, **kwargs)  # type: ignore[arg-type]
        seen.append(set(frame["merchant_id"].astype(str)))
        return frame

    monkeypatch.setattr(Connector, "read_selected", spy)
    return seen


def test_train_reply_carries_weights_metrics_and_a_verifiable_receipt(
    world: World, reads: list[set[str]]
) -> None:
    """A valid train message yields declared arrays, whitelisted metrics and a signed receipt."""
    node = world.node("isv0")
    msg = _train_message(world, "isv0", "job-train-ok")

    reply = build_client_app()(msg, node_context(node))

    assert not reply.has_error(), reply.error if reply.has_error() else None
    assert set(reply.content.keys()) == {ARRAYS_KEY, METRICS_KEY, RECEIPT_KEY}
    from federation.apps._node import _public_key

    receipt = verify_receipt(
        reply.content.config_records[RECEIPT_KEY][KEY_RECEIPT],
        _public_key(node.node_key.with_suffix(".pub.pem")),
    )
    used = [m for m in world.erp["isv0"]["merchant_id"] if not is_holdout(m)]
    assert (receipt.job_id, receipt.round, receipt.data_provider) == ("job-train-ok", 1, "isv0")
    assert (
        receipt.rows_used == len(used) == reply.content.metric_records[METRICS_KEY]["num-examples"]
    )
    key = hash_key(node.state_dir)  # merchant-set hashes are keyed with the node's key
    assert receipt.merchants_hash == merchant_ids_hash(used, key=key)
    assert receipt.merchants_hash != merchant_ids_hash(used)
    # Training reads only what it uses: no held-out merchant's row is read.
    assert reads == [set(used)]
    assert (receipt.rows_read, receipt.merchants_read) == (len(used), len(used))
    assert receipt.merchants_read_hash == merchant_ids_hash(used, key=key)


def test_evaluate_reads_and_uses_only_held_out_merchants(
    world: World, reads: list[set[str]], tmp_path: Path
) -> None:
    """An evaluate reply reads exactly the labelled held-out merchants, and its receipt says so."""
    node = _own_state(world, "isv1", tmp_path, "min-score-cohort = 3")  # a dozen held out
    train = _train_message(world, "isv1", "job-eval-reads")
    app = build_client_app()
    assert not app(train, node_context(node)).has_error()  # the node trains in the job first
    reads.clear()
    msg = incoming(train.content, "evaluate")

    reply = app(msg, node_context(node))

    from federation.apps._node import _public_key

    assert not reply.has_error(), reply.error if reply.has_error() else None
    receipt = verify_receipt(
        reply.content.config_records[RECEIPT_KEY][KEY_RECEIPT],
        _public_key(node.node_key.with_suffix(".pub.pem")),
    )
    held_out = [m for m in world.erp["isv1"]["merchant_id"] if is_holdout(m)]
    assert reads == [set(held_out)]
    key = hash_key(node.state_dir)
    assert receipt.merchants_read_hash == receipt.merchants_hash
    assert receipt.merchants_hash == merchant_ids_hash(held_out, key=key)
    assert receipt.rows_read == receipt.rows_used == len(held_out)


def _refusal(
    world: World,
    token: bytes,
    *,
    job_id: str,
    message_type: str = "train",
    round: int = 1,
    clock: datetime | None = None,
) -> Message:
    """Run only the manifest mod; the fake next handler must never be reached."""
    reached: list[bool] = []

    def call_next(msg: Message, ctx: Context) -> Message:
        reached.append(True)
        return Message(RecordDict(), reply_to=msg)

    content = RecordDict(
        {JOB_KEY: job_record(spec=SPEC, job_id=job_id, round=round, manifest=token)}
    )
    mod = make_manifest_mod(clock=lambda: clock or datetime.now(UTC))
    reply = mod(incoming(content, message_type), node_context(world.node("isv0")), call_next)
    assert reached == [] or not reply.has_error()
    return reply


def _flip(token: bytes, where: str) -> bytes:
    jws, _, entries = token.partition(b"\n")
    if where == "signature":
        return jws[:-3] + (b"AAA" if jws[-3:] != b"AAA" else b"BBB") + b"\n" + entries
    lines = entries.split(b"\n")
    lines[0] = lines[0].replace(b"c-m0x000", b"c-m0x999")
    return jws + b"\n" + b"\n".join(lines)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("tampered-entry", "ROOT_MISMATCH"),
        ("tampered-signature", "SIGNATURE_INVALID"),
        ("stale", "EXPIRED"),
        ("other-node", "WRONG_PROVIDER"),
        ("replayed-round", "REPLAYED"),
    ],
)
def test_bad_manifest_makes_the_node_refuse(world: World, case: str, expected: str) -> None:
    """Tampered, stale, misaddressed or replayed manifests are refused before any handler runs."""
    job = f"job-{case}"
    token = signed_manifest(world, "isv0", job_id=job, categories=CATS)
    clock = None
    if case == "tampered-entry":
        token = _flip(token, "entry")
    elif case == "tampered-signature":
        token = _flip(token, "signature")
    elif case == "stale":
        clock = datetime.now(UTC) + timedelta(hours=1)
    elif case == "other-node":
        token = signed_manifest(world, "isv1", job_id=job, categories=CATS)
    elif case == "replayed-round":
        assert not _refusal(world, token, job_id=job).has_error()
        world.cohort.revoked.add("m0x001")
        try:
            token = signed_manifest(world, "isv0", job_id=job, categories=CATS)
        finally:
            world.cohort.revoked.discard("m0x001")

    reply = _refusal(world, token, job_id=job, clock=clock)

    assert reply.has_error()
    assert reply.error.code == ERR.MANIFEST_REJECTED
    assert reply.error.reason.startswith(expected)


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("missing", ERR.MANIFEST_MISSING),
        ("wrong-round", ERR.MANIFEST_MISMATCH),
        ("wrong-purpose", ERR.MANIFEST_MISMATCH),
    ],
)
def test_message_not_bound_to_its_manifest_is_refused(world: World, case: str, code: int) -> None:
    """No manifest, a manifest for another round, or a training manifest used for scoring."""
    job = f"job-bind-{case}"
    token = signed_manifest(world, "isv0", job_id=job, round=1, categories=CATS)
    if case == "missing":
        token = b""
    kwargs = {"round": 2} if case == "wrong-round" else {}
    mtype = "query.score" if case == "wrong-purpose" else "train"

    reply = _refusal(world, token, job_id=job, message_type=mtype, **kwargs)

    assert reply.has_error() and reply.error.code == code


def test_cohort_reads_only_manifest_merchants_inside_their_data_range(world: World) -> None:
    """Merchants outside the manifest, or with rows outside the consented range, are not read."""

    node = world.node("isv0")
    live = world.cohort.by_isv["isv0"][:10]
    entries = [replace(e, data_to=date(2025, 1, 1)) if i < 3 else e for i, e in enumerate(live)]
    manifest = training_manifest("isv0", entries, job_id="job-range", categories=CATS)

    cohort = load_cohort(node, manifest, now=datetime.now(UTC))

    assert cohort.merchant_ids == sorted(e.merchant_id for e in live[3:])
    assert list(cohort.frame.columns) == ["merchant_id", "as_of", *erp_fields_for(CATS)]


def _leaky_app(kind: str) -> ClientApp:
    """A ClientApp with fedgate's real mods whose train handler tries to leak data."""
    from federation.apps import egress_guard_mod, manifest_mod, usage_receipt_mod
    from federation.apps._request import current_usage

    app = ClientApp(mods=[manifest_mod, egress_guard_mod, usage_receipt_mod])

    @app.train()
    def train(msg: Message, ctx: Context) -> Message:
        req = current_request()
        assert req.manifest is not None
        cohort = load_cohort(req.node, req.manifest, now=datetime.now(UTC))
        rows = cohort.frame[list(cohort.features)].to_numpy(dtype=np.float64)
        current_usage().record(
            rows_used=len(rows), merchant_ids=cohort.merchant_ids, epsilon=0.0, delta=0.0
        )
        arrays = ArrayRecord({k: v for k, v in msg.content.array_records[ARRAYS_KEY].items()})
        content = RecordDict(
            {ARRAYS_KEY: arrays, METRICS_KEY: MetricRecord({"num-examples": len(rows)})}
        )
        if kind == "raw-rows-record":
            content["rows"] = ArrayRecord({"x": Array(rows)})
        elif kind == "raw-rows-in-model":
            arrays["rows"] = Array(rows)
        elif kind == "per-row-metric":
            content[METRICS_KEY] = MetricRecord(
                {"num-examples": len(rows), "auc": rows[:, 0].tolist()}
            )
        elif kind == "unlisted-metric":
            content[METRICS_KEY] = MetricRecord(
                {"num-examples": len(rows), "mean-debt": float(rows[:, -1].mean())}
            )
        elif kind == "reshaped-weights":
            first = next(iter(arrays.keys()))
            arrays[first] = Array(np.zeros((len(rows), 1), dtype=np.float32))
        return Message(content, reply_to=msg)

    return app


@pytest.mark.parametrize(
    "kind",
    [
        "raw-rows-record",
        "raw-rows-in-model",
        "per-row-metric",
        "unlisted-metric",
        "reshaped-weights",
    ],
)
def test_egress_guard_blocks_a_client_app_returning_raw_rows(world: World, kind: str) -> None:
    """Anything beyond declared weights and scalar whitelisted metrics makes the reply an error."""
    msg = _train_message(world, "isv1", f"job-leak-{kind}")

    reply = _leaky_app(kind)(msg, node_context(world.node("isv1")))

    assert reply.has_error()
    assert reply.error.code == ERR.EGRESS_BLOCKED


def test_identify_signs_the_nonce_and_carries_nothing_else(world: World) -> None:
    """The handshake proves the ISV key and a handshake carrying extra records is refused."""
    node = world.node("isv2")
    from federation.apps._node import _public_key
    from federation.apps.client_app import identify_payload

    ok = build_client_app()(
        incoming(RecordDict({JOB_KEY: ConfigRecord({KEY_NONCE: b"n" * 32})}), "query.identify"),
        node_context(node),
    )
    smuggled = build_client_app()(
        incoming(
            RecordDict({JOB_KEY: ConfigRecord({KEY_NONCE: b"n" * 32, KEY_MANIFEST: b"x"})}),
            "query.identify",
        ),
        node_context(node),
    )

    ident = ok.content.config_records[IDENTITY_KEY]
    _public_key(node.node_key.with_suffix(".pub.pem")).verify(
        ident["signature"], identify_payload(b"n" * 32, "isv2")
    )
    assert ident["isv-id"] == "isv2"
    assert smuggled.has_error() and smuggled.error.code == ERR.MANIFEST_MISSING


def test_scoring_returns_only_credit_scoring_merchants(world: World) -> None:
    """g-scores come back only for merchants in the credit_scoring manifest."""
    node = world.node("isv2")
    token = signed_manifest(
        world, "isv2", job_id="job-score", round=0, purpose="credit_scoring", categories=CATS
    )
    content = _model_content(world, "isv2", token, job_id="job-score", round=0)
    app = build_client_app()
    # The node scores only with a model it received in a job it trained in: train first.
    trained = _train_message(world, "isv2", "job-score-train")
    trained.content[ARRAYS_KEY] = content[ARRAYS_KEY]
    trained.content[ENCODER_KEY] = content[ENCODER_KEY]
    assert not app(trained, node_context(node)).has_error()
    msg = incoming(content, "query.score")

    reply = app(msg, node_context(node))

    assert not reply.has_error(), reply.error if reply.has_error() else None
    ids = reply.content.config_records[SCORE_IDS_KEY][KEY_MERCHANT_IDS]
    g = reply.content.array_records[SCORES_KEY]["g"].numpy()
    expected = sorted(
        e.merchant_id
        for e in world.cohort.by_isv["isv2"]
        if e.merchant_id in world.cohort.scoring_ok
    )
    assert sorted(ids) == expected
    assert g.shape == (len(expected),) and ((g > 0) & (g < 1)).all()


def test_node_refuses_a_dp_job_past_a_merchants_lifetime_budget(
    world: World, tmp_path: Path
) -> None:
    """With every merchant's lifetime ε (the node's policy: 4) spent, a train message trains nobody.

    The message asks for a lifetime of 1000; the node uses its own policy's.
    """
    node = _own_state(world, "isv0", tmp_path, "max-epsilon-lifetime = 4.0")
    budget = DPBudget(epsilon=3.0, lifetime_epsilon=1000.0)
    ledger = PrivacyLedger(node.privacy_ledger_path)
    ledger.reserve(
        job_id="earlier-job", budget=budget, merchant_ids=world.erp["isv0"]["merchant_id"]
    )
    spec = replace(SPEC, dp=budget)
    msg = _train_message(world, "isv0", "job-over-budget", spec=spec)
    ctx = node_context(node)

    reply = build_client_app()(msg, ctx)

    # Spent merchants sit the round out; with none left the round is below the minimum cohort.
    assert reply.has_error() and reply.error.code == ERR.POLICY_REFUSED
    assert reply.error.reason.startswith("POLICY_REFUSED: MIN_COHORT")
    assert ledger.job_history("job-over-budget") == []
    assert ledger.merchant_spent("m0x002") == 3.0


def test_node_refuses_a_dp_job_no_noise_can_fit_and_charges_nobody(
    world: World, tmp_path: Path
) -> None:
    """A job whose remaining rounds no noise can cover is refused before any merchant is charged."""
    node = _own_state(world, "isv0", tmp_path)
    budget = DPBudget(epsilon=3.0, lifetime_epsilon=10.0)
    ledger = PrivacyLedger(node.privacy_ledger_path)
    ledger.reserve(job_id="job-no-noise", budget=budget, merchant_ids=["someone-else"])
    ledger.record("job-no-noise", [(2.0, 0.3, 10)])  # round 1 spent ε≈2.7 of 3
    assert 2.5 < ledger.job_epsilon("job-no-noise", budget.delta) < budget.epsilon
    spec = replace(SPEC, dp=budget, rounds=20_001)  # 20,000 rounds left: no noise fits
    msg = _train_message(world, "isv0", "job-no-noise", round=2, spec=spec)

    reply = build_client_app()(msg, node_context(node))

    assert reply.has_error() and reply.error.code == ERR.BUDGET_EXCEEDED
    assert [ledger.merchant_spent(m) for m in world.erp["isv0"]["merchant_id"]] == [0.0] * len(
        world.erp["isv0"]
    )
    assert ledger.job_history("job-no-noise") == [(2.0, 0.3, 10)]


def _own_state(world: World, isv: str, tmp_path: Path, policy: str = "") -> NodeConfig:
    """``isv``'s node with a fresh state directory (its approvals re-registered) and a policy."""
    path = tmp_path / "node.toml"
    path.write_text(f"[policy]\n{policy}\n", "utf-8")
    node = replace(world.node(isv), state_dir=tmp_path / "state", policy=path)
    approve_at_node(node, world.cohort.by_isv[isv], scoring_ok=world.cohort.scoring_ok)
    return node


def _sketch_message(world: World, isv: str, job_id: str) -> Message:
    token = signed_manifest(world, isv, job_id=job_id, round=0, categories=CATS)
    content = RecordDict({JOB_KEY: job_record(spec=SPEC, job_id=job_id, round=0, manifest=token)})
    return incoming(content, "query.sketch")


def _sketch_app(kind: str) -> ClientApp:
    """fedgate's real mods around a sketch handler: honest, or one that ships row values."""
    from federation.apps import egress_guard_mod, manifest_mod, usage_receipt_mod
    from federation.apps._keys import SKETCH_KEY
    from federation.apps._request import current_usage

    app = ClientApp(mods=[manifest_mod, egress_guard_mod, usage_receipt_mod])

    @app.query("sketch")
    def sketch(msg: Message, ctx: Context) -> Message:
        req = current_request()
        assert req.manifest is not None
        cohort = load_cohort(req.node, req.manifest, now=datetime.now(UTC))
        current_usage().record(
            rows_used=len(cohort.frame), merchant_ids=cohort.merchant_ids, epsilon=0.0, delta=0.0
        )
        rng = np.random.default_rng(0)
        arrays = dp_sketch(
            cohort.frame, list(cohort.features), noise_multiplier=8.0, rng=rng
        ).to_arrays()
        first = next(k for k in arrays if k.endswith(":values"))
        x = cohort.frame[first.split(":")[1]].to_numpy(dtype=np.float64)
        if kind == "row-values":  # every row a point of weight 1
            arrays[first], arrays[first[:-6] + "weights"] = x, np.ones(x.size)
        elif kind == "light-points":  # few points, but each stands for fewer than k rows
            arrays[first], arrays[first[:-6] + "weights"] = x[:2], np.array([1.0, 1.0])
        elif kind == "wide-count":  # rows smuggled in a count array
            arrays[first[:-6] + "missing"] = x[:40]
        elif kind == "many-scalars":  # one row value per extra one-value array
            col = first.split(":")[1]
            arrays.update({f"{9000 + i}:{col}:missing": x[i : i + 1] for i in range(40)})
        elif kind == "values-without-weights":  # cohort/k raw values, no weights part
            del arrays[first[:-6] + "weights"]
            arrays[first] = x[: len(x) // DEFAULT_MIN_BUCKET_ROWS]
        elif kind == "undeclared-column":  # a feature the manifest's categories do not cover
            raw = pd.read_parquet(req.node.erp_path, columns=["labour_cost"])
            extra = dp_sketch(raw, ["labour_cost"], noise_multiplier=8.0, rng=rng).to_arrays()
            n = len(cohort.features)
            arrays.update(
                {k.replace("0000:", f"{n:04d}:"): v for k, v in extra.items() if k != "size"}
            )
        elif kind == "renumbered":  # a value smuggled in the column index
            arrays = {k.replace("0000:", "0042:"): v for k, v in arrays.items()}
        elif kind == "fractional-count":  # a row value smuggled in a count
            arrays[first[:-6] + "missing"] = np.array([x[0]])
        record = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})
        return Message(RecordDict({SKETCH_KEY: record}), reply_to=msg)

    return app


def test_sketch_points_each_aggregate_at_least_k_rows(world: World) -> None:
    """A node's sketch carries only bucket means of >= k rows and no point equals a row value."""
    from federation.features import DEFAULT_MIN_BUCKET_ROWS

    frame = world.erp["isv0"]
    cols = erp_fields_for(CATS)

    arrays = QuantileSketch.from_frame(frame, cols).to_arrays()

    for col in cols:
        i = cols.index(col)
        weights, values = arrays[f"{i:04d}:{col}:weights"], arrays[f"{i:04d}:{col}:values"]
        assert weights.size and (weights >= DEFAULT_MIN_BUCKET_ROWS).all()
        assert weights.size <= len(frame) // DEFAULT_MIN_BUCKET_ROWS
        assert not np.isin(values, frame[col].to_numpy(dtype=np.float64)).any(), col


def test_sketch_of_fewer_than_k_rows_sends_counts_only() -> None:
    """A column with fewer than k non-missing values sends no points, only its counts."""
    import pandas as pd

    df = pd.DataFrame({"a": [float(v) for v in range(19)] + [np.nan] * 5})

    sketch = QuantileSketch.from_frame(df, ["a"], min_rows=20)
    arrays = sketch.to_arrays()

    assert arrays["0000:a:values"].size == 0 and arrays["0000:a:weights"].size == 0
    assert arrays["0000:a:suppressed"].tolist() == [19.0]
    assert arrays["0000:a:missing"].tolist() == [5.0]
    assert QuantileSketch.from_arrays(arrays).count("a") == 24.0


@pytest.mark.parametrize(
    "kind",
    [
        "honest",
        "row-values",
        "light-points",
        "wide-count",
        "many-scalars",
        "values-without-weights",
        "undeclared-column",
        "renumbered",
        "fractional-count",
    ],
)
def test_egress_guard_lets_out_only_dp_grid_sketches(world: World, kind: str) -> None:
    """The guard passes the real sketch and blocks any other shape, name or count of arrays."""
    msg = _sketch_message(world, "isv2", f"job-sketch-{kind}")

    reply = _sketch_app(kind)(msg, node_context(world.node("isv2")))

    if kind == "honest":
        assert not reply.has_error(), reply.error.reason if reply.has_error() else None
    else:
        assert reply.has_error() and reply.error.code == ERR.EGRESS_BLOCKED
