"""TL;DR builders (prepared and read without TensorFlow) and formatting into rlft arrays.

Fixture files in the published formats are written into tmp dirs; the tokenizer is a byte-level
BPE trained on the fixture text and loaded through rlft.models.hf_files.load_tokenizer.
"""

import importlib.abc
import importlib.util
import json
import sys

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")
pytest.importorskip("array_record")
tokenizers = pytest.importorskip("tokenizers")

from rlft.data.tldr import (  # noqa: E402
    QUERY_FORMAT,
    TextTokenizer,
    decode_row,
    format_query,
    pair_arrays,
    prompt_arrays,
    sft_arrays,
    truncated_query,
)
from rlft.data.tldr.builders import TldrComparisons, TldrSft, prepare_tldr  # noqa: E402
from rlft.data.tldr.fixtures import (  # noqa: E402
    CNNDM,
    LONG_POST,
    SFT,
    SPACES_POST,
    comparison_row,
    post_row,
    train_tokenizer,
    write_manual,
)
from rlft.models.hf_files import load_tokenizer  # noqa: E402

P, R = 512, 53


class _HideTensorFlow(importlib.abc.MetaPathFinder):
    """Wraps an import finder so tensorflow looks uninstalled (find_spec None, import fails)."""

    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            return None
        find_spec = getattr(self.finder, "find_spec", None)
        return find_spec(name, path, target) if find_spec else None

    def invalidate_caches(self):
        getattr(self.finder, "invalidate_caches", lambda: None)()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Both builders prepared and read with `import tensorflow` made to fail."""
    if "tensorflow" in sys.modules:
        pytest.skip("tensorflow is already imported; cannot check independence from it")
    tfds.disable_progress_bar()
    root = tmp_path_factory.mktemp("tldr")
    manual = write_manual(root / "manual")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "meta_path", [_HideTensorFlow(f) for f in sys.meta_path])
        assert importlib.util.find_spec("tensorflow") is None
        builders = prepare_tldr(str(manual), str(root / "data"))
        sources = {
            name: {s: b.as_data_source(s) for s in b.info.splits} for name, b in builders.items()
        }
        first = sources["sft"]["train"][0]
    return root, sources, first


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    """Byte-level BPE trained on the fixture text, saved and loaded as a checkpoint's would be."""
    path = train_tokenizer(tmp_path_factory.mktemp("tok"))
    return TextTokenizer.from_hf(load_tokenizer(path, vocab_size=512))


def _rows(source):
    return [decode_row(source[i]) for i in range(len(source))]


def test_sft_builder_keeps_files_and_order(prepared):
    root, sources, first = prepared
    sft = sources["sft"]
    assert set(sft) == {"train", "validation", "test"}
    assert isinstance(first["post"], bytes)  # TFDS Text features come back as bytes
    for split, name in (("train", "train"), ("validation", "valid"), ("test", "test")):
        assert _rows(sft[split]) == SFT[name]
    # A fresh builder reads prepared data (no manual_dir needed); TFDS split slicing works.
    builder = TldrSft(data_dir=str(root / "data"))
    assert _rows(builder.as_data_source("train[1:3]")) == SFT["train"][1:3]


def test_comparisons_builder_splits_and_mapping(prepared):
    _, sources, _ = prepared
    comp = sources["comparisons"]
    rows = {s: _rows(comp[s]) for s in ("train", "valid1", "valid2")}
    # batch3 before batch10 (natural order), the CNN/DM row skipped.
    assert [(r["id"], r["batch"], r["choice"]) for r in rows["train"]] == [
        ("t3_0", "batch3", 0),
        ("t3_0", "batch3", 1),
        ("t3_2", "batch10", 1),
    ]
    assert [r["id"] for r in rows["valid1"]] == ["t3_1"]
    assert [r["id"] for r in rows["valid2"]] == ["t3_3"]
    second = rows["train"][1]
    assert second["chosen"] == " summary B of post 0\n" and second["chosen_policy"] == "sup4_ppo"
    assert second["rejected"] == " summary A of post 0" and second["rejected_policy"] == "ref"
    assert second["title"] == "Question number 0 about life" and second["split"] == "train"
    assert second["confidence"] == 7 and rows["valid1"][0]["confidence"] == -1


