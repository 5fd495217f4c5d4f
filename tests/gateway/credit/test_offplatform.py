"""Off-platform lines: ERP-only PD × ERP-reported revenue_3m, hand-checked; strict input parsing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy.orm import Session, sessionmaker

from gateway import credit

from ._helpers import setup_book

MODEL = credit.OffPlatformModel("pd-erp-only", "t-1", "pd-erp-only:t-1@0123456789abcdef", False,
                                ("turnover",))


def _decide(
    s: Session, scores: dict[tuple[str, str], float], turnover: dict[tuple[str, str], int],
    *, no_consent: frozenset[tuple[str, str]] = frozenset(),
) -> tuple[credit.OffPlatformOutcome, dict[str, credit.LineDecision]]:
    v, pol = setup_book(s)
    allowed = {p: (None if p in no_consent else f"c-{p[0]}-{p[1]}") for p in scores}
    out = credit.offplatform_decision_inputs(
        scores, turnover, platform_labels={"m-plat": 0}, allowed=allowed, model=MODEL,
        turnover_digest="ab" * 32,
    )
    decided = credit.decide_lines(s, v, pol, out.merchants, models={"g_only": MODEL.model_id})
    return out, {d.merchant_id: d for d in decided}


def test_off_platform_lines_by_hand(sessions: sessionmaker[Session]) -> None:
    """Default policy (k 50 %, cut-off 12 %, cap 500,000 yuan, minimum 2,000 yuan, whole yuan)."""
    scores = {
        ("m-a", "isv01"): 0.03, ("m-b", "isv01"): 0.05, ("m-c", "isv02"): 0.13,
        ("m-d", "isv02"): 0.0, ("m-e", "isv01"): 0.02, ("m-e", "isv02"): 0.08,
        ("m-z", "isv01"): 0.04, ("m-plat", "isv01"): 0.01,
    }
    turnover = {
        ("m-a", "isv01"): 60_000_000, ("m-b", "isv01"): 1_234_567, ("m-c", "isv02"): 60_000_000,
        ("m-d", "isv02"): 2_000_000_000, ("m-e", "isv01"): 10_000_000,
        ("m-e", "isv02"): 8_000_000, ("m-z", "isv01"): 0, ("m-plat", "isv01"): 50_000_000,
    }
    with sessions() as s, s.begin():
        out, d = _decide(s, scores, turnover)

    # m-a: base 60,000,000 × 50 % = 30,000,000; h = ⌊10⁶ (1 − 0.03/0.12)⌋ = 750,000
    # → 22,500,000 fen (225,000 yuan), all of it uplift, all to isv01.
    assert (d["m-a"].line_f, d["m-a"].line_with, d["m-a"].uplift) == (0, 22_500_000, 22_500_000)
    assert d["m-a"].attribution == {"isv01": 22_500_000}
    # m-b: base ⌊1,234,567 × 5,000 / 10⁴⌋ = 617,283; h = ⌊10⁶ (1 − 0.05/0.12)⌋ = 583,333;
    # ⌊617,283 × 583,333 / 10⁶⌋ = 360,081 → 360,000 fen (whole yuan), above the 200,000 minimum.
    assert d["m-b"].line_with == 360_000 and d["m-b"].uplift == 360_000
    # m-c: PD 13 % ≥ the 12 % cut-off → no line; m-z: revenue 0 → no line.
    assert d["m-c"].line_with == 0 and d["m-z"].line_with == 0 and d["m-c"].attribution == {}
    # m-d: base 1,000,000,000 with h = 10⁶ → capped at 50,000,000 fen (500,000 yuan).
    assert d["m-d"].line_with == 50_000_000
    # m-e, two ISVs: PD = σ(mean(logit 0.02, logit 0.08)) = σ(−3.16708) = 0.040423; base from
    # the smaller report, 8,000,000 → 4,000,000; h = 663,138 → 2,652,552 → 2,652,500 fen.
    # Weights: isv01 alone h = 833,333 → 3,333,332 → 3,333,300; isv02 alone h = 333,333
    # → 1,333,332 → 1,333,300.
    assert d["m-e"].pd_with == pytest.approx(0.0404234, abs=1e-6)
    assert d["m-e"].line_with == 2_652_500 and d["m-e"].inputs["sales_3m"] == 8_000_000
    assert d["m-e"].attribution == {"isv01": 3_333_300, "isv02": 1_333_300}
    assert d["m-e"].inputs["off_platform"]["turnover_isv"] == "isv02"
    assert d["m-e"].inputs["consents"] == {"isv01": "c-m-e-isv01", "isv02": "c-m-e-isv02"}
    # The platform merchant is not decided here, only counted.
    assert "m-plat" not in d and out.on_platform_ignored == 1
    assert all(x.basis == "off-platform" and x.line_f == 0 for x in d.values())
    assert all(x.inputs["models"] == {"g_only": MODEL.model_id} for x in d.values())


def test_gate_and_missing_turnover_give_no_line(sessions: sessionmaker[Session]) -> None:
    """No consent → score unused; consented score without revenue_3m → no line; both recorded."""
    scores = {("m-x", "isv01"): 0.02, ("m-y", "isv01"): 0.02, ("m-w", "isv01"): 0.02,
              ("m-w", "isv02"): 0.50}
    turnover = {("m-x", "isv01"): 60_000_000, ("m-w", "isv01"): 60_000_000,
                ("m-w", "isv02"): 10_000}
    with sessions() as s, s.begin():
        out, d = _decide(s, scores, turnover,
                         no_consent=frozenset({("m-x", "isv01"), ("m-w", "isv02")}))

    assert (out.without_consent, out.without_turnover, out.on_platform_ignored) == (2, 1, 0)
    assert d["m-x"].pd_with is None and d["m-x"].line_with == 0
    assert d["m-x"].inputs["off_platform"]["no_line"] == "no_consented_score"
    assert d["m-y"].pd_with is None and d["m-y"].line_with == 0
    assert d["m-y"].inputs["off_platform"]["no_line"] == "no_turnover"
    # m-w: isv02's unconsented score (and its revenue report) are never read.
    assert d["m-w"].inputs["isvs"] == ["isv01"]
    assert d["m-w"].pd_with == 0.02 and d["m-w"].inputs["sales_3m"] == 60_000_000


def test_calibration_needs_labelled_consented_scores() -> None:
    """pd-erp with calibration but too few platform merchants: CALIBRATION_UNAVAILABLE."""
    model = credit.OffPlatformModel("pd-erp", "t", "pd-erp:t@x", True, ("turnover",))
    scores = {(f"p{i}", "isv01"): 0.1 for i in range(30)} | {("m-off", "isv01"): 0.2}
    labels = {f"p{i}": 0 for i in range(30)}  # one class only

    with pytest.raises(credit.OffPlatformInputError) as info:
        credit.offplatform_decision_inputs(
            scores, {}, platform_labels=labels, allowed=dict.fromkeys(scores, "c"),
            model=model, turnover_digest="0",
        )

    assert info.value.code == "CALIBRATION_UNAVAILABLE"


def test_read_turnover_reads_only_revenue_3m(tmp_path: Path) -> None:
    """Other signals (even negative ones) are ignored; revenue_3m is whole fen; BOM is fine."""
    path = tmp_path / "signals.csv"
    path.write_text(
        "\ufeffvalue,signal,isv_id,merchant_id\n"
        "123456,revenue_3m,isv01,m1\n"
        "-0.12,gross_margin_change,isv01,m1\n"
        "0,revenue_3m,isv02,m1\n",
        "utf-8",
    )

    rev, digest = credit.read_turnover(path)

    assert rev == {("m1", "isv01"): 123_456, ("m1", "isv02"): 0}
    assert len(digest) == 64


@pytest.mark.parametrize(
    ("body", "code", "line"),
    [
        ("merchant_id,isv_id,signal\nm1,isv01,revenue_3m\n", "BAD_COLUMNS", None),
        ("merchant_id,isv_id,signal,value\nm1,isv01,revenue_3m,+5\n", "BAD_TURNOVER", 2),
        ("merchant_id,isv_id,signal,value\nm1,isv01,revenue_3m,\n", "BAD_TURNOVER", 2),
        ("merchant_id,isv_id,signal,value\nm1,isv01,revenue_3m,1000000000001\n",
         "BAD_TURNOVER", 2),
        ("merchant_id,isv_id,signal,value\nm0,isv01,x,1\nm1,isv01,revenue_3m,-1\n",
         "NEGATIVE_TURNOVER", 3),
        ("merchant_id,isv_id,signal,value\n,isv01,revenue_3m,1\n", "BAD_ROW", 2),
        ("merchant_id,isv_id,signal,value\nm1,isv01,revenue_3m,1,9\n", "BAD_ROW", 2),
    ],
)
def test_read_turnover_refuses(tmp_path: Path, body: str, code: str, line: int | None) -> None:
    """Each malformed signals file is refused with its code and line."""
    path = tmp_path / "signals.csv"
    path.write_text(body, "utf-8")

    with pytest.raises(credit.OffPlatformInputError) as info:
        credit.read_turnover(path)

    assert (info.value.code, info.value.line) == (code, line)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ("merchant_id,g\nm1,0.1\n", "BAD_COLUMNS"),
        ("merchant_id,isv_id,g\nm1,isv01,1.5\n", "BAD_ROW"),
        ("merchant_id,isv_id,g\nm1,isv01,nan\n", "BAD_ROW"),
        ("merchant_id,isv_id,g\nm1,isv01,0.1\nm1,isv01,0.2\n", "DUPLICATE_SCORE"),
    ],
)
def test_read_score_rows_refuses(tmp_path: Path, body: str, code: str) -> None:
    """A score outside [0, 1], a missing column or a repeated pair is refused."""
    path = tmp_path / "scores.csv"
    path.write_text(body, "utf-8")

    with pytest.raises(credit.OffPlatformInputError) as info:
        credit.read_score_rows(path)

    assert info.value.code == code


def test_model_id_names_spec_job_and_weights(tmp_path: Path) -> None:
    """The recorded id is spec:job@sha256(model.npz)[:16]; a missing model file is BAD_MODEL."""
    (tmp_path / "lineage.json").write_text(json.dumps(
        {"job_id": "t-9", "spec": {"spec": "pd-erp-only", "label": "default_12m",
                                   "categories": "turnover,margins"}}), "utf-8")
    with pytest.raises(credit.OffPlatformInputError) as missing:
        credit.read_offplatform_model(tmp_path, calibrate=False)
    np.savez(tmp_path / "model.npz", w0=np.ones(2))

    model = credit.read_offplatform_model(tmp_path, calibrate=False)

    assert missing.value.code == "BAD_MODEL"
    assert model.model_id.startswith("pd-erp-only:t-9@") and len(model.model_id) == 32
    assert model.categories == ("turnover", "margins") and model.recorded_as == model.model_id
