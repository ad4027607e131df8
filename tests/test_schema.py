"""The records schema: a malformed record is refused with a message naming its field."""

import copy

import pytest

from rlft.experiments.report.render import write_outputs
from rlft.experiments.report.schema import validate_records
from tests.report_records import make_records

CONFIG = {"seeds": [0, 1, 2], "dpo": {"beta": 0.05}}


def _broken(edit):
    records = make_records(budgets=(250,))
    edit(records)
    return records


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r.pop("settings"), r"records: missing key 'settings'"),
        (
            lambda r: r["settings"].update(primary_eval="best"),
            r"records.settings.primary_eval: 'best' is not one of",
        ),
        (
            lambda r: r["tasks"]["keyed"].pop("reward_class"),
            r"records.tasks\['keyed'\]: missing key 'reward_class'",
        ),
        (
            lambda r: r["tasks"]["keyed"].update(label_source="web"),
            r"records.tasks\['keyed'\].label_source: 'web'",
        ),
        (
            lambda r: r["runs"][5]["frontier"][2].pop("kl_to_ref"),
            r"records.runs\[5\].frontier\[2\]: missing key 'kl_to_ref'",
        ),
        (
            lambda r: r["runs"][5]["frontier"][2].update(selection="high"),
            r"records.runs\[5\].frontier\[2\].selection: expected number\|null",
        ),
        (lambda r: r["runs"][3].update(arm="dpo"), r"records.runs\[3\].arm: 'dpo' is not one of"),
        (
            lambda r: r["runs"][3].update(selection_rule="gold"),
            r"records.runs\[3\].selection_rule: 'gold'",
        ),
        (lambda r: r["runs"][3].update(frontier=[]), r"records.runs\[3\].frontier: empty"),
        (
            lambda r: r["runs"][3]["frontier"].reverse(),
            r"records.runs\[3\].frontier: steps not strictly ascending",
        ),
        (
            lambda r: r["runs"][3].update(task="nope"),
            r"records.runs\[3\].task: 'nope' has no entry",
        ),
        (
            lambda r: r["diagnostics"][2].update(task="nope"),
            r"records.diagnostics\[2\].task: 'nope' has no entry",
        ),
        (
            lambda r: r["diagnostics"][1]["sft_fit"].pop("sft_gold_greedy"),
            r"records.diagnostics\[1\].sft_fit: missing key 'sft_gold_greedy'",
        ),
        (
            lambda r: r["diagnostics"][1].update(informative_label_frac="0.7"),
            r"records.diagnostics\[1\].informative_label_frac: expected number",
        ),
        (
            lambda r: r["diagnostics"][0]["best_of_n"][0].update(ranker="judge"),
            r"records.diagnostics\[0\].best_of_n\[0\].ranker: 'judge'",
        ),
    ],
)
def test_schema_errors_name_the_field(edit, message):
    with pytest.raises(ValueError, match=message):
        validate_records(_broken(edit))


def test_duplicate_runs_are_refused(tmp_path):
    records = make_records(budgets=(250,))
    records["runs"].append(copy.deepcopy(records["runs"][0]))
    with pytest.raises(ValueError, match="two run records for task='keyed'.*seed 0"):
        write_outputs(str(tmp_path), CONFIG, records)
    assert not (tmp_path / "results.json").exists()
