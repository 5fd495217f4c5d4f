"""Model specs: the built-in ones (``pd-erp``, ``pd-erp-only``, ``fake-trade``), user TOML files,
and their run-config form.

A spec says which ERP feature categories a job reads, which label it learns,
the architecture, the federated schedule and the DP budget. The ServerApp
reads the spec once from ``context.run_config`` (kebab-case keys, see
:func:`spec_from_run_config`) and passes the values to constructors.

A user spec is a TOML file (:func:`load_spec_file`; examples in
``federation/specs/*.toml``)::

    name = "credit-erp"
    label = "default"                 # the label a training manifest carries
    categories = ["turnover", "cost_of_goods", "cash_and_debt"]
    optional_fields = ["net_profit"]  # the schema's signed extras (net_profit, cash_flow)

    [declared.net_worth]              # a field of the ISVs' own: every node must declare
    unit = "CNY_fen"                  # exactly this in its mapping (FIELD_MISMATCH otherwise)
    category = "cash_and_debt"
    signed = true
    integer = true

    [model]
    family = "logistic"               # or "mlp"
    size = 32                         # MLP hidden units (ignored for logistic)

    [preprocessing]
    bins = 10                         # quantile bins per field (+ one missing-value bin)
    scaling = "bins"                  # or "standardise": one z value per field (rounded to
                                      # `bins` levels) + a missing indicator, mean and scale
                                      # read off the nodes' DP sketches (no extra ε)

    [training]
    rounds = 10
    local_epochs = 2
    lr = 0.05
    batch_size = 64
    strategy = "fedavg"               # or "fedprox" (then proximal_mu > 0)
    proximal_mu = 0.0

    [dp]                              # leave the table out to train without DP
    epsilon = 3.0
    delta = 1e-5
    max_grad_norm = 1.0
    lifetime_epsilon = 10.0

Extra fields (optional schema fields first, then declared ones) follow the
core fields the categories cover, each only when its category is consented;
they travel as the run-config value ``extra-fields`` (canonical JSON,
:func:`federation.schema.fields_to_json`), which each node compares with its
own mapping before it reads a row.

Run-config values (``fedgate fl run`` options) override the file's. A
finished job's lineage keeps every value, so scoring needs no file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ._errors import DataError, SpecError
from .schema import (
    ERP_CATEGORIES,
    FieldSpec,
    declare_field,
    extra_field,
    fields_from_json,
    fields_to_json,
)

__all__ = [
    "DPBudget",
    "ModelSpec",
    "SPECS",
    "get_spec",
    "spec_from_run_config",
    "spec_to_run_config",
    "load_spec_file",
    "SPEC_FILE_KEY",
    "EXTRA_FIELDS_KEY",
    "with_extra_fields",
    "DEFAULT_LIFETIME_EPSILON",
]

EXTRA_FIELDS_KEY = "extra-fields"
"""Run-config key: the job's extra fields as canonical JSON (empty list: none)."""

SPEC_FILE_KEY = "spec-file"
"""Run-config key: a user spec TOML file (:func:`load_spec_file`) instead of a named spec."""

DEFAULT_DELTA = 1e-5
DEFAULT_MAX_GRAD_NORM = 1.0
DEFAULT_LIFETIME_EPSILON = 10.0
"""A merchant's lifetime ε across all jobs at one node (basic composition across jobs)."""

_ARCHS = ("logistic", "mlp")
_STRATEGIES = ("fedavg", "fedprox")
_PURPOSES = ("model_training",)
_SCALINGS = ("bins", "standardise")


