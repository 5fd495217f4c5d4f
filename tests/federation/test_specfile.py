"""User model specs in TOML, their overrides, and specs rebuilt from a lineage."""

from __future__ import annotations

from pathlib import Path

import pytest

from federation import SpecError, spec_from_run_config, spec_to_run_config
from federation.specs import SPEC_FILE_KEY, load_spec_file

_PACKAGED = Path(__file__).resolve().parents[2] / "federation" / "specs" / "credit-erp.toml"


def _spec(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(body, "utf-8")
    return path


_GOOD = """
name = "mine"
label = "bad"
categories = ["turnover", "cash_and_debt"]
[model]
family = "mlp"
size = 8
[preprocessing]
bins = 6
[training]
rounds = 4
local_epochs = 3
lr = 0.01
[dp]
epsilon = 2.0
"""


def test_a_spec_file_sets_every_value(tmp_path: Path) -> None:
    """Family, size, bins, schedule, learning rate and DP budget come from the file."""
    spec = load_spec_file(_spec(tmp_path, _GOOD))
    assert (spec.name, spec.label, spec.arch, spec.hidden, spec.n_bins) == (
        "mine", "bad", "mlp", 8, 6)
    assert (spec.rounds, spec.local_epochs, spec.lr) == (4, 3, 0.01)
    assert spec.dp is not None and spec.dp.epsilon == 2.0


def test_run_config_options_override_the_file(tmp_path: Path) -> None:
    """``fl run`` options (kebab-case run config) win over the file's values."""
    path = _spec(tmp_path, _GOOD)
    spec = spec_from_run_config({"spec": "mine", SPEC_FILE_KEY: str(path), "lr": 0.2,
                                 "dp-epsilon": 0.0, "n-bins": 12})
    assert spec.lr == 0.2 and spec.dp is None and spec.n_bins == 12 and spec.arch == "mlp"


def test_a_lineage_rebuilds_a_user_spec_without_its_file(tmp_path: Path) -> None:
    """Scoring reads the spec from the training lineage; the file is not needed."""
    spec = load_spec_file(_spec(tmp_path, _GOOD))
    again = spec_from_run_config(spec_to_run_config(spec))
    assert again == spec


@pytest.mark.parametrize(
    "body",
    [
        _GOOD.replace("[model]", "[modle]"),
        _GOOD.replace("rounds = 4", "rounds = 4.5"),
        _GOOD.replace('family = "mlp"', 'family = "forest"'),
        _GOOD.replace('"cash_and_debt"', '"gossip"'),
        _GOOD.replace("epsilon = 2.0", "eps = 2.0"),
        'label = "x"\ncategories = ["turnover"]\n',
    ],
)
def test_a_bad_spec_file_is_refused(tmp_path: Path, body: str) -> None:
    """Unknown tables or keys, wrong types, unknown families or categories: BAD_SPEC."""
    with pytest.raises(SpecError) as err:
        load_spec_file(_spec(tmp_path, body))
    assert err.value.code == "BAD_SPEC"


def test_the_walkthrough_spec_ships_with_the_package() -> None:
    """federation/specs/credit-erp.toml is the README's spec and loads."""
    spec = load_spec_file(_PACKAGED)
    assert spec.name == "credit-erp" and spec.rounds == 10 and spec.dp is None
