"""Off-platform merchants (ERP data, no platform sales): their inputs, checked, and their scores.

An off-platform merchant has no platform row, so no ``f`` and no line without ISV
data: its line is ``line(PD, revenue_3m)`` under the credit policy, and **the whole
line is the ISV's uplift** (:mod:`gateway.credit._lines`). Its two inputs:

* **PD** — the ``g`` of a scoring job of a model trained on ``default_12m``:

  - ``pd-erp-only`` (the spec made for this): its ``g`` is a PD, used as is — or, with
    ``calibrate=True``, recalibrated like ``pd-erp``'s: DP-SGD's clipping and noise bend
    the intercept, and on a 10,000-merchant world its mean PD was 0.74 % against a
    4.03 % default rate (ranking AUC 0.748), enough to give nearly everyone a line;
  - ``pd-erp`` with explicit calibration (``calibrate=True``): ``g`` mapped to a PD by a
    one-feature logistic regression ``PD = σ(c0 + c1·logit g)`` fitted on the
    consented ``g`` of the merchants that *do* have a platform row and their platform
    labels (post-processing of an already private model; no ε).

  Several ISVs for one merchant: ``PD = σ(mean logit of their PDs)`` (the combiner's
  rule), each ISV's own PD kept for attribution.
* **Turnover** — the node's ``revenue_3m`` release: a ``signals.csv`` with exactly the
  columns ``merchant_id, isv_id, signal, value``; the rows whose ``signal`` is
  ``revenue_3m`` carry the ERP-reported trailing-three-month revenue in integer fen
  (other signals are ignored here). Only the revenue of an ISV whose score a consent
  covers is read; with several such ISVs the **smallest** report is the line base
  (a lender does not add up two ERPs' views of one business, and takes the cautious one).

The gate is the platform path's: a score counts only where a live ``credit_scoring``
consent covers the (merchant, ISV) pair for the spec's categories
(:func:`gateway.credit.covering_consents`), checked by the caller. Which merchants are
decided here: those in the scores file **without** a platform row; a score of a
merchant with a platform row is ignored and counted (a scoring job scores every
consented merchant; the platform path decides those), except that with calibration
the consented ones are the calibration sample.

Every parser is strict and all-or-nothing: a bad file raises
:class:`OffPlatformInputError` with a code (and the 1-based line where there is one)
before anything is decided, so nothing is written.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._errors import OffPlatformInputError
from ._lines import MerchantScores
from ._logodds import logit, sigmoid

__all__ = [
    "TURNOVER_SIGNAL",
    "SIGNAL_COLUMNS",
    "MAX_REVENUE_3M",
    "OffPlatformModel",
    "OffPlatformOutcome",
    "read_offplatform_model",
    "read_score_rows",
    "read_turnover",
    "offplatform_decision_inputs",
]

TURNOVER_SIGNAL = "revenue_3m"
"""The signal whose value is the ERP-reported trailing-three-month revenue (fen)."""

SIGNAL_COLUMNS = ("merchant_id", "isv_id", "signal", "value")
"""The signals file's columns, exactly (the node's signal release writes them)."""

SCORE_COLUMNS = ("merchant_id", "isv_id", "g")

MAX_REVENUE_3M = 10**12
"""Largest ``revenue_3m`` accepted: 10¹² fen (10 bn yuan in three months) — beyond any
small merchant, and it keeps ``base × h`` of the line rule inside int64."""

DIRECT_SPEC = "pd-erp-only"
CALIBRATED_SPEC = "pd-erp"
_LABEL = "default_12m"
_INT = re.compile(r"[0-9]+")




@dataclass(frozen=True, slots=True)
class OffPlatformModel:
    """The model behind an off-platform scores file, read from its training job's directory.

    Attributes
    ----------
    spec : str
        ``pd-erp-only`` or ``pd-erp``.
    job_id : str
        The training job.
    model_id : str
        ``<spec>:<job_id>@<first 16 hex of SHA-256(model.npz)>``: what decisions record.
    calibrated : bool
        ``True`` when ``g`` goes through the calibration (required for ``pd-erp``).
    categories : tuple[str, ...]
        The consent categories the model reads (the consent gate checks these).
    """

    spec: str
    job_id: str
    model_id: str
    calibrated: bool
    categories: tuple[str, ...]

    @property
    def recorded_as(self) -> str:
        """The id a decision's ``models.g_only`` holds (``+calibration`` when calibrated)."""
        return f"{self.model_id}+calibration" if self.calibrated else self.model_id


