"""The ISV node's privacy policy: the node's own settings, never taken from a message.

The policy lives in the ``[policy]`` table of the ISV's node TOML file, whose
path is the node-config key ``node-policy`` (simulation: the same key in each
``sim-nodes`` entry). Without one the node uses :data:`SAFE_DEFAULTS`, never
the values a ServerApp sends. A request outside the policy is refused with a
code (:class:`~federation.node.Refusal`) and the refusal is signed into the
node's receipt.

Keys (kebab-case, all optional)::

    [policy]
    min-cohort = 10               # merchants per training round / sketch
    min-score-cohort = 10         # merchants per scoring or evaluation request
    max-epsilon-per-job = 3.0     # a job's ε at this node (all its releases)
    max-epsilon-lifetime = 10.0   # a merchant's ε over every job at this node
    min-noise-multiplier = 0.5    # DP-SGD noise floor (σ / clipping norm)
    delta = 1e-5                  # the largest δ a job may ask for
    allow-no-dp = false           # may a job train without DP-SGD?
    allowed-specs = ["pd-erp", "pd-erp-only"]
    allowed-archs = ["logistic", "mlp"]
    allowed-categories = [...]    # consent categories the node serves (default: all ERP ones)
    allowed-metrics = ["num-examples", "epsilon", "delta", "auc", "auc-std", "ks", "brier"]
    max-bins = 20                 # bin edges per feature an encoder may carry, plus one
    sketch-noise-multiplier = 8.0 # Gaussian noise of a DP sketch, per unit of L2 sensitivity
    eval-noise-multiplier = 4.0   # floor for the Gaussian noise on evaluation metrics
    secagg-max-clipping-range = 8.0  # widest SecAgg+ clipping range (±) a setup may ask for
    approvals = "approvals.sqlite" # the register of merchant approvals (relative: state dir)
    require-approval = true       # every manifest entry must match an approval the node holds
    test-seed = -1                # tests only: a node-local seed (never from a message)
    allowed-signals = ["erp-changes", "revenue-3m"]  # ERP signal releases (query.signals)
    signal-change-step = 0.01     # grid of released ratio changes (revenue, shipping, orders)
    signal-max-change = 2.0       # ratio changes clipped to [-1, this]
    signal-margin-step-pt = 0.5   # grid of the released gross-margin change, in points
    signal-max-margin-pt = 50.0   # margin change clipped to ±this
    signal-revenue-step = 100000  # revenue-3m rounded down to this many fen (1,000 yuan)

Signal releases (:mod:`federation.signals`) also need ``min-score-cohort`` released
merchants. Both kinds are allowed by default: each still needs a manifest for its
own purpose (``post_loan_monitoring`` / ``credit_scoring``) whose every entry
matches an approval the node holds, and each releases only coarse values (changes
on a grid, a floored turnover), never an ERP row; an ISV that will not serve one
removes it from ``allowed-signals``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .._errors import FederationError
from ..schema import ERP_CATEGORIES
from ..signals import SIGNAL_KINDS, SignalRules

__all__ = ["NodePolicy", "SAFE_DEFAULTS", "load_policy", "POLICY_TABLE"]

POLICY_TABLE = "policy"

# Every consent category that covers an ERP field (``tax`` covers none yet).
_ERP_CATEGORIES = tuple(c for c, names in ERP_CATEGORIES.items() if names)
_DEFAULT_METRICS = ("num-examples", "epsilon", "delta", "auc", "auc-std", "ks", "brier")


@dataclass(frozen=True, slots=True, kw_only=True)
class NodePolicy:
    """What this node will do, whatever a message asks (see the module docstring).

    Parameters
    ----------
    min_cohort : int, default 10
    min_score_cohort : int, default 10
    max_epsilon_per_job : float, default 3.0
    max_epsilon_lifetime : float, default 10.0
    min_noise_multiplier : float, default 0.5
    delta : float, default 1e-5
    allow_no_dp : bool, default False
    allowed_specs, allowed_archs, allowed_categories, allowed_metrics : tuple[str, ...]
    max_bins : int, default 20
    sketch_noise_multiplier : float, default 8.0
    eval_noise_multiplier : float, default 4.0
    secagg_max_clipping_range : float, default 8.0
        The widest ``±`` range a SecAgg+ setup may ask the node to clip its weights to.
    approvals : str, default "approvals.sqlite"
    require_approval : bool, default True
    test_seed : int, default -1
        ``>= 0`` seeds the node's noise and sampling (tests only); ``-1`` uses the
        operating system's CSPRNG for every draw.
    allowed_signals : tuple[str, ...], default both kinds
    signal_change_step, signal_max_change, signal_margin_step_pt, signal_max_margin_pt :
        float, default 0.01, 2.0, 0.5, 50.0
    signal_revenue_step : int, default 100000
        The coarsening of every ERP signal release (:meth:`signal_rules`).
    """

    min_cohort: int = 10
    min_score_cohort: int = 10
    max_epsilon_per_job: float = 3.0
    max_epsilon_lifetime: float = 10.0
    min_noise_multiplier: float = 0.5
    delta: float = 1e-5
    allow_no_dp: bool = False
    allowed_specs: tuple[str, ...] = ("pd-erp", "pd-erp-only")
    allowed_archs: tuple[str, ...] = ("logistic", "mlp")
    allowed_categories: tuple[str, ...] = _ERP_CATEGORIES
    allowed_metrics: tuple[str, ...] = _DEFAULT_METRICS
    max_bins: int = 20
    sketch_noise_multiplier: float = 8.0
    eval_noise_multiplier: float = 4.0
    secagg_max_clipping_range: float = 8.0
    approvals: str = "approvals.sqlite"
    require_approval: bool = True
    test_seed: int = field(default=-1, repr=False)
    allowed_signals: tuple[str, ...] = SIGNAL_KINDS
    signal_change_step: float = 0.01
    signal_max_change: float = 2.0
    signal_margin_step_pt: float = 0.5
    signal_max_margin_pt: float = 50.0
    signal_revenue_step: int = 100_000

    def signal_rules(self) -> SignalRules:
        """The coarsening of ERP signal releases (:class:`federation.signals.SignalRules`)."""
        return SignalRules(
            change_step=self.signal_change_step,
            max_change=self.signal_max_change,
            margin_step_pt=self.signal_margin_step_pt,
            max_margin_pt=self.signal_max_margin_pt,
            revenue_step=self.signal_revenue_step,
            min_cohort=self.min_score_cohort,
        )

    def __post_init__(self) -> None:
        for name in ("min_cohort", "min_score_cohort", "max_bins"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"policy {name} must be >= 1")
        for name in (
            "max_epsilon_per_job",
            "max_epsilon_lifetime",
            "sketch_noise_multiplier",
            "eval_noise_multiplier",
            "secagg_max_clipping_range",
        ):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"policy {name} must be > 0")
        if self.max_epsilon_lifetime < self.max_epsilon_per_job:
            raise ValueError("policy max_epsilon_lifetime must be >= max_epsilon_per_job")
        if not 0 < self.delta < 1:
            raise ValueError("policy delta must be in (0, 1)")
        if self.min_noise_multiplier < 0:
            raise ValueError("policy min_noise_multiplier must be >= 0")
        unknown = [k for k in self.allowed_signals if k not in SIGNAL_KINDS]
        if unknown:
            raise ValueError(f"policy allowed_signals names unknown kinds {unknown}")
        self.signal_rules()  # steps positive, clips on their grids (ValueError otherwise)

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any]) -> NodePolicy:
        """Build from a ``[policy]`` table (kebab-case keys); unknown keys are refused."""
        known = {f.name.replace("_", "-"): f for f in fields(cls)}
        unknown = sorted(set(table) - set(known))
        if unknown:
            raise ValueError(f"unknown node policy key(s): {', '.join(unknown)}")
        kw: dict[str, Any] = {}
        for key, value in table.items():
            f = known[key]
            default = f.default
            if isinstance(default, tuple):
                strings = isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
                if not strings:
                    raise ValueError(f"node policy {key} must be a list of strings")
                kw[f.name] = tuple(value)
            elif isinstance(default, bool):
                if not isinstance(value, bool):
                    raise ValueError(f"node policy {key} must be true or false")
                kw[f.name] = value
            elif isinstance(default, int):
                if not isinstance(value, int) or isinstance(value, bool):
                    raise ValueError(f"node policy {key} must be an integer")
                kw[f.name] = value
            elif isinstance(default, float):
                if not isinstance(value, int | float) or isinstance(value, bool):
                    raise ValueError(f"node policy {key} must be a number")
                kw[f.name] = float(value)
            else:
                kw[f.name] = str(value)
        return cls(**kw)


SAFE_DEFAULTS = NodePolicy()
"""The policy of a node that names no ``node-policy`` file."""


def load_policy(path: Path | None) -> NodePolicy:
    """The ``[policy]`` table of the node TOML at ``path``; :data:`SAFE_DEFAULTS` for ``None``.

    Raises
    ------
    FederationError
        ``BAD_POLICY`` when the file cannot be read or holds an invalid policy.
    """
    if path is None:
        return SAFE_DEFAULTS
    try:
        doc = tomllib.loads(Path(path).read_text("utf-8"))
        table = doc.get(POLICY_TABLE, {})
        if not isinstance(table, dict):
            raise ValueError("[policy] must be a table")
        return NodePolicy.from_mapping(table)
    except (OSError, ValueError, tomllib.TOMLDecodeError) as exc:
        raise FederationError(f"node policy {path}: {exc}", code="BAD_POLICY") from exc
