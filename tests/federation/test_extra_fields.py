"""Extra fields: the schema's signed optional fields and ISV-declared fields, end to end.

One validator (``data check`` and the node), one declaration per field at every
node (the job config check and the node's own check), and the node playing
against a platform that sends a declaration its mapping does not hold.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flwr.app import Context, Message, RecordDict
from typer.testing import CliRunner

from federation import DataError, SpecError
from federation._errors import MappingError
from federation.apps import ERR, build_client_app, job_record, load_cohort
from federation.apps._keys import JOB_KEY, SKETCH_KEY
from federation.data import ColumnMapping, RowSelection, make_connector
from federation.features import QuantileSketch
from federation.jobconfig import check_job_config, load_job_config
from federation.schema import (
    ERP_FEATURES,
    declare_field,
    erp_fields_for,
    extra_field,
    fields_from_json,
    fields_to_json,
    job_features,
)
from federation.specs import (
    EXTRA_FIELDS_KEY,
    get_spec,
    load_spec_file,
    spec_from_run_config,
    spec_to_run_config,
)

from ._flworld import World, incoming, make_world, signed_manifest

NET_WORTH = declare_field("net_worth", unit="CNY_fen", category="cash_and_debt", signed=True,
                          integer=True)
DECLARED = (
    '[declared.net_worth]\nunit = "CNY_fen"\ncategory = "cash_and_debt"\nsigned = true\n'
    "integer = true\n"
)


# --- schema and validator ---------------------------------------------------------------


def test_declarations_are_checked_and_travel_as_canonical_json() -> None:
    """Bad names, clashes and categories fail with BAD_FIELD; JSON round-trips exactly."""
    for kwargs, name in (
        ({"unit": "x", "category": "margins"}, "Bad-Name"),
        ({"unit": "x", "category": "margins"}, "debt"),  # a core field
        ({"unit": "x", "category": "margins"}, "sales"),  # a platform field
        ({"unit": " ", "category": "margins"}, "ok_name"),
        ({"unit": "x", "category": "gossip"}, "ok_name"),
    ):
        with pytest.raises(DataError) as err:
            declare_field(name, **kwargs)
        assert err.value.code == "BAD_FIELD"
    extras = (extra_field("net_profit"), NET_WORTH)
    assert fields_from_json(fields_to_json(extras)) == extras
    tampered = json.loads(fields_to_json(extras))
    tampered[0]["signed"] = False  # the schema says net_profit is signed
    with pytest.raises(DataError) as err:
        fields_from_json(json.dumps(tampered))
    assert err.value.code == "FIELD_MISMATCH"
    assert job_features(["margins"], extras) == [*erp_fields_for(["margins"]), "net_profit"]
    assert "net_worth" not in job_features(["margins"], extras)  # its category not consented


def _table(tmp_path: Path, name: str = "erp", **extra: list[float]) -> Path:
    ids = [f"m{i:02d}" for i in range(6)]
    df = pd.DataFrame({"merchant_id": ids, "as_of": "2026-03-31"})
    for f in ERP_FEATURES:
        df[f] = np.arange(6, dtype=float) + 1
    for k, v in extra.items():
        df[k] = v
    path = tmp_path / f"{name}.csv"
    df.to_csv(path, index=False)
    return path


def _read(path: Path, mapping: ColumnMapping) -> pd.DataFrame:
    return make_connector("csv", path=path, mapping=mapping).read(
        data_from=date(2026, 1, 1), data_to=date(2026, 12, 31))


def test_signed_fields_take_negatives_and_the_nonnegative_rule_stays(tmp_path: Path) -> None:
    """net_profit/cash_flow may be negative; a negative cost is still NEGATIVE_VALUE."""
    path = _table(tmp_path, net_profit=[-5.5, 0, 3, -1, 2, 9], cash_flow=[-1, -2, -3, 4, 5, 6])
    df = _read(path, ColumnMapping(scales={"net_profit": 100}))
    assert df["net_profit"].tolist() == [-550, 0, 300, -100, 200, 900]  # yuan → fen, signed
    assert df["cash_flow"].min() == -3
    bad = _table(tmp_path, "bad", net_profit=[1, 2, 3, 4, 5, 6])
    frame = pd.read_csv(bad)
    frame.loc[2, "labour_cost"] = -1
    frame.to_csv(bad, index=False)
    with pytest.raises(DataError) as err:
        _read(bad, ColumnMapping())
    assert err.value.code == "NEGATIVE_VALUE" and err.value.column == "labour_cost"


def test_optional_fields_missing_from_a_table_read_as_missing(tmp_path: Path) -> None:
    """A table without net_profit still checks (no padding column); the node reads it as NaN."""
    path = _table(tmp_path)
    df = _read(path, ColumnMapping())
    assert "net_profit" not in df.columns  # data check reports only what the table holds
    sel = RowSelection(["m01"], [date(2026, 1, 1)], [date(2026, 12, 31)])
    node = make_connector("csv", path=path, mapping=ColumnMapping()).read_selected(
        sel, ["debt", "net_profit"])
    assert node["net_profit"].isna().all() and node["debt"].tolist() == [2]
    # Mapped explicitly to a column the table lacks: that is a missing column, not "absent".
    with pytest.raises(DataError) as err:
        _read(path, ColumnMapping(columns={"net_profit": "NetProfit"}))
    assert err.value.code == "MISSING_COLUMNS"


def test_declared_fields_go_through_the_same_rules(tmp_path: Path) -> None:
    """Scale and offset, the sign rule, WRONG_TYPE, MISSING_COLUMNS and absent apply to them."""
    signed = ColumnMapping(declared={"net_worth": NET_WORTH}, scales={"net_worth": 100},
                           offsets={"net_worth": -50})
    path = _table(tmp_path, net_worth=[-2, -1, 0, 1, 2, 3])
    assert _read(path, signed)["net_worth"].tolist() == [-250, -150, -50, 50, 150, 250]
    unsigned = declare_field("net_worth", unit="CNY_fen", category="cash_and_debt")
    with pytest.raises(DataError) as err:
        _read(path, ColumnMapping(declared={"net_worth": unsigned}))
    assert err.value.code == "NEGATIVE_VALUE" and err.value.column == "net_worth"
    text = _table(tmp_path, "text", net_worth=["a", 1, 2, 3, 4, 5])
    with pytest.raises(DataError) as err:
        _read(text, signed)
    assert err.value.code == "WRONG_TYPE"
    without = _table(tmp_path, "without")
    with pytest.raises(DataError) as err:
        _read(without, signed)
    assert err.value.code == "MISSING_COLUMNS"
    absent = ColumnMapping(declared={"net_worth": NET_WORTH}, absent=frozenset({"net_worth"}))
    assert _read(without, absent)["net_worth"].isna().all()
    # Without a declaration the column is an undeclared extra column.
    with pytest.raises(DataError) as err:
        _read(path, ColumnMapping())
    assert err.value.code == "EXTRA_COLUMNS"


def test_mapping_toml_declares_fields(tmp_path: Path) -> None:
    """``[declared.<name>]`` in a mapping file; a malformed one is BAD_MAPPING."""
    from federation.data import load_mapping

    good = tmp_path / "good.toml"
    good.write_text(f"[units]\nnet_worth = {{ from = \"yuan\", scale = 100 }}\n\n{DECLARED}",
                    "utf-8")
    m = load_mapping(good)
    assert m.declared == {"net_worth": NET_WORTH} and m.scale("net_worth") == 100
    bad = tmp_path / "bad.toml"
    bad.write_text('[declared.net_worth]\nunit = "CNY_fen"\ncategory = "gossip"\n', "utf-8")
    with pytest.raises(MappingError):
        load_mapping(bad)


# --- spec files and run config -----------------------------------------------------------


def _spec(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text('name = "x"\nlabel = "default"\ncategories = ["margins", "cash_and_debt"]\n'
                    + body, "utf-8")
    return path


def test_spec_files_name_extra_fields_and_the_run_config_keeps_them(tmp_path: Path) -> None:
    """optional_fields + [declared.*] parse, survive the run-config round trip and overrides."""
    spec = load_spec_file(_spec(tmp_path, f'optional_fields = ["net_profit"]\n\n{DECLARED}'))
    assert spec.extras == (extra_field("net_profit"), NET_WORTH)
    back = spec_from_run_config({**spec_to_run_config(spec), "rounds": 3})
    assert back.extras == spec.extras and back.rounds == 3
    assert spec_from_run_config(spec_to_run_config(get_spec("pd-erp"))).extras == ()
    for body in ('optional_fields = ["debt"]\n', 'optional_fields = "net_profit"\n',
                 '[declared.net_worth]\nunit = "x"\n'):
        with pytest.raises(SpecError) as err:
            load_spec_file(_spec(tmp_path, body))
        assert err.value.code == "BAD_SPEC"


# --- the same declaration at every node: job config ---------------------------------------


def _job(tmp_path: Path, decl_a: str, decl_b: str) -> Path:
    ids = [f"m{i:03d}" for i in range(40)]
    for isv, decl in (("a", decl_a), ("b", decl_b)):
        df = pd.DataFrame({"merchant_id": ids, "as_of": "2026-01-31"})
        for f in ERP_FEATURES:
            df[f] = np.arange(40) % 9 + 1
        df["net_worth"] = np.arange(40) - 20.0
        df.to_csv(tmp_path / f"erp_{isv}.csv", index=False)
        (tmp_path / f"map_{isv}.toml").write_text(decl, "utf-8")
    pd.DataFrame({"merchant_id": ids, "Age": np.arange(40), "y": [i % 2 for i in range(40)]}
                 ).to_csv(tmp_path / "platform.csv", index=False)
    cfg = tmp_path / "job.toml"
    cfg.write_text(
        '[data]\nfrom = "2026-01-01"\nto = "2026-12-31"\n\n[platform]\ntable = "platform.csv"\n'
        'label = "y"\n\n[isvs.a]\nsource = "erp_a.csv"\nmapping = "map_a.toml"\n\n'
        '[isvs.b]\nsource = "erp_b.csv"\nmapping = "map_b.toml"\n', "utf-8")
    return cfg


def test_a_differing_declaration_is_refused_before_training(tmp_path: Path) -> None:
    """Two ISVs declaring net_worth differently, or one not declaring a field the job uses."""
    ok = load_job_config(_job(tmp_path, DECLARED, DECLARED))
    reports = check_job_config(ok, (NET_WORTH,))
    assert all("net_worth" in r.present for r in reports[1:])
    unsigned = DECLARED.replace("signed = true", "signed = false")
    cfg = load_job_config(_job(tmp_path, DECLARED, DECLARED.replace('"CNY_fen"', '"CNY"')))
    with pytest.raises(DataError) as err:
        check_job_config(cfg)
    assert err.value.code == "FIELD_MISMATCH" and "ISV b" in str(err.value)
    cfg = load_job_config(_job(tmp_path, DECLARED, DECLARED))
    with pytest.raises(DataError) as err:  # the job's declaration differs from both ISVs'
        check_job_config(cfg, (replace(NET_WORTH, nonnegative=True),))
    assert err.value.code == "FIELD_MISMATCH"
    cfg = load_job_config(_job(tmp_path, DECLARED, 'ignore = ["net_worth"]\n'))
    with pytest.raises(DataError) as err:
        check_job_config(cfg, (NET_WORTH,))
    assert err.value.code == "FIELD_NOT_DECLARED" and "ISV b" in str(err.value)
    # The validator itself: ISV a's unsigned declaration meets a negative value.
    cfg = load_job_config(_job(tmp_path, unsigned, unsigned))
    with pytest.raises(DataError) as err:
        check_job_config(cfg)
    assert err.value.code == "NEGATIVE_VALUE" and "ISV a" in str(err.value)


def test_data_check_cli_applies_the_spec_declarations(tmp_path: Path) -> None:
    """``fedgate data check --config --spec`` exits non-zero with the code."""
    from gateway.cli import app

    cfg = _job(tmp_path, DECLARED, 'ignore = ["net_worth"]\n')
    spec = _spec(tmp_path, DECLARED)
    res = CliRunner().invoke(app, ["data", "check", "--config", str(cfg), "--spec", str(spec)])
    assert res.exit_code != 0 and "FIELD_NOT_DECLARED" in res.output
    res = CliRunner().invoke(app, ["data", "check", "--config", str(cfg)])
    assert res.exit_code == 0, res.output


# --- the node trusts its own declaration ----------------------------------------------------

CATS = ("margins", "cash_and_debt")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(tmp_path_factory.mktemp("xworld"))


def _declaring_node(world: World, tmp_path: Path, decl: str):  # noqa: ANN202
    """isv0's node over its ERP table plus a ``net_worth`` column, declared by ``decl``."""
    node = world.node("isv0")
    frame = world.erp["isv0"].copy()
    frame["net_worth"] = np.linspace(-1e6, 1e6, len(frame)).round()
    path = tmp_path / "erp_nw.parquet"
    frame.to_parquet(path, index=False)
    mapping = tmp_path / "map.toml"
    mapping.write_text(decl, "utf-8")
    return replace(node, erp_path=path, mapping=mapping)


