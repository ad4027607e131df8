"""The one variant parser every config file uses (rlft.defaults.parse_arg)."""

import pytest

from rlft.config import load_config
from rlft.defaults import parse_arg
from tests.helpers import REPO_CONFIGS


def test_positional_fields_defaults_and_a_last_part_with_colons():
    fields = dict(size=("1.4b", "2.8b"), stage=("sft", "dpo"), root="runs")
    assert parse_arg(None, "f.py", **fields) == ("1.4b", "sft", "runs")
    assert parse_arg("2.8b:dpo", "f.py", **fields) == ("2.8b", "dpo", "runs")
    assert parse_arg("2.8b:dpo:gs://b/x:y", "f.py", **fields) == ("2.8b", "dpo", "gs://b/x:y")
    with pytest.raises(ValueError, match=r"f.py: unknown stage 'ppo' in variant '1.4b:ppo'.*SIZE"):
        parse_arg("1.4b:ppo", "f.py", "SIZE:STAGE", **fields)


@pytest.mark.parametrize("name", ["sft", "reward", "dpo", "ppo", "reproduce"])
def test_every_config_names_its_bad_variant(name):
    with pytest.raises(ValueError, match=rf"configs/{name}.py: unknown \w+ 'huge'"):
        load_config(f"{REPO_CONFIGS}/{name}.py", "huge")
