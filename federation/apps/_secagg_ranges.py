"""SecAgg+ sizing: the quantisation ranges for a round and the node's check of a setup."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flwr.common.secure_aggregation.secaggplus_constants import Key, Stage

DEFAULT_CLIPPING_RANGE = 8.0
"""Bound on each weight a node clips to before quantising (Flower's default; see sizing)."""
MODULUS_RANGE = 2**32
"""The largest modulus Flower's SecAgg+ takes (its masks are drawn below it)."""
_MAX_QUANTIZATION = 2**30  # Flower's stochastic rounding casts to int32


@dataclass(frozen=True, slots=True, kw_only=True)
class SecAggRanges:
    """SecAgg+'s quantisation: clip to ``±clipping_range``, ``quantization_range`` levels, mod."""

    clipping_range: float
    quantization_range: int
    modulus_range: int


def secagg_ranges(
    n_nodes: int,
    *,
    clipping_range: float = DEFAULT_CLIPPING_RANGE,
    modulus_range: int = MODULUS_RANGE,
) -> SecAggRanges:
    """Ranges for ``n_nodes``: the finest quantisation whose sum cannot wrap the modulus.

    Each node adds at most ``quantization_range`` per coordinate (its weight factor,
    at most 1, likewise), so ``n_nodes · quantization_range < modulus_range`` keeps
    the unmasked sum exact; the levels are the largest power of two that does.

    Parameters
    ----------
    n_nodes : int
        Nodes that train in a round (>= 2).
    clipping_range : float, default DEFAULT_CLIPPING_RANGE
    modulus_range : int, default MODULUS_RANGE

    Raises
    ------
    ValueError
        ``n_nodes`` < 2, a non-positive clipping range, or a modulus too small.
    """
    if n_nodes < 2:
        raise ValueError("n_nodes must be >= 2 for SecAgg+")
    if not clipping_range > 0:
        raise ValueError("clipping_range must be > 0")
    levels = modulus_range // (n_nodes + 1)
    if levels < 2:
        raise ValueError("modulus_range is too small for n_nodes")
    q = min(1 << (levels.bit_length() - 1), _MAX_QUANTIZATION)
    return SecAggRanges(
        clipping_range=float(clipping_range), quantization_range=q, modulus_range=modulus_range
    )


def secagg_setup_problem(configs: Mapping[str, Any], max_clipping_range: float) -> str | None:
    """Why the node refuses a SecAgg+ setup (a rule name), or ``None`` to take part.

    The node clips to the range it is given; its policy caps that range
    (``secagg-max-clipping-range``, passed as ``max_clipping_range``), and the
    quantised sum of every sampled node must fit the modulus, else the unmasked
    aggregate would wrap.
    """
    if configs.get(Key.STAGE) != Stage.SETUP:
        return None
    clip = float(configs[Key.CLIPPING_RANGE])  # type: ignore[arg-type]
    levels = int(configs[Key.TARGET_RANGE])  # type: ignore[call-overload]
    modulus = int(configs[Key.MOD_RANGE])  # type: ignore[call-overload]
    nodes = int(configs[Key.SAMPLE_NUMBER])  # type: ignore[call-overload]
    if not 0 < clip <= max_clipping_range:
        return "SECAGG_CLIPPING_RANGE"
    if float(configs[Key.MAX_WEIGHT]) <= 0 or nodes * levels >= modulus:  # type: ignore[arg-type]
        return "SECAGG_RANGES"
    return None
