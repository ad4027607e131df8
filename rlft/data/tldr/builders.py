"""TFDS builders for Reddit TL;DR (OpenAI summarize-from-feedback), prepared from local files.

Both builders read files the user downloaded into one `manual_dir` (layout in
MANUAL_DOWNLOAD_INSTRUCTIONS and docs/tldr.md) and write `array_record`, so preparing and
reading (`builder.as_data_source(split)`) need no TensorFlow. Examples keep the files' order
(shuffling is the training loop's job). Text features come back as UTF-8 bytes.
"""

import logging
import re
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from rlft.data.jsonl import jsonl_rows

BASE_URL = "https://openaipublic.blob.core.windows.net/summarize-from-feedback"
SFT_DIR = "tldr_3_filtered"
SFT_FILES = {"train": "train.jsonl", "validation": "valid.jsonl", "test": "test.jsonl"}
POST_FIELDS = ("id", "subreddit", "title", "post")
COMPARISONS_DIR = "comparisons"
COMPARISON_SPLITS = ("train", "valid1", "valid2")

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Download OpenAI's summarize-from-feedback files into one manual_dir:

  manual_dir/{SFT_DIR}/train.jsonl, valid.jsonl, test.jsonl
      from {BASE_URL}/datasets/{SFT_DIR}/<name>.jsonl
      (one JSON object a line: id, subreddit, title, post, summary)
  manual_dir/{COMPARISONS_DIR}/batch3.json ... batch22.json (any *.json)
      from {BASE_URL}/dataset/{COMPARISONS_DIR}/<name>.json
      (one comparison a line: info {{id, post, title, subreddit}}, summaries [{{text, policy,
      note}} x2], choice 0/1, worker, batch, split train/valid1/valid2, extra {{confidence}})