@dataclass(frozen=True, slots=True, kw_only=True)
class DPBudget:
    """A DP-SGD budget for one job at one node.

    Parameters
    ----------
    epsilon : float
        The job's total ε over all its rounds (must be > 0).
    delta : float, default 1e-5
    max_grad_norm : float, default 1.0
        Per-sample gradient clipping bound.
    lifetime_epsilon : float, default 10.0
        The per-merchant lifetime budget this job must fit into.
    """

    epsilon: float
    delta: float = DEFAULT_DELTA
    max_grad_norm: float = DEFAULT_MAX_GRAD_NORM
    lifetime_epsilon: float = DEFAULT_LIFETIME_EPSILON

    def __post_init__(self) -> None:
        if not self.epsilon > 0:
            raise SpecError(f"DP epsilon must be > 0, got {self.epsilon}")
        if not 0 < self.delta < 1:
            raise SpecError(f"DP delta must be in (0, 1), got {self.delta}")
        if not self.max_grad_norm > 0:
            raise SpecError(f"DP max_grad_norm must be > 0, got {self.max_grad_norm}")
        if self.lifetime_epsilon < self.epsilon:
            raise SpecError("lifetime_epsilon must be at least the job's epsilon")


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSpec:
    """A named federated model: features, label, architecture, schedule and DP budget.

    Parameters
    ----------
    name : str
    categories : tuple[str, ...]
        Consent data categories (ERP field groups) the job reads.
    label : str
        The label the platform puts into the manifest entries.
    arch : str, default "logistic"
        ``"logistic"`` or ``"mlp"``.
    hidden : int, default 32
        MLP hidden width (ignored for logistic).
    rounds : int, default 5
    local_epochs : int, default 1
    lr : float, default 0.05
    batch_size : int, default 64
    strategy : str, default "fedavg"
        ``"fedavg"`` or ``"fedprox"``.
    proximal_mu : float, default 0.0
        FedProx's μ; must be > 0 with ``strategy="fedprox"``.
    dp : DPBudget | None, default None
        ``None`` trains without differential privacy.
    n_bins : int, default 10
        Quantile bins per feature, edges from federated sketches.
    purpose : str, default "model_training"
        The consent purpose a training manifest names.
    scaling : str, default "bins"
        ``"bins"`` (quantile bins + missing bin) or ``"standardise"``
        (:mod:`federation.standardise`; ``n_bins`` is then the number of levels).
    extras : tuple[FieldSpec, ...], default ()
        Extra feature fields beyond the core ERP fields (optional schema fields and
        ISV-declared ones), used where their category is consented.
    """

    name: str
    categories: tuple[str, ...]
    label: str
    arch: str = "logistic"
    hidden: int = 32
    rounds: int = 5
    local_epochs: int = 1
    lr: float = 0.05
    batch_size: int = 64
    strategy: str = "fedavg"
    proximal_mu: float = 0.0
    dp: DPBudget | None = field(default=None)
    n_bins: int = 10
    purpose: str = "model_training"
    scaling: str = "bins"
    extras: tuple[FieldSpec, ...] = ()

    def __post_init__(self) -> None:
        if self.scaling not in _SCALINGS:
            raise SpecError(
                f"spec {self.name!r}: scaling must be one of {_SCALINGS}, got {self.scaling!r}"
            )
        names = [f.name for f in self.extras]
        if len(set(names)) != len(names):
            raise SpecError(f"spec {self.name!r}: extra fields named twice: {names}")
        if not self.categories:
            raise SpecError(f"spec {self.name!r}: categories must not be empty")
        if self.arch not in _ARCHS:
            raise SpecError(f"spec {self.name!r}: arch must be one of {_ARCHS}, got {self.arch!r}")
        if self.strategy not in _STRATEGIES:
            raise SpecError(
                f"spec {self.name!r}: strategy must be one of {_STRATEGIES}, got {self.strategy!r}"
            )
        if self.strategy == "fedprox" and not self.proximal_mu > 0:
            raise SpecError(f"spec {self.name!r}: fedprox needs proximal_mu > 0")
        if self.purpose not in _PURPOSES:
            raise SpecError(f"spec {self.name!r}: purpose must be one of {_PURPOSES}")
        for name, value, low in (
            ("rounds", self.rounds, 1),
            ("local_epochs", self.local_epochs, 1),
            ("batch_size", self.batch_size, 1),
            ("n_bins", self.n_bins, 2),
            ("hidden", self.hidden, 1),
        ):
            if value < low:
                raise SpecError(f"spec {self.name!r}: {name} must be >= {low}, got {value}")
        if not self.lr > 0:
            raise SpecError(f"spec {self.name!r}: lr must be > 0, got {self.lr}")


# Every consent category that covers an ERP field (``tax`` covers none yet), in schema order.
_ALL_FINANCIALS = tuple(c for c, fields in ERP_CATEGORIES.items() if fields)

SPECS: Mapping[str, ModelSpec] = MappingProxyType(
    {
        s.name: s
        for s in (
            ModelSpec(
                name="pd-erp",
                categories=_ALL_FINANCIALS,
                label="default_12m",
                arch="logistic",
                rounds=5,
                dp=DPBudget(epsilon=3.0),
            ),
            ModelSpec(
                name="pd-erp-only",
                categories=_ALL_FINANCIALS,
                label="default_12m",
                arch="mlp",
                rounds=8,
                strategy="fedprox",
                proximal_mu=0.01,
                dp=DPBudget(epsilon=3.0),
            ),
            ModelSpec(
                name="fake-trade",
                categories=("orders_and_shipping", "logistics_cost", "turnover"),
                label="fake_trade",
                arch="mlp",
                rounds=5,
                dp=None,
            ),
        )
    }
)
"""The named specs; jobs may override schedule and budget through run config."""


