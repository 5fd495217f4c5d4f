"""SecAgg+ ranges: sized for the cohort by the server, capped by the node's own policy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import ConfigRecord, RecordDict
from flwr.common.secure_aggregation.quantization import dequantize, quantize
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage

from federation.apps._keys import ERR
from federation.apps._secagg import (
    DEFAULT_CLIPPING_RANGE,
    secagg_ranges,
    secagg_setup_problem,
)
from federation.node import SAFE_DEFAULTS, NodePolicy

from ..federation._flworld import World, incoming
from ._platform import own_node, send


def _setup(*, clip: float, levels: int, modulus: int = 2**32, nodes: int = 3) -> ConfigRecord:
    """The setup-stage config Flower's SecAggPlusWorkflow sends (as the server chooses it)."""
    return ConfigRecord(
        {
            Key.STAGE: Stage.SETUP,
            Key.SAMPLE_NUMBER: nodes,
            Key.SHARE_NUMBER: nodes,
            Key.THRESHOLD: 2,
            Key.CLIPPING_RANGE: clip,
            Key.TARGET_RANGE: levels,
            Key.MOD_RANGE: modulus,
            Key.MAX_WEIGHT: 1000.0,
        }
    )


def test_ranges_are_the_finest_that_cannot_wrap() -> None:
    """n nodes' quantised sums fit the modulus, with the largest power-of-two levels that do."""
    for n in (2, 3, 4, 10, 100, 1000):
        r = secagg_ranges(n)
        assert r.clipping_range == DEFAULT_CLIPPING_RANGE
        assert n * r.quantization_range < r.modulus_range
        assert (n + 1) * 2 * r.quantization_range > r.modulus_range or r.quantization_range == 2**30
        assert secagg_setup_problem(
            _setup(clip=r.clipping_range, levels=r.quantization_range, nodes=n),
            SAFE_DEFAULTS.secagg_max_clipping_range,
        ) is None
    with pytest.raises(ValueError, match="n_nodes"):
        secagg_ranges(1)


def test_sized_quantisation_is_finer_than_flowers_default() -> None:
    """Weights within the range survive quantisation to ~1e-8 (Flower's 2^22 levels: ~1e-6)."""
    rng = np.random.default_rng(0)
    w = [rng.normal(0, 2, 500)]
    r = secagg_ranges(4)
    ours = dequantize(quantize(w, r.clipping_range, r.quantization_range), r.clipping_range,
                      r.quantization_range)[0]
    flower = dequantize(quantize(w, 8.0, 2**22), 8.0, 2**22)[0]
    assert np.abs(ours - w[0]).max() < 1e-7 < np.abs(flower - w[0]).max()


def test_the_node_refuses_ranges_outside_its_policy() -> None:
    """A wider clipping range than the policy allows, or a sum that could wrap, is refused."""
    tight = NodePolicy(secagg_max_clipping_range=4.0).secagg_max_clipping_range
    ok = secagg_ranges(3, clipping_range=4.0)

    assert secagg_setup_problem(_setup(clip=4.0, levels=ok.quantization_range), tight) is None
    assert secagg_setup_problem(_setup(clip=4.5, levels=ok.quantization_range), tight) == (
        "SECAGG_CLIPPING_RANGE"
    )
    assert secagg_setup_problem(_setup(clip=4.0, levels=2**31), tight) == "SECAGG_RANGES"
    with pytest.raises(ValueError, match="secagg_max_clipping_range"):
        NodePolicy(secagg_max_clipping_range=0.0)


def test_a_platform_widening_the_range_gets_a_refusal_from_the_real_client_app(
    world: World, tmp_path: Path
) -> None:
    """The curious platform asks for ±1000: the node refuses before any SecAgg+ key exists."""
    node = own_node(world, "isv0", tmp_path, policy="secagg-max-clipping-range = 8.0")
    wide = secagg_ranges(3, clipping_range=1000.0)
    content = RecordDict(
        {RECORD_KEY_CONFIGS: _setup(clip=1000.0, levels=wide.quantization_range)}
    )

    reply = send(node, incoming(content, "train"))

    assert reply.has_error()
    assert reply.error.code == ERR.POLICY_REFUSED
    assert reply.error.reason == "POLICY_REFUSED: SECAGG_CLIPPING_RANGE clipping-range=1000.000"

    # Control: the range the policy allows is accepted (the node answers with its public keys).
    fair = secagg_ranges(3)
    content = RecordDict(
        {RECORD_KEY_CONFIGS: _setup(clip=fair.clipping_range, levels=fair.quantization_range)}
    )
    reply = send(node, incoming(content, "train"))
    assert not reply.has_error(), reply.error
    assert Key.PUBLIC_KEY_1 in reply.content.config_records[RECORD_KEY_CONFIGS]


def test_a_refusal_in_the_masked_vector_stage_leaves_as_the_nodes_own_error() -> None:
    """Under SecAgg+, a handler's refusal (with its receipt) is not turned into NODE_FAILURE."""
    from flwr.app import Context, Error, Message
    from flwr.client.mod.secure_aggregation.secaggplus_mod import SecAggPlusState
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_STATE

    from federation.apps._secagg import secagg_mod

    ctx = Context(run_id=1, node_id=7, node_config={}, state=RecordDict(), run_config={})
    state = SecAggPlusState(current_stage=Stage.SHARE_KEYS)
    ctx.state.config_records[RECORD_KEY_STATE] = ConfigRecord(state.to_dict())  # type: ignore[arg-type]
    configs = ConfigRecord({Key.STAGE: Stage.COLLECT_MASKED_VECTORS, Key.CIPHERTEXT_LIST: [],
                            Key.SOURCE_LIST: []})
    msg = incoming(RecordDict({RECORD_KEY_CONFIGS: configs}), "train")
    reason = "POLICY_REFUSED: MIN_COHORT min=10 receipt=aa.bb.cc"

    def refusing(m: Message, c: Context) -> Message:
        return Message(Error(code=ERR.POLICY_REFUSED, reason=reason), reply_to=m)

    reply = secagg_mod(msg, ctx, refusing)

    assert reply.has_error()
    assert (reply.error.code, reply.error.reason) == (ERR.POLICY_REFUSED, reason)