TldrSft needs the first folder, TldrComparisons the second. See docs/tldr.md.
"""

log = logging.getLogger(__name__)


def _where(path: epath.Path, line_no: int) -> str:
    return f"{path}:{line_no}"


def _text_fields(obj: dict, fields, where: str, what: str) -> dict[str, str]:
    """The string fields of `obj`; a missing or non-string field raises naming the place."""
    out = {}
    for field in fields:
        value = obj.get(field)
        if not isinstance(value, str):
            got = "missing" if field not in obj else f"{type(value).__name__} {value!r:.60}"
            raise ValueError(f"{where}: field {what}{field!r} must be a string; got {got}")
        out[field] = value
    return out


def _manual_file(manual_dir: epath.Path, *parts: str) -> epath.Path:
    path = manual_dir.joinpath(*parts)
    if not path.is_file():
        raise FileNotFoundError(
            f"missing {path} (expected {'/'.join(parts)} inside manual_dir {manual_dir}).\n"
            f"{MANUAL_DOWNLOAD_INSTRUCTIONS}"
        )
    return path


def _text() -> tfds.features.Text:
    return tfds.features.Text()


class TldrSft(tfds.core.GeneratorBasedBuilder):
    """Filtered Reddit TL;DR posts with their human TL;DR (`tldr_3_filtered`)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "From OpenAI's tldr_3_filtered jsonl files."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

    def __init__(self, *, file_format: str = "array_record", **kwargs):
        super().__init__(file_format=file_format, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        fields = (*POST_FIELDS, "summary")
        return self.dataset_info_from_configs(
            description="Reddit TL;DR posts and reference summaries (splits: train, "
            "validation = valid.jsonl, test).",
            features=tfds.features.FeaturesDict({f: _text() for f in fields}),
            homepage="https://github.com/openai/summarize-from-feedback",
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        manual_dir = epath.Path(dl_manager.manual_dir)
        paths = {s: _manual_file(manual_dir, SFT_DIR, name) for s, name in SFT_FILES.items()}
        return {split: self._generate_examples(path) for split, path in paths.items()}

    def _generate_examples(self, path: epath.Path):
        line_no = 0
        for line_no, row in jsonl_rows(path):
            yield line_no, _text_fields(row, (*POST_FIELDS, "summary"), _where(path, line_no), "")
        if not line_no:
            raise ValueError(f"{path} has no rows; expected one JSON post a line")


def _natural_key(path: epath.Path):
    """batch3 < batch10: split digit runs off the name and compare them as numbers."""
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", path.name)]


def _comparison(row: dict, where: str) -> dict[str, Any] | None:
    """One comparison as features, or None for a CNN/DM comparison (info has `article`)."""
    info = row.get("info")
    if not isinstance(info, dict):
        raise ValueError(f"{where}: field 'info' must be an object with {list(POST_FIELDS)}")
    if "post" not in info and "article" in info:
        return None
    out = _text_fields(info, POST_FIELDS, where, "info.")
    summaries, choice = row.get("summaries"), row.get("choice")
    if not (isinstance(summaries, list) and len(summaries) == 2):
        raise ValueError(f"{where}: field 'summaries' must be a list of 2 objects")
    if choice not in (0, 1) or isinstance(choice, bool):
        raise ValueError(f"{where}: field 'choice' must be 0 or 1; got {choice!r}")
    texts = []
    for i, s in enumerate(summaries):
        if not isinstance(s, dict):
            raise ValueError(f"{where}: summaries[{i}] must be an object with text, policy")
        texts.append(_text_fields(s, ("text", "policy"), where, f"summaries[{i}]."))
    split = row.get("split")
    if split not in COMPARISON_SPLITS:
        raise ValueError(
            f"{where}: field 'split' must be one of {COMPARISON_SPLITS}; got {split!r}"
        )
    extra = row.get("extra") or {}
    confidence = extra.get("confidence") if isinstance(extra, dict) else None
    chosen, rejected = texts[choice], texts[1 - choice]
    return out | {
        "chosen": chosen["text"],
        "rejected": rejected["text"],
        "chosen_policy": chosen["policy"],
        "rejected_policy": rejected["policy"],
        "choice": np.int32(choice),
        "worker": str(row.get("worker") or ""),
        "batch": str(row.get("batch") or ""),
        "split": split,
        "confidence": np.int32(confidence if isinstance(confidence, int) else -1),
    }


class TldrComparisons(tfds.core.GeneratorBasedBuilder):
    """Human preference comparisons between two TL;DR summaries of a Reddit post.

    Splits follow the rows' own `split` field: train, valid1 (used for model selection in the
    original work), valid2 (final evaluations); a split without rows is left out. CNN/DM
    comparisons in the same folder are skipped. `choice` is the index of the chosen summary in
    the original `summaries` list; `confidence` is the labeller's 1-9 rating, -1 where absent.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "From OpenAI's summarize-from-feedback comparisons/*.json."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

    def __init__(self, *, file_format: str = "array_record", **kwargs):
        super().__init__(file_format=file_format, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        text = (*POST_FIELDS, "chosen", "rejected", "chosen_policy", "rejected_policy")
        features = {f: _text() for f in (*text, "worker", "batch", "split")}
        features |= {f: tfds.features.Scalar(dtype=np.int32) for f in ("choice", "confidence")}
        return self.dataset_info_from_configs(
            description="TL;DR summary comparisons by human labellers (chosen vs rejected).",
            features=tfds.features.FeaturesDict(features),
            homepage="https://github.com/openai/summarize-from-feedback",
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        manual_dir = epath.Path(dl_manager.manual_dir)
        folder = manual_dir / COMPARISONS_DIR
        files = sorted(folder.glob("*.json"), key=_natural_key) if folder.is_dir() else []
        if not files:
            raise FileNotFoundError(
                f"no comparison files: expected {COMPARISONS_DIR}/*.json (batch3.json, ...) "
                f"inside manual_dir {manual_dir}, found none in {folder}.\n"
                f"{MANUAL_DOWNLOAD_INSTRUCTIONS}"
            )
        lines = _scan_comparisons(files)
        if not lines:
            raise ValueError(f"no TL;DR comparisons in {[str(f) for f in files]}")
        return {split: self._generate_examples(files, lines[split]) for split in lines}

    def _generate_examples(self, files: list[epath.Path], lines: dict[int, set[int]]):
        for file_no, path in enumerate(files):
            for line_no, row in jsonl_rows(path, only=lines.get(file_no, set())):
                yield f"{file_no:04d}:{line_no:09d}", _comparison(row, _where(path, line_no))


def _scan_comparisons(files: list[epath.Path]) -> dict[str, dict[int, set[int]]]:
    """Validate every line before writing; {split: {file number: line numbers}} of TL;DR rows.

    TFDS refuses empty splits, so only splits with rows are declared.
    """
    lines: dict[str, dict[int, set[int]]] = {}
    for file_no, path in enumerate(files):
        skipped = 0
        for line_no, row in jsonl_rows(path):
            example = _comparison(row, _where(path, line_no))
            if example is None:
                skipped += 1
            else:
                lines.setdefault(example["split"], {}).setdefault(file_no, set()).add(line_no)
        if skipped:
            log.info("%s: skipped %d CNN/DM comparisons (not TL;DR)", path, skipped)
    return dict(sorted(lines.items(), key=lambda kv: COMPARISON_SPLITS.index(kv[0])))


def prepare_tldr(
    manual_dir: str,
    data_dir: str,
    which: tuple[str, ...] = ("sft", "comparisons"),
) -> dict[str, tfds.core.DatasetBuilder]:
    """Prepare the TL;DR builders from `manual_dir` into `data_dir`; returns them by name.

    Already-prepared datasets are reused. Read a split with `builders["sft"].as_data_source(
    "train")`.
    """
    classes = {"sft": TldrSft, "comparisons": TldrComparisons}
    unknown = set(which) - set(classes)
    if unknown:
        raise ValueError(f"unknown TL;DR dataset(s) {sorted(unknown)}; choose from {list(classes)}")
    config = tfds.download.DownloadConfig(manual_dir=manual_dir, try_download_gcs=False)
    builders = {}
    for name in which:
        builder = classes[name](data_dir=data_dir)
        builder.download_and_prepare(download_config=config)
        builders[name] = builder
    return builders
