"""`data.source = "files"`: TRL-format and pre-tokenised rows from JSONL, Parquet and a
save_to_disk folder, tokenised by the TL;DR rules, cached, and trained on through the CLI.

The files are written here with pyarrow; the tokenizer is a byte-level BPE trained on the spot.
"""

import dataclasses
import json
import math
import os
import random

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pytest.importorskip("tokenizers")

import pyarrow.parquet as pq  # noqa: E402

from rlft.data import tables  # noqa: E402
from rlft.data.files import FilesDataConfig, files_bundle  # noqa: E402
from rlft.errors import ConfigError  # noqa: E402
from tests.helpers import REPO_CONFIGS  # noqa: E402

CONFIG = os.path.join(REPO_CONFIGS, "files.py")
EOS = "<|endoftext|>"
WORDS = ("apple", "pear", "plum", "fig", "lime", "kiwi", "date", "grape", "melon", "peach")
P, R = 24, 16  # prompt and response tokens of the tests' configs


def _rows(n: int = 64, seed: int = 0) -> list[dict]:
    """Repeat-the-words rows: the chosen answer repeats them, the rejected one reverses them."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = rng.sample(list(WORDS), 3)
        out.append(
            {
                "prompt": f"Repeat: {' '.join(words)}\n\nAnswer:",
                "completion": " ".join(words),
                "chosen": " ".join(words),
                "rejected": " ".join(reversed(words)) + " no",
            }
        )
    return out


def _train_tokenizer(path, texts: list[str]) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    t.train_from_iterator(texts, trainer)
    t.save(str(path))
    return str(path)


def _write_jsonl(path, rows: list[dict]) -> str:
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return str(path)


def _write_disk_folder(path, table: "pa.Table") -> str:
    """What `datasets.Dataset.save_to_disk` writes: Arrow stream shards + state.json."""
    os.makedirs(path)
    names = ["data-00000-of-00002.arrow", "data-00001-of-00002.arrow"]
    half = table.num_rows // 2
    for name, part in zip(names, (table.slice(0, half), table.slice(half)), strict=True):
        with (
            pa.OSFile(os.path.join(path, name), "wb") as sink,
            pa.ipc.new_stream(sink, part.schema) as writer,
        ):
            writer.write_table(part)
    state = {"_data_files": [{"filename": n} for n in names], "_split": None}
    with open(os.path.join(path, "state.json"), "w") as f:
        json.dump(state, f)
    with open(os.path.join(path, "dataset_info.json"), "w") as f:
        json.dump({"features": {c: {"dtype": "string"} for c in table.column_names}}, f)
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """sft.jsonl, prefs.parquet, prefs_disk/ (save_to_disk layout), text.jsonl, tokenizer."""
    root = tmp_path_factory.mktemp("files")
    rows = _rows()
    texts = [r["prompt"] + " " + r["completion"] + " no" for r in rows]
    prefs = pa.Table.from_pylist(
        [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows]
    )
    pq.write_table(prefs, root / "prefs.parquet")
    return {
        "root": root,
        "tokenizer": _train_tokenizer(root / "tokenizer.json", texts),
        "sft": _write_jsonl(
            root / "sft.jsonl", [{k: r[k] for k in ("prompt", "completion")} for r in rows]
        ),
        "pairs": str(root / "prefs.parquet"),
        "pairs_disk": _write_disk_folder(root / "prefs_disk", prefs),
        "text": _write_jsonl(root / "text.jsonl", [{"text": t} for t in texts]),
    }


def _cfg(files, **kw) -> FilesDataConfig:
    base = dict(tokenizer=files["tokenizer"], max_prompt_len=P, response_len=R)
    return FilesDataConfig(**(base | {"pair_response_len": R} | kw))


def test_trl_text_formats_become_the_rlft_layout(files):
    b = files_bundle(_cfg(files, sft_train=files["sft"], pairs_train=files["pairs"]), False)
    n = 64
    assert b.sft["tokens"].shape == (n, P + R) and b.pairs["chosen_tokens"].shape == (n, P + R)
    assert b.vocab_size == 301 and b.pad_id == 300 and b.eos_id == 0
    # prompts left-padded, responses right-padded, EOS last, the loss on the response only
    assert b.sft["mask"][:, P - 1].all() and not b.sft["loss_mask"][:, :P].any()
    ends = P + b.sft["mask"][:, P:].sum(1) - 1
    assert (b.sft["tokens"][np.arange(n), ends] == b.eos_id).all()
    np.testing.assert_array_equal(b.sft["loss_mask"][:, P:], b.sft["mask"][:, P:])
    from rlft.models.hf_files import load_tokenizer

    tok = load_tokenizer(files["tokenizer"], vocab_size=512)
    resp = b.sft["tokens"][0, P : ends[0]]
    assert tok.decode(list(resp)) == " " + _rows()[0]["completion"]  # " " + strip, then EOS
    np.testing.assert_array_equal(b.prompts["prompt_tokens"], b.sft["tokens"][:, :P])
    assert b.reference is b.sft
    # the same preference rows from a save_to_disk folder give the same arrays
    disk = files_bundle(_cfg(files, pairs_train=files["pairs_disk"]), False)
    for k, v in b.pairs.items():
        np.testing.assert_array_equal(disk.pairs[k], v)
    assert disk.sft is None and disk.reference["tokens"] is disk.pairs["chosen_tokens"]


def test_plain_text_rows_train_on_every_token(files):
    b = files_bundle(_cfg(files, sft_train=files["text"], response_len=40), False)
    assert b.sft["tokens"].shape[1] == 1 + 40 and (b.sft["tokens"][:, 0] == b.eos_id).all()
    assert b.sft["loss_mask"][:, 1:].sum() == b.sft["mask"][:, 1:].sum()


def test_long_prompts_are_cut_before_the_marker_and_long_responses_dropped(files, tmp_path):
    long = [{"prompt": "Repeat: " + " ".join(WORDS * 3), "completion": "fig"}]
    long += [{"prompt": "Repeat: fig", "completion": " ".join(WORDS * 3)}]
    path = _write_jsonl(tmp_path / "long.jsonl", long)
    from rlft.models.hf_files import load_tokenizer

    tok = load_tokenizer(files["tokenizer"], vocab_size=512)
    for template, end in (("", ""), ("{prompt}\n\nAnswer:", "\n\nAnswer:")):
        b = files_bundle(_cfg(files, sft_train=path, prompt_template=template), False)
        assert len(b.sft["tokens"]) == 1  # the second row's response + EOS exceeds R
        ids = [int(t) for t in b.sft["tokens"][0, :P] if t != b.pad_id]
        prompt = tok.decode(ids)
        assert prompt.startswith("Repeat: apple pear") and len(ids) <= P
        # cut at a space, after a whole word; the template's text after the prompt survives
        assert prompt.endswith(end) and prompt.removesuffix(end).split(" ")[-1] in WORDS
        assert len(prompt.removesuffix(end)) < len(long[0]["prompt"])


def test_tldr_template_reproduces_the_tldr_path(files, tmp_path):
    from rlft.data.tldr import TextTokenizer, sft_arrays
    from rlft.data.tldr.fixtures import SFT, train_tokenizer
    from rlft.data.tldr.format import QUERY_FORMAT
    from rlft.models.hf_files import load_tokenizer

    tok_file = train_tokenizer(tmp_path / "tok.json")
    path = _write_jsonl(tmp_path / "tldr.jsonl", SFT["train"])
    cfg = FilesDataConfig(
        tokenizer=tok_file,
        sft_train=path,
        prompt_template=QUERY_FORMAT,  # SUBREDDIT: r/{subreddit} ... POST: {post} ... TL;DR:
        prompt_column="post",  # the column cut to fit, as TL;DR cuts the post
        completion_column="summary",
        max_prompt_len=64,  # cuts the long fixture posts
        response_len=16,
    )
    got = files_bundle(cfg, False).sft
    tok = TextTokenizer.from_hf(load_tokenizer(tok_file, vocab_size=512))
    want = sft_arrays(SFT["train"], tok, 64, 16, progress=False).arrays
    assert want["mask"][:, :64].all(1).any()  # some post was cut to fit
    for k, v in want.items():
        np.testing.assert_array_equal(got[k], v)


def test_pretokenised_rows_are_used_as_they_are(files, tmp_path):
    text = files_bundle(_cfg(files, sft_train=files["sft"], pairs_train=files["pairs"]), False)
    pad = text.pad_id

    def ids(tokens, mask):  # one more pad than rlft's layout: widths need not match
        return [
            [pad] + [int(t) for t, m in zip(r, ms, strict=True) if m]
            for r, ms in zip(tokens, mask, strict=True)
        ]

    def padded(tokens, mask):
        return [
            [int(t) for t, m in zip(r, ms, strict=True) if m] + [pad] * 3
            for r, ms in zip(tokens, mask, strict=True)
        ]

    s, p = text.sft, text.pairs
    sft_tok = {
        "query_token": ids(s["tokens"][:, :P], s["mask"][:, :P]),
        "reference_response_token": padded(s["tokens"][:, P:], s["mask"][:, P:]),
        "query": ["unused text columns are fine"] * len(s["tokens"]),
    }
    pair_tok = {"query_token": ids(p["chosen_tokens"][:, :P], p["chosen_mask"][:, :P])}
    for side in ("chosen", "rejected"):
        t, m = p[f"{side}_tokens"][:, P:], p[f"{side}_mask"][:, P:]
        pair_tok[f"{side}_token"] = padded(t, m)
    pq.write_table(pa.table(sft_tok), tmp_path / "sft_tok.parquet")
    pair_dir = _write_disk_folder(tmp_path / "pairs_tok", pa.table(pair_tok))
    cfg = _cfg(files, sft_train=str(tmp_path / "sft_tok.parquet"), pairs_train=pair_dir)
    got = files_bundle(cfg, False)
    for part in ("sft", "pairs", "prompts"):
        for k, v in getattr(text, part).items():
            np.testing.assert_array_equal(getattr(got, part)[k], v, err_msg=f"{part}.{k}")


def test_a_datasets_save_to_disk_folder_reads_as_written(files, tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = _rows()
    ds = datasets.Dataset.from_list(
        [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows]
    )
    ds.save_to_disk(str(tmp_path / "prefs"), num_shards=2)
    got = files_bundle(_cfg(files, pairs_train=str(tmp_path / "prefs")), False).pairs
    want = files_bundle(_cfg(files, pairs_train=files["pairs"]), False).pairs
    for k, v in want.items():
        np.testing.assert_array_equal(got[k], v)
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(ConfigError, match=r"DatasetDict folder with splits \['train'\]"):
        files_bundle(_cfg(files, pairs_train=str(tmp_path / "dd")), False)


def test_arrays_are_cached_beside_the_data(files, tmp_path, monkeypatch):
    path = _write_jsonl(tmp_path / "sft.jsonl", _rows(8))
    cfg = _cfg(files, sft_train=path)
    first = files_bundle(cfg, False)
    assert [f.split("_")[0] for f in os.listdir(tmp_path / "rlft_arrays")] == ["sft"]

    def no_reading(*args, **kwargs):
        raise AssertionError("read the file again instead of the cache")

    monkeypatch.setattr(tables, "read_table", no_reading)
    again = files_bundle(cfg, False)
    np.testing.assert_array_equal(again.sft["tokens"], first.sft["tokens"])
    with pytest.raises(AssertionError, match="read the file again"):  # other lengths: new key
        files_bundle(dataclasses.replace(cfg, response_len=R + 1), False)
    os.utime(path, ns=(1, 1))  # another mtime: the file may have changed
    with pytest.raises(AssertionError, match="read the file again"):
        files_bundle(cfg, False)


def _error(files, tmp_path, rows, part="sft", **kw) -> str:
    path = _write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(ConfigError) as e:
        files_bundle(_cfg(files, **{f"{part}_train": path}, **kw), False)
    message = str(e.value)
    assert "\n" not in message and str(tmp_path / "bad.jsonl") in message
    return message


def test_errors_name_the_file_row_column_and_fix(files, tmp_path):
    rows = [{"prompt": "a", "answer": "b"}]
    msg = _error(files, tmp_path, rows)
    assert "no column 'completion'" in msg and "config.data.completion_column" in msg
    msg = _error(files, tmp_path, [{"prompt": "a", "chosen": "b"}], part="pairs")
    assert "no column 'rejected'" in msg and "config.data.rejected_column" in msg
    rows = [{"prompt": "a", "completion": "b"}, {"prompt": "c", "completion": None}]
    msg = _error(files, tmp_path, rows)
    assert "row 1, column 'completion': null or missing" in msg
    rows = [{"prompt": "a", "completion": "b"}, {"prompt": "c", "completion": 3}]
    assert "changed from string to number in row 1" in _error(files, tmp_path, rows)
    rows = [{"prompt": [{"role": "user", "content": "a"}], "completion": "b"}]
    assert "conversational" in _error(files, tmp_path, rows)
    rows = [{"prompt": "", "completion": "b"}]
    assert "row 0, column 'prompt': the prompt has no tokens" in _error(files, tmp_path, rows)
    rows = [{"query_token": [1, 2], "reference_response_token": [3, 999]}]
    msg = _error(files, tmp_path, rows)
    assert "row 0, column 'reference_response_token': token id 999" in msg
    rows = [{"query_token": list(range(1, P + 2)), "reference_response_token": [3]}]
    assert "config.data.max_prompt_len=24 (raise it)" in _error(files, tmp_path, rows)


def test_the_cli_prints_a_bad_row_in_one_line(files, tmp_path, capsys):
    from rlft.cli import main

    rows = [{"prompt": "a", "completion": "b"}, {"prompt": None, "completion": "c"}]
    path = _write_jsonl(tmp_path / "bad.jsonl", rows)
    argv = [
        f"--config={CONFIG}:tiny:sft:{tmp_path}",
        f"--workdir={tmp_path / 'sft'}",
        f"--config.data.tokenizer={files['tokenizer']}",
        f"--config.data.sft_train={path}",
    ]
    assert main(["train", *argv, "--noprogress"]) == 1  # a run that cannot start, not usage
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"{path}: row 1, column 'prompt': null or missing" in lines[0]


def test_config_errors_name_the_field(files, tmp_path):
    with pytest.raises(ConfigError, match=r"sft_train=.*no such file"):
        files_bundle(_cfg(files, sft_train=str(tmp_path / "nope.jsonl")), False)
    os.makedirs(tmp_path / "dd" / "train")
    (tmp_path / "dd" / "dataset_dict.json").write_text('{"splits": ["train", "test"]}')
    with pytest.raises(ConfigError, match=r"DatasetDict folder .* e\.g\. .*dd/train"):
        files_bundle(_cfg(files, pairs_train=str(tmp_path / "dd")), False)
    with pytest.raises(ConfigError, match=r"data\.parts has 'pairs' but data\.pairs_train"):
        _cfg(files, sft_train=files["sft"], parts=("pairs",))
    with pytest.raises(
        ConfigError, match=r"data\.max_prompt_len = 0: must be >= 1 \(prompt tokens"
    ):
        _cfg(files, sft_train=files["sft"], max_prompt_len=0)
    with pytest.raises(ConfigError, match=r"lacks \{question\}"):
        _cfg(files, sft_train=files["sft"], prompt_column="question", prompt_template="{prompt}")
    from rlft.config import load_config, parse_config

    c = load_config(CONFIG, "tiny:sft")
    c.data.prompt_colum = "question"
    with pytest.raises(ConfigError, match=r"config\.data\.prompt_colum"):
        parse_config(c)


def _losses(workdir: str) -> list[float]:
    from rlft.train.metrics import read_metrics

    losses = [row["loss"] for row in read_metrics(workdir)]
    assert losses and all(math.isfinite(x) for x in losses), losses
    return losses


@pytest.mark.slow  # three CLI stages (about a minute cold); CI runs the slow tier too
def test_stages_train_on_files_through_the_cli(files):
    """sft (JSONL) -> reward (Parquet) -> dpo (save_to_disk folder): each loss falls."""
    from rlft.cli import main

    root = files["root"] / "runs"
    data = [
        f"--config.data.tokenizer={files['tokenizer']}",
        f"--config.data.sft_train={files['sft']}",
        f"--config.data.max_prompt_len={P}",
        f"--config.data.response_len={R}",
        f"--config.data.pair_response_len={R}",
    ]
    pairs = {"reward": files["pairs"], "dpo": files["pairs_disk"]}
    for stage in ("sft", "reward", "dpo"):
        argv = [f"--config={CONFIG}:tiny:{stage}:{root}", f"--workdir={root / stage}", *data]
        if stage in pairs:
            argv.append(f"--config.data.pairs_train={pairs[stage]}")
        assert main(["train", *argv, "--noprogress"]) == 0, stage
        losses = _losses(str(root / stage))
        assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.01, (stage, losses)


@pytest.mark.slow
def test_ppo_runs_on_a_prompts_file(files, tmp_path):
    """sft -> reward -> ppo with the prompts from a prompt-only JSONL file."""
    from rlft.cli import main
    from rlft.train.metrics import read_metrics

    prompts = _write_jsonl(
        tmp_path / "prompts.jsonl", [{"prompt": r["prompt"]} for r in _rows(16, 1)]
    )
    root = tmp_path / "runs"
    data = [
        f"--config.data.tokenizer={files['tokenizer']}",
        f"--config.data.sft_train={files['sft']}",
        f"--config.data.pairs_train={files['pairs']}",
        f"--config.data.prompts_train={prompts}",
        f"--config.data.max_prompt_len={P}",
        f"--config.data.response_len={R}",
        f"--config.data.pair_response_len={R}",
    ]
    for stage in ("sft", "reward", "ppo"):
        argv = [f"--config={CONFIG}:tiny:{stage}:{root}", f"--workdir={root / stage}", *data]
        assert main(["train", *argv, "--noprogress"]) == 0, stage
    last = read_metrics(str(root / "ppo"))[-1]
    assert math.isfinite(last["loss"]) and 0 < last["rollout/response_len"] <= R