def read_offplatform_model(model_dir: Path, *, calibrate: bool) -> OffPlatformModel:
    """The off-platform model of a training job's output directory (``lineage.json``, model).

    Raises
    ------
    OffPlatformInputError
        ``BAD_MODEL`` (no lineage or model file), ``UNKNOWN_SPEC`` (a spec other than
        ``pd-erp-only`` / ``pd-erp``, or a label other than ``default_12m``),
        ``CALIBRATION_REQUIRED`` (``pd-erp`` without ``calibrate``: its ``g`` is a score,
        not a PD).
    """
    lineage_file, model_file = model_dir / "lineage.json", model_dir / "model.npz"
    if not lineage_file.is_file() or not model_file.is_file():
        raise OffPlatformInputError(
            f"{model_dir} is not a training job's output (needs lineage.json and model.npz)",
            code="BAD_MODEL",
        )
    try:
        lineage = json.loads(lineage_file.read_text("utf-8"))
        spec = str(lineage["spec"]["spec"])
        label = str(lineage["spec"]["label"])
        job_id = str(lineage["job_id"])
        categories = tuple(c for c in str(lineage["spec"]["categories"]).split(",") if c)
        if not categories:
            raise ValueError("the spec names no consent categories")
    except (ValueError, KeyError, TypeError) as exc:
        raise OffPlatformInputError(f"{lineage_file} is not a lineage: {exc}",
                                    code="BAD_MODEL") from exc
    if spec not in (DIRECT_SPEC, CALIBRATED_SPEC) or label != _LABEL:
        raise OffPlatformInputError(
            f"off-platform lines take a {DIRECT_SPEC} model (or {CALIBRATED_SPEC} with "
            f"--off-platform-calibrate), trained on {_LABEL}; {model_dir} holds spec "
            f"{spec!r} with label {label!r}",
            code="UNKNOWN_SPEC",
        )
    if spec == CALIBRATED_SPEC and not calibrate:
        raise OffPlatformInputError(
            f"{CALIBRATED_SPEC}'s g is a score, not a PD: pass --off-platform-calibrate to map "
            "it to a PD on the platform's labels, or score with a pd-erp-only model",
            code="CALIBRATION_REQUIRED",
        )
    digest = hashlib.sha256(model_file.read_bytes()).hexdigest()
    return OffPlatformModel(spec, job_id, f"{spec}:{job_id}@{digest[:16]}", calibrate, categories)


def _rows(path: Path, columns: tuple[str, ...], *, exact: bool, what: str
          ) -> tuple[list[dict[str, str]], str]:
    """The CSV's rows as strings (nothing coerced) and the file's SHA-256."""
    try:
        data = path.read_bytes()
        text = data.decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise OffPlatformInputError(f"cannot read {what} {path}: {exc}", code="BAD_FILE") from exc
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = tuple(reader.fieldnames or ())
    missing = [c for c in columns if c not in header]
    extra = [c for c in header if c not in columns]
    if missing or (exact and extra) or len(set(header)) != len(header):
        raise OffPlatformInputError(
            f"{what} {path} needs {'exactly ' if exact else ''}the columns {', '.join(columns)}"
            f"; it has {', '.join(header) or 'none'}",
            code="BAD_COLUMNS",
        )
    rows = []
    for row in reader:
        if None in row or any(v is None for v in row.values()):
            raise OffPlatformInputError(
                f"{what} {path} line {reader.line_num}: {len(header)} fields expected",
                code="BAD_ROW",
                line=reader.line_num,
            )
        rows.append({k: v.strip() for k, v in row.items()} | {"_line": str(reader.line_num)})
    return rows, hashlib.sha256(data).hexdigest()


def read_score_rows(path: Path) -> dict[tuple[str, str], float]:
    """``(merchant, isv) → g`` of a scoring job's ``scores.csv`` (``merchant_id,isv_id,g``).

    Raises
    ------
    OffPlatformInputError
        ``BAD_FILE``, ``BAD_COLUMNS``, ``BAD_ROW`` (an empty id, a ``g`` that is not a
        number in [0, 1]), ``DUPLICATE_SCORE`` (a pair twice); ``line`` is set.
    """
    rows, _ = _rows(path, SCORE_COLUMNS, exact=False, what="scores file")
    out: dict[tuple[str, str], float] = {}
    for r in rows:
        line = int(r["_line"])
        m, k = r["merchant_id"], r["isv_id"]
        try:
            g = float(r["g"])
        except ValueError:
            g = math.nan
        if not m or not k or not 0.0 <= g <= 1.0:
            raise OffPlatformInputError(
                f"scores file {path} line {line}: needs a merchant id, an ISV id and g in "
                f"[0, 1]; got {r['merchant_id']!r}, {r['isv_id']!r}, {r['g']!r}",
                code="BAD_ROW",
                line=line,
            )
        if (m, k) in out:
            raise OffPlatformInputError(
                f"scores file {path} line {line}: a second score for {m} at {k}",
                code="DUPLICATE_SCORE",
                line=line,
            )
        out[(m, k)] = g
    return out