def get_spec(name: str) -> ModelSpec:
    """The named spec, or :class:`SpecError` (code ``UNKNOWN_SPEC``)."""
    try:
        return SPECS[name]
    except KeyError:
        raise SpecError(
            f"unknown model spec {name!r}; known: {', '.join(sorted(SPECS))}", code="UNKNOWN_SPEC"
        ) from None


def spec_to_run_config(spec: ModelSpec) -> dict[str, Any]:
    """The spec as flat kebab-case run-config values (what ``flwr run --run-config`` takes).

    ``dp-epsilon = 0.0`` stands for "no DP" because run config has no null.
    """
    dp = spec.dp
    return {
        "spec": spec.name,
        "categories": ",".join(spec.categories),
        "label": spec.label,
        "arch": spec.arch,
        "hidden": spec.hidden,
        "rounds": spec.rounds,
        "local-epochs": spec.local_epochs,
        "lr": spec.lr,
        "batch-size": spec.batch_size,
        "strategy": spec.strategy,
        "proximal-mu": spec.proximal_mu,
        "n-bins": spec.n_bins,
        "scaling": spec.scaling,
        "purpose": spec.purpose,
        "dp-epsilon": dp.epsilon if dp else 0.0,
        "dp-delta": dp.delta if dp else DEFAULT_DELTA,
        "dp-max-grad-norm": dp.max_grad_norm if dp else DEFAULT_MAX_GRAD_NORM,
        "dp-lifetime-epsilon": dp.lifetime_epsilon if dp else DEFAULT_LIFETIME_EPSILON,
        EXTRA_FIELDS_KEY: fields_to_json(spec.extras),
    }


_SPEC_TABLES: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "": {"name": "name", "label": "label", "categories": "categories", "purpose": "purpose",
             "optional_fields": "optional_fields"},
        "model": {"family": "arch", "size": "hidden"},
        "preprocessing": {"bins": "n_bins", "scaling": "scaling"},
        "training": {
            "rounds": "rounds",
            "local_epochs": "local_epochs",
            "lr": "lr",
            "batch_size": "batch_size",
            "strategy": "strategy",
            "proximal_mu": "proximal_mu",
        },
    }
)
_DP_KEYS = ("epsilon", "delta", "max_grad_norm", "lifetime_epsilon")