def _sketch(world: World, node, job_id: str, extras) -> Message:  # noqa: ANN001
    from federation.apps._keys import ERR as _  # noqa: F401 - keys module imported once
    from federation.specs import ModelSpec

    spec = replace(get_spec("pd-erp"), categories=CATS)
    assert isinstance(spec, ModelSpec)
    token = signed_manifest(world, "isv0", job_id=job_id, round=0, categories=CATS)
    msg = incoming(RecordDict({JOB_KEY: job_record(spec=spec, job_id=job_id, round=0,
                                                   manifest=token)}), "query.sketch")
    ctx = Context(run_id=1, node_id=7, node_config=node.to_mapping(), state=RecordDict(),
                  run_config={EXTRA_FIELDS_KEY: fields_to_json(extras)})
    return build_client_app()(msg, ctx)


def test_node_refuses_a_declaration_its_mapping_does_not_hold(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The platform says net_worth is unsigned (or a field the node never declared): refused
    with a code before a row is read; the matching declaration is sketched as a feature."""
    from federation.data import Connector

    reads: list[int] = []
    real = Connector.read_selected

    def spy(self: Connector, *args: object, **kwargs: object) -> pd.DataFrame:
        reads.append(1)
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Connector, "read_selected", spy)
    node = _declaring_node(world, tmp_path, DECLARED)
    lying = replace(NET_WORTH, nonnegative=True)
    reply = _sketch(world, node, "job-x-mismatch", (lying,))
    assert reply.has_error() and reply.error.code == ERR.POLICY_REFUSED
    assert "FIELD_MISMATCH" in reply.error.reason and reads == []
    other = declare_field("secret_score", unit="points", category="margins")
    reply = _sketch(world, node, "job-x-undeclared", (other,))
    assert reply.has_error() and "FIELD_NOT_DECLARED" in reply.error.reason and reads == []

    # Positive control: the node's own declaration makes net_worth a feature of the job.
    reply = _sketch(world, node, "job-x-ok", (NET_WORTH, extra_field("net_profit")))
    assert not reply.has_error(), reply.error.reason if reply.has_error() else None
    sketch = QuantileSketch.from_arrays(
        {k: v.numpy() for k, v in reply.content.array_records[SKETCH_KEY].items()})
    assert sketch.columns == [*erp_fields_for(CATS), "net_worth", "net_profit"]  # job order
    assert reads


def test_cohort_features_follow_the_consented_categories(world: World, tmp_path: Path) -> None:
    """A declared field whose category the manifest does not consent is never read."""
    from consent import verify_manifest

    node = _declaring_node(world, tmp_path, DECLARED)
    token = signed_manifest(world, "isv0", job_id="job-x-cats", round=0, categories=("margins",))
    manifest = verify_manifest(token, gateway_key=node.gateway_public_key(),
                               data_provider="isv0", now=datetime.now(UTC),
                               replay_guard=node.replay_guard())
    cohort = load_cohort(node, manifest, now=datetime.now(UTC), extras=(NET_WORTH,))
    assert "net_worth" not in cohort.features and "net_worth" not in cohort.frame.columns