def read_turnover(path: Path) -> tuple[dict[tuple[str, str], int], str]:
    """``(merchant, isv) → revenue_3m`` (fen) from a signals file, and the file's SHA-256.

    The file has exactly the columns ``merchant_id, isv_id, signal, value``; only rows
    with ``signal == "revenue_3m"`` are read: each value a non-negative integer (digits
    only: no sign, point or exponent) of at most :data:`MAX_REVENUE_3M` fen, once per pair.

    Raises
    ------
    OffPlatformInputError
        ``BAD_FILE``, ``BAD_COLUMNS``, ``BAD_ROW`` (an empty id or signal),
        ``NEGATIVE_TURNOVER``, ``BAD_TURNOVER`` (not an integer, or above the bound),
        ``DUPLICATE_TURNOVER``; ``line`` is set for row errors.
    """
    rows, digest = _rows(path, SIGNAL_COLUMNS, exact=True, what="signals file")
    out: dict[tuple[str, str], int] = {}
    for r in rows:
        line = int(r["_line"])
        m, k, signal, value = r["merchant_id"], r["isv_id"], r["signal"], r["value"]
        if not m or not k or not signal:
            raise OffPlatformInputError(
                f"signals file {path} line {line}: empty merchant_id, isv_id or signal",
                code="BAD_ROW",
                line=line,
            )
        if signal != TURNOVER_SIGNAL:
            continue
        if value.startswith("-") and _INT.fullmatch(value[1:]) and int(value[1:]) > 0:
            raise OffPlatformInputError(
                f"signals file {path} line {line}: {TURNOVER_SIGNAL} of {m} at {k} is "
                f"negative ({value})",
                code="NEGATIVE_TURNOVER",
                line=line,
            )
        if not _INT.fullmatch(value) or int(value) > MAX_REVENUE_3M:
            raise OffPlatformInputError(
                f"signals file {path} line {line}: {TURNOVER_SIGNAL} of {m} at {k} must be "
                f"whole fen from 0 to {MAX_REVENUE_3M}, got {value!r}",
                code="BAD_TURNOVER",
                line=line,
            )
        if (m, k) in out:
            raise OffPlatformInputError(
                f"signals file {path} line {line}: a second {TURNOVER_SIGNAL} for {m} at {k}",
                code="DUPLICATE_TURNOVER",
                line=line,
            )
        out[(m, k)] = int(value)
    return out, digest


@dataclass(frozen=True, slots=True)
class OffPlatformOutcome:
    """What the off-platform path decides from, and what it left out (counts).

    Attributes
    ----------
    merchants : list[MerchantScores]
        One per off-platform merchant in the scores file: with a PD and its revenue,
        or with no PD (``pd_with=None``: no line) and the reason in its extra inputs.
    on_platform_ignored : int
        Scores of merchants that have a platform row (not decided here).
    without_consent : int
        Off-platform scores no live consent covers (dropped by the gate).
    without_turnover : int
        Off-platform merchants with a consented score but no ``revenue_3m`` row from
        any of those ISVs (no line).
    calibration_size : int
        Platform merchants the calibration was fitted on (0 without calibration).
    """

    merchants: list[MerchantScores]
    on_platform_ignored: int
    without_consent: int
    without_turnover: int
    calibration_size: int


def _as_pd(g: np.ndarray) -> np.ndarray:
    """A ``pd-erp-only`` g is the PD itself."""
    return np.asarray(g, dtype=np.float64)