def load_spec_file(path: str | Path) -> ModelSpec:
    """Read a user model spec from TOML (layout in the module docstring).

    Raises
    ------
    SpecError
        ``BAD_SPEC`` for an unreadable file, an unknown key or table, a wrong type or
        value; the message names the key.
    """
    import tomllib

    try:
        data = tomllib.loads(Path(path).read_text("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SpecError(f"cannot read spec file {path}: {exc}") from exc
    kwargs: dict[str, Any] = {}
    tables = set(_SPEC_TABLES) - {""} | {"dp", "declared"}
    for key, value in data.items():
        if isinstance(value, dict):
            if key not in tables:
                raise SpecError(f"{path}: unknown table [{key}]; expected {sorted(tables)}")
            continue
        if key not in _SPEC_TABLES[""]:
            raise SpecError(f"{path}: unknown key {key!r}; expected {sorted(_SPEC_TABLES[''])}")
        kwargs[_SPEC_TABLES[""][key]] = value
    for table, keys in _SPEC_TABLES.items():
        if not table:
            continue
        for key, value in data.get(table, {}).items():
            if key not in keys:
                raise SpecError(f"{path}: unknown key [{table}] {key}; expected {sorted(keys)}")
            kwargs[keys[key]] = value
    dp = data.get("dp")
    if dp is not None:
        unknown = sorted(set(dp) - set(_DP_KEYS))
        if unknown or "epsilon" not in dp:
            raise SpecError(f"{path}: [dp] needs epsilon and takes only {list(_DP_KEYS)}")
    missing = [k for k in ("name", "label", "categories") if k not in kwargs]
    if missing:
        raise SpecError(f"{path}: missing {missing}")
    if not isinstance(kwargs["categories"], list) or not all(
        isinstance(c, str) for c in kwargs["categories"]
    ):
        raise SpecError(f"{path}: categories must be a list of consent category codes")
    kwargs["categories"] = tuple(kwargs["categories"])
    kwargs["extras"] = _extras(path, kwargs.pop("optional_fields", []), data.get("declared", {}))
    types = {"rounds": int, "local_epochs": int, "batch_size": int, "n_bins": int, "hidden": int,
             "lr": float, "proximal_mu": float}
    for key, kind in types.items():
        if key in kwargs:
            value = kwargs[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or (
                kind is int and not isinstance(value, int)
            ):
                what = "an integer" if kind is int else "a number"
                raise SpecError(f"{path}: {key} must be {what}")
            kwargs[key] = kind(value)
    for key in ("name", "label", "arch", "strategy", "purpose", "scaling"):
        if key in kwargs and not isinstance(kwargs[key], str):
            raise SpecError(f"{path}: {key} must be a string")
    try:
        budget = (
            DPBudget(**{k: float(v) for k, v in dp.items()}) if dp is not None else None
        )
        spec = ModelSpec(dp=budget, **kwargs)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{path}: {exc}") from exc
    from .schema import erp_fields_for

    try:
        erp_fields_for(spec.categories)
    except Exception as exc:  # DataError: an unknown category code
        raise SpecError(f"{path}: {exc}") from exc
    return spec


def _extras(path: str | Path, optional: Any, declared: Any) -> tuple[FieldSpec, ...]:
    """A spec file's ``optional_fields`` list and ``[declared.<name>]`` tables as field specs."""
    if not isinstance(optional, list) or not all(isinstance(n, str) for n in optional):
        raise SpecError(f"{path}: optional_fields must be a list of field names")
    out: list[FieldSpec] = []
    try:
        out += [extra_field(n) for n in optional]
        for name, decl in declared.items():
            if not isinstance(decl, dict) or set(decl) - {"unit", "category", "signed",
                                                            "integer"}:
                raise SpecError(f"{path}: [declared.{name}] takes unit, category, signed, "
                                "integer")
            out.append(declare_field(name, **decl))
    except (DataError, TypeError) as exc:
        raise SpecError(f"{path}: {exc}") from exc
    return tuple(out)


_LATER_KEYS = (EXTRA_FIELDS_KEY, "scaling")  # absent from lineages written before them


def _base_spec(run_config: Mapping[str, Any]) -> ModelSpec:
    """The spec a run config starts from: its spec file, a named spec, or a complete record."""
    spec_file = run_config.get(SPEC_FILE_KEY)
    if spec_file:
        return load_spec_file(str(spec_file))
    name = str(run_config.get("spec", ""))
    if name in SPECS:
        return SPECS[name]
    # A finished job's lineage (or a node's job record) carries every value: no file needed.
    template = spec_to_run_config(SPECS["pd-erp"])
    if name and all(k in run_config for k in template if k not in _LATER_KEYS):
        categories = tuple(c for c in str(run_config["categories"]).split(",") if c)
        return ModelSpec(name=name, categories=categories, label=str(run_config["label"]))
    return get_spec(name)  # raises UNKNOWN_SPEC


def spec_from_run_config(run_config: Mapping[str, Any]) -> ModelSpec:
    """Build the spec of ``run_config`` (``spec-file`` or ``spec``) with kebab-case overrides.

    Raises
    ------
    SpecError
        Unknown spec name (``UNKNOWN_SPEC``) or an invalid value (``BAD_SPEC``).
    """
    base = _base_spec(run_config)
    merged = {**spec_to_run_config(base), **dict(run_config)}
    try:
        eps = float(merged["dp-epsilon"])
        dp = (
            DPBudget(
                epsilon=eps,
                delta=float(merged["dp-delta"]),
                max_grad_norm=float(merged["dp-max-grad-norm"]),
                lifetime_epsilon=float(merged["dp-lifetime-epsilon"]),
            )
            if eps > 0
            else None
        )
        return replace(
            base,
            categories=tuple(c for c in str(merged["categories"]).split(",") if c),
            label=str(merged["label"]),
            arch=str(merged["arch"]),
            hidden=int(merged["hidden"]),
            rounds=int(merged["rounds"]),
            local_epochs=int(merged["local-epochs"]),
            lr=float(merged["lr"]),
            batch_size=int(merged["batch-size"]),
            strategy=str(merged["strategy"]),
            proximal_mu=float(merged["proximal-mu"]),
            n_bins=int(merged["n-bins"]),
            scaling=str(merged.get("scaling", "bins")),
            purpose=str(merged["purpose"]),
            dp=dp,
            extras=fields_from_json(str(merged.get(EXTRA_FIELDS_KEY, "[]"))),
        )
    except DataError as exc:
        raise SpecError(f"bad run config for spec {base.name!r}: {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise SpecError(f"bad run config for spec {base.name!r}: {exc}") from exc


def with_extra_fields(run_config: Mapping[str, Any]) -> dict[str, Any]:
    """``run_config`` with its spec's ``extra-fields`` spelled out (what each node compares).

    A run config that names a spec file carries only its path; the nodes never read
    a file the platform names, so the job's extra fields travel as a value.
    """
    out = dict(run_config)
    if EXTRA_FIELDS_KEY not in out:
        out[EXTRA_FIELDS_KEY] = fields_to_json(spec_from_run_config(out).extras)
    return out
