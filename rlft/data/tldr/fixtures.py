"""Tiny TL;DR files in the published formats, and a BPE tokenizer trained on them in a blink.

Used by tests/test_tldr.py (every row here is asserted on there: change them together) and by
the `smoke` variant of configs/tldr_pythia.py (`data.write_fixture=True`), so a CPU run walks
the real path: jsonl/json files -> TFDS builders -> query formatting -> rlft arrays.
"""

import json
import os
import pathlib

from rlft.data.tldr.format import EOS_TOKEN, format_query

EOS = EOS_TOKEN
LONG_POST = "\n".join(  # ~60 tokens a paragraph with the fixture BPE: well over 512 tokens
    f"Paragraph {i}: my roommate keeps borrowing things and never returns them, what now?"
    for i in range(60)
)
SPACES_POST = " ".join(f"word{i} and more words" for i in range(150))  # no newline at all


def post_row(i: int, post: str | None = None, summary: str | None = None) -> dict:
    """One `tldr_3_filtered` row (id, subreddit, title, post, summary)."""
    return {
        "id": f"t3_{i}",
        "subreddit": "relationships" if i % 2 else "AskReddit",
        "title": f"Question number {i} about life",
        "post": post or f"I (25F) have a question {i}.\nIt is about my cat, who is café-au-lait.",
        "summary": summary or f"question {i} about my cat",
    }


SFT = {  # file stem (train/valid/test.jsonl) -> rows
    "train": [post_row(0), post_row(1, post=LONG_POST), post_row(2, post=SPACES_POST), post_row(3)],
    "valid": [post_row(4), post_row(5, summary="a very long summary " * 30)],
    "test": [post_row(6)],
}


def comparison_row(i: int, split: str, choice: int, batch: str, confidence: bool = True) -> dict:
    """One line of `comparisons/batch*.json` about post `i`."""
    info = {k: v for k, v in post_row(i).items() if k != "summary"}
    row = {
        "info": info,
        "summaries": [
            {"text": f" summary A of post {i}", "policy": "ref", "note": None},
            {"text": f" summary B of post {i}\n", "policy": "sup4_ppo", "note": "ok"},
        ],
        "choice": choice,
        "worker": "w1",
        "batch": batch,
        "split": split,
    }
    if confidence:
        row["extra"] = {"confidence": 7}
    return row


CNNDM = {  # a CNN/DM comparison in the same folder: the builder skips it
    "info": {"id": "c1", "article": "News.", "site": "dailymail"},
    "split": "valid2",
    "summaries": [],
    "choice": 0,
}
COMPARISONS = {  # file name -> rows
    "batch3.json": [
        comparison_row(0, "train", 0, "batch3"),
        comparison_row(0, "train", 1, "batch3"),
        comparison_row(1, "valid1", 1, "batch3", confidence=False),
    ],
    "batch10.json": [
        comparison_row(2, "train", 1, "batch10"),
        CNNDM,
        comparison_row(3, "valid2", 0, "batch10"),
    ],
}


def write_jsonl(path: pathlib.Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_manual(root, sft: dict = SFT, comparisons: dict = COMPARISONS) -> pathlib.Path:
    """A `manual_dir` as docs/tldr.md describes it; returns it."""
    root = pathlib.Path(root)
    for name, rows in sft.items():
        write_jsonl(root / "tldr_3_filtered" / f"{name}.jsonl", rows)
    for name, rows in comparisons.items():
        write_jsonl(root / "comparisons" / name, rows)
    return root


def fixture_texts(sft: dict = SFT) -> list[str]:
    """Query + summary of every fixture post: what the fixture tokenizer is trained on."""
    return [format_query(r) + " " + r["summary"] for rows in sft.values() for r in rows]


def train_tokenizer(path, vocab_size: int = 400) -> str:
    """Train a byte-level BPE (with EOS) on the fixture text, save it as `tokenizer.json` in
    directory `path` (or as the file `path` if it ends in .json); returns the file.

    Load it with rlft.models.hf_files.load_tokenizer(file, vocab_size=...), which adds [PAD]
    (id vocab_size, so the model needs vocab_size + 1 embedding rows at least).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: PLC0415

    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    t.train_from_iterator(fixture_texts(), trainer)
    path = str(path)
    file = path if path.endswith(".json") else os.path.join(path, "tokenizer.json")
    os.makedirs(os.path.dirname(os.path.abspath(file)), exist_ok=True)
    t.save(file)
    return file