def _calibrator(g: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """``PD = σ(c0 + c1·logit g)`` fitted on labelled merchants' scores."""
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression().fit(logit(g)[:, None], y.astype(int))
    return lambda x: np.asarray(lr.predict_proba(logit(x)[:, None])[:, 1], dtype=np.float64)


def offplatform_decision_inputs(
    scores: Mapping[tuple[str, str], float],
    turnover: Mapping[tuple[str, str], int],
    *,
    platform_labels: Mapping[str, int],
    allowed: Mapping[tuple[str, str], str | None],
    model: OffPlatformModel,
    turnover_digest: str,
    min_calibration: int = 20,
) -> OffPlatformOutcome:
    """The :class:`MerchantScores` of every off-platform merchant in ``scores``.

    Parameters
    ----------
    scores : Mapping[tuple[str, str], float]
        ``(merchant, isv) → g`` (:func:`read_score_rows`).
    turnover : Mapping[tuple[str, str], int]
        ``(merchant, isv) → revenue_3m`` fen (:func:`read_turnover`).
    platform_labels : Mapping[str, int]
        Every merchant with a platform row → its default label (which merchants are
        *on* the platform; the labels are read only to calibrate).
    allowed : Mapping[tuple[str, str], str | None]
        ``(merchant, isv) → consent id`` covering ``credit_scoring`` now, or ``None``
        (:func:`gateway.credit.covering_consents` over the pairs of ``scores``).
    model : OffPlatformModel
    turnover_digest : str
        SHA-256 of the signals file (recorded with each decision).
    min_calibration : int, default 20
        Fewest consented platform merchants (both classes present) to calibrate on.

    Raises
    ------
    OffPlatformInputError
        ``CALIBRATION_UNAVAILABLE`` when ``model.calibrated`` and the calibration sample
        is too small or has one class only.
    """
    on_ignored = sum(1 for (m, _) in scores if m in platform_labels)
    to_pd: Callable[[np.ndarray], np.ndarray] = _as_pd
    cal_n = 0
    if model.calibrated:
        cal = [(g, platform_labels[m]) for (m, k), g in scores.items()
               if m in platform_labels and allowed.get((m, k))]
        y = np.asarray([lab for _, lab in cal], dtype=int)
        if len(cal) < min_calibration or len(set(y.tolist())) < 2:
            raise OffPlatformInputError(
                f"calibrating {model.spec} needs at least {min_calibration} consented scores "
                f"of platform merchants with both outcomes; the scores file has {len(cal)}",
                code="CALIBRATION_UNAVAILABLE",
            )
        to_pd = _calibrator(np.asarray([g for g, _ in cal]), y)
        cal_n = len(cal)
    per: dict[str, dict[str, float]] = {}
    dropped: dict[str, int] = {}
    for (m, k), g in sorted(scores.items()):
        if m in platform_labels:
            continue
        if allowed.get((m, k)):
            per.setdefault(m, {})[k] = g
        else:
            dropped[m] = dropped.get(m, 0) + 1
    ids = sorted(per)
    flat = [(m, k, g) for m in ids for k, g in sorted(per[m].items())]
    pds = to_pd(np.asarray([g for _, _, g in flat], dtype=np.float64)) if flat else np.empty(0)
    isv_pd: dict[str, dict[str, float]] = {}
    for (m, k, _), p in zip(flat, pds, strict=True):
        isv_pd.setdefault(m, {})[k] = float(p)
    out: list[MerchantScores] = []
    no_turnover = 0
    for m in sorted(set(per) | set(dropped)):
        base = {"spec": model.spec, "turnover_sha256": turnover_digest,
                "turnover_signal": TURNOVER_SIGNAL}
        pd_k = isv_pd.get(m, {})
        revenue = {k: turnover[(m, k)] for k in pd_k if (m, k) in turnover}
        if not pd_k or not revenue:
            reason = "no_consented_score" if not pd_k else "no_turnover"
            no_turnover += bool(pd_k)
            out.append(MerchantScores(merchant_id=m, sales_3m=0, pd_f=None, pd_with=None,
                                      extra_inputs={"off_platform": {**base, "no_line": reason}}))
            continue
        # Only ISVs that reported the revenue too: each ISV's line reads the same base.
        used = {k: p for k, p in pd_k.items() if k in revenue}
        p = float(sigmoid(np.mean(logit(np.asarray(list(used.values()))))))
        source = min(revenue, key=lambda k: (revenue[k], k))
        out.append(
            MerchantScores(
                merchant_id=m,
                sales_3m=revenue[source],
                pd_f=None,
                pd_with=p if len(used) > 1 else used[next(iter(used))],
                isv_pd=used,
                consent_ids={k: str(allowed[(m, k)]) for k in used},
                extra_inputs={"off_platform": {**base, "turnover_isv": source,
                                               "turnover_by_isv": dict(sorted(revenue.items()))}},
            )
        )
    return OffPlatformOutcome(
        merchants=out,
        on_platform_ignored=on_ignored,
        without_consent=sum(dropped.values()),
        without_turnover=no_turnover,
        calibration_size=cal_n,
    )