def _naive_truncated_post(row, tok, length):
    """The cut-one-at-a-time loop (newline, else space, else a character)."""
    post = row["post"]
    while len(tok.encode(format_query(row, post))) > length:
        if "\n" in post:
            post = post[: post.rindex("\n")]
        elif " " in post:
            post = post[: post.rindex(" ")]
        else:
            post = post[:-1]
    return post


def _query(tokens, mask, tok):
    return tok.decode(tokens[mask].tolist())


def test_sft_arrays_layout_truncation_and_eos(prepared, tok):
    _, sources, _ = prepared
    source = sources["sft"]["train"]
    packed = sft_arrays(source, tok, progress=False)
    a = packed.arrays
    assert {k: v.shape for k, v in a.items()} == {k: (4, P + R) for k in a}
    np.testing.assert_array_equal(packed.rows, np.arange(4))
    posts = [_naive_truncated_post(row, tok, P) for row in SFT["train"]]
    for i, (row, post) in enumerate(zip(SFT["train"], posts, strict=True)):
        q_tokens, q_mask = a["tokens"][i, :P], a["mask"][i, :P]
        k = int(q_mask.sum())
        assert q_mask[P - k :].all() and not q_mask[: P - k].any()  # left padded
        assert (q_tokens[: P - k] == tok.pad_id).all() and not a["loss_mask"][i, :P].any()
        assert _query(q_tokens, q_mask, tok) == QUERY_FORMAT.format(**{**row, "post": post})
        assert q_tokens[P - k :].tolist() == tok.encode(format_query(row, post))
        r_tokens, r_mask = a["tokens"][i, P:], a["mask"][i, P:]
        n = int(r_mask.sum())
        assert r_mask[:n].all() and not r_mask[n:].any()  # right padded
        np.testing.assert_array_equal(a["loss_mask"][i, P:], r_mask)
        assert r_tokens[n - 1] == tok.eos_id and (r_tokens[n:] == tok.pad_id).all()
        assert tok.decode(r_tokens[: n - 1].tolist()) == " " + row["summary"]
    # Row 1 was cut at a newline, as far down as needed and no further; row 2 at a space.
    long_post, spaces_post = posts[1:3]
    assert LONG_POST.startswith(long_post + "\n") and a["mask"][1, :P].sum() > P - 70
    assert SPACES_POST.startswith(spaces_post + " ") and "\n" not in spaces_post
    assert a["mask"][0, :P].sum() < 100  # short posts are untouched


def test_sft_arrays_drop_or_cut_long_summaries(prepared, tok):
    _, sources, _ = prepared
    source = sources["sft"]["validation"]
    kept = sft_arrays(source, tok, progress=False)
    np.testing.assert_array_equal(kept.rows, [0])  # row 1's summary is > 53 tokens
    assert kept.arrays["tokens"].shape == (1, P + R)
    cut = sft_arrays(source, tok, drop_long=False, progress=False).arrays
    assert cut["mask"][1, P:].all() and tok.eos_id not in cut["tokens"][1, P:]


def test_pair_and_prompt_arrays(prepared, tok):
    _, sources, _ = prepared
    source = sources["comparisons"]["train"]
    packed = pair_arrays(source, tok, response_len=20, progress=False)
    a = packed.arrays
    assert set(a) == {
        f"{s}_{k}" for s in ("chosen", "rejected") for k in ("tokens", "mask", "loss_mask")
    }
    assert all(v.shape == (3, P + 20) for v in a.values())
    for i, row in enumerate(_rows(source)):
        np.testing.assert_array_equal(a["chosen_tokens"][i, :P], a["rejected_tokens"][i, :P])
        for side in ("chosen", "rejected"):
            r = a[f"{side}_tokens"][i, P:][a[f"{side}_mask"][i, P:]]
            assert r[-1] == tok.eos_id
            assert tok.decode(r[:-1].tolist()) == " " + row[side].strip()
    prompts = prompt_arrays(source, tok, dedupe=True, progress=False)
    np.testing.assert_array_equal(prompts.rows, [0, 2])  # rows 0 and 1 share post t3_0
    assert prompts.arrays["prompt_tokens"].shape == (2, P)
    expected = format_query(decode_row(source[2]))
    assert (
        _query(prompts.arrays["prompt_tokens"][1], prompts.arrays["prompt_mask"][1], tok)
        == expected
    )


