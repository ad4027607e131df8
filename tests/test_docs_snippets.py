"""Every documented command runs: the fenced shell and Python blocks of README.md, docs/*.md and
tpu/README.md, on fixtures standing in for downloads (tests/doc_snippets.py says how blocks
are read and marked). A stale snippet fails the build, naming its file and line.

The default tier runs each document up to its first `slow` block; the slow tier runs every
document in full, in a fresh sandbox.
"""

import glob
import os

import pytest

from tests.doc_snippets import ROOT, Block, SnippetFailed, read_blocks, run_block, run_doc

DOCS = sorted(
    ["README.md", "tpu/README.md"]
    + [os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md"))]
)


def _hf_checkpoint(path: str) -> None:
    """A random tiny GPT-NeoX in Hugging Face layout with a BPE tokenizer: stands in for a
    downloaded Pythia directory."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from rlft.data.tldr.fixtures import train_tokenizer

    torch.manual_seed(0)
    config = transformers.GPTNeoXConfig(
        vocab_size=512,
        hidden_size=32,
        num_attention_heads=4,
        num_hidden_layers=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    transformers.GPTNeoXForCausalLM(config).save_pretrained(path)
    train_tokenizer(path)


def _tldr_inputs(sandbox: str) -> None:
    """docs/tldr.md: the downloaded files (fixture rows in the published formats) and a
    checkpoint directory (its tokenizer is what the page reads)."""
    from rlft.data.tldr.fixtures import write_manual

    write_manual(os.path.join(sandbox, "manual"))
    _hf_checkpoint(os.path.join(sandbox, "checkpoints", "pythia-1b"))


def _files_inputs(sandbox: str) -> None:
    """docs/data.md and the README: TRL-format files (SFT prompt/completion, preferences
    prompt/chosen/rejected, prompt-only) made from the TL;DR fixture posts, and a tokenizer."""
    import json

    from rlft.data.tldr.fixtures import COMPARISONS, SFT, format_query, train_tokenizer

    data = os.path.join(sandbox, "data")
    os.makedirs(data)

    def write(name, rows):
        with open(os.path.join(data, name), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)

    posts = [r for rows in SFT.values() for r in rows]
    write("sft.jsonl", [{"prompt": format_query(r), "completion": r["summary"]} for r in posts])
    write("prompts.jsonl", [{"prompt": format_query(r)} for r in posts])
    prefs = []
    for rows in COMPARISONS.values():
        for r in rows:
            if "post" in r["info"]:
                texts = [x["text"] for x in r["summaries"]]
                prefs.append(
                    {
                        "prompt": format_query(r["info"]),
                        "chosen": texts[r["choice"]],
                        "rejected": texts[1 - r["choice"]],
                    }
                )
    write("preferences.jsonl", prefs)
    train_tokenizer(os.path.join(data, "tokenizer.json"))


FIXTURES = {  # what a reader would have downloaded before following the page
    "docs/convert.md": lambda s: _hf_checkpoint(os.path.join(s, "checkpoints", "pythia-410m")),
    "docs/tldr.md": _tldr_inputs,
    "docs/data.md": _files_inputs,
    "README.md": _files_inputs,
}


def _runnable(doc: str) -> list[Block]:
    return [b for b in read_blocks(doc) if b.lang and not b.skip]


@pytest.mark.parametrize("doc", DOCS)
def test_markers_are_well_formed(doc):
    """Every marker parses, has its reason and matches its block (read_blocks raises if not)."""
    for block in read_blocks(doc):
        for old, new, reason in block.replacements:
            assert old != new and reason, block.where


@pytest.mark.parametrize(
    "doc", [d for d in DOCS if _runnable(d) and not _runnable(d)[0].slow] or ["(none)"]
)
def test_doc_snippets_run(doc, tmp_path):
    if doc in FIXTURES:
        FIXTURES[doc](str(tmp_path))
    assert run_doc(read_blocks(doc), str(tmp_path), include_slow=False)


@pytest.mark.slow
@pytest.mark.parametrize("doc", [d for d in DOCS if any(b.slow for b in _runnable(d))])
def test_doc_snippets_run_in_full(doc, tmp_path):
    if doc in FIXTURES:
        FIXTURES[doc](str(tmp_path))
    ran = run_doc(read_blocks(doc), str(tmp_path), include_slow=True)
    assert ran == [b.where for b in _runnable(doc)]


def test_a_broken_snippet_fails_naming_its_place(tmp_path):
    """The runner is not a rubber stamp: an undefined name, a failing command and a stale
    replace marker each fail with the document's file and line."""
    broken = Block("docs/x.md", 7, "python", "print(undefined_builder)\n")
    with pytest.raises(SnippetFailed, match=r"docs/x\.md:7: NameError"):
        run_block(broken, str(tmp_path), {})
    failing = Block("docs/x.md", 9, "shell", "true\nrlft train --no-such-flag\n")
    with pytest.raises(SnippetFailed, match=r"docs/x\.md:9: exit status 2"):
        run_block(failing, str(tmp_path), {})
    doc = tmp_path / "stale.md"
    doc.write_text("<!-- snippet: replace `gone` -> `new` because -->\n```bash\nls\n```\n")
    with pytest.raises(ValueError, match="stale.md:2: replace marker's `gone` is not in"):
        read_blocks(str(doc))
    doc.write_text("<!-- snippet: skip -->\n```bash\nls\n```\n")
    with pytest.raises(ValueError, match="stale.md:1: `snippet: skip` needs a reason"):
        read_blocks(str(doc))