def test_plain_list_of_dicts_and_generic_tokenizer():
    """Any sequence of str dicts and any encode(str) -> ids works (here: bytes as ids)."""
    tok = TextTokenizer(lambda s: list(s.encode()), lambda ids: bytes(ids).decode(), 0, 1)
    row = post_row(9, post="line one\nline two\nline three")
    full = len(format_query(row).encode())
    packed = prompt_arrays([row], tok, max_query_len=full - 1, progress=False)
    text = _query(packed.arrays["prompt_tokens"][0], packed.arrays["prompt_mask"][0], tok)
    assert text == format_query(row, "line one\nline two")


def test_truncation_matches_the_cut_loop_on_random_posts(tok):
    rng = np.random.default_rng(0)
    row = post_row(8)
    empty = len(tok.encode(format_query(row, "")))
    for _ in range(40):
        post = "".join(rng.choice(list("ab c\n"), p=[0.3, 0.3, 0.2, 0.1, 0.1], size=120))
        length = int(rng.integers(empty, empty + 60))
        expected = tok.encode(
            format_query(row, _naive_truncated_post(row | {"post": post}, tok, length))
        )
        assert truncated_query(row | {"post": post}, tok, length) == expected
    with pytest.raises(ValueError, match=r"row t3_8: the query without its post already has"):
        truncated_query(row, tok, empty - 1)


def test_hf_adapter_needs_eos(tmp_path):
    from tokenizers import models

    t = tokenizers.Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    t.add_special_tokens(["[PAD]"])
    with pytest.raises(ValueError, match="no eos token '<\\|endoftext\\|>'"):
        TextTokenizer.from_hf(t)


def _prepare(tmp_path, builder_cls, **manual):
    manual_dir = write_manual(tmp_path / "manual", **manual)
    builder = builder_cls(data_dir=str(tmp_path / "data"))
    config = tfds.download.DownloadConfig(manual_dir=str(manual_dir), try_download_gcs=False)
    builder.download_and_prepare(download_config=config)
    return builder


def test_missing_manual_files_name_the_file(tmp_path):
    sft = {k: v for k, v in SFT.items() if k != "test"}
    with pytest.raises(FileNotFoundError, match=r"tldr_3_filtered/test\.jsonl"):
        _prepare(tmp_path / "a", TldrSft, sft=sft)
    with pytest.raises(FileNotFoundError, match=r"comparisons/\*\.json"):
        _prepare(tmp_path / "b", TldrComparisons, comparisons={})


def test_malformed_lines_name_file_and_line(tmp_path):
    manual = write_manual(tmp_path / "manual")
    path = manual / "tldr_3_filtered" / "valid.jsonl"
    path.write_text(json.dumps(SFT["valid"][0]) + "\n" + '{"id": "t3_x", "post": \n')
    with pytest.raises(ValueError, match=r"valid\.jsonl:2: not valid JSON"):
        TldrSft(data_dir=str(tmp_path / "data")).download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(manual))
        )
    bad_sft = {**SFT, "test": [{k: v for k, v in post_row(7).items() if k != "summary"}]}
    with pytest.raises(ValueError, match=r"test\.jsonl:1: field 'summary' must be a string"):
        _prepare(tmp_path / "b", TldrSft, sft=bad_sft)
    bad = {
        "batch3.json": [comparison_row(0, "train", 0, "b"), {**comparison_row(1, "train", 2, "b")}]
    }
    with pytest.raises(ValueError, match=r"batch3\.json:2: field 'choice' must be 0 or 1; got 2"):
        _prepare(tmp_path / "c", TldrComparisons, comparisons=bad)
    bad = {"batch3.json": [{**comparison_row(0, "test", 0, "b")}]}
    with pytest.raises(ValueError, match=r"batch3\.json:1: field 'split' must be one of"):
        _prepare(tmp_path / "d", TldrComparisons, comparisons=bad)


def test_only_splits_with_rows_and_empty_files(tmp_path):
    only_train = {"batch3.json": [comparison_row(0, "train", 0, "batch3"), CNNDM]}
    builder = _prepare(tmp_path / "a", TldrComparisons, comparisons=only_train)
    assert set(builder.info.splits) == {"train"} and len(builder.as_data_source("train")) == 1
    with pytest.raises(ValueError, match=r"valid\.jsonl has no rows"):
        _prepare(tmp_path / "b", TldrSft, sft={**SFT, "valid": []})
