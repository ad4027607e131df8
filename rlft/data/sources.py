"""Where a stage's arrays come from: `config.data.source` picks synthetic, TL;DR or files.

`bundle_from_config(run.data)` is what `rlft train` calls when no DataBundle is passed in.

- `synthetic` (the default; rlft.data.synthetic.SyntheticConfig): the in-process toy task.
- `tldr` (TldrDataConfig): Reddit TL;DR through the TFDS builders of rlft.data.tldr. Prepares
  the datasets from `manual_dir` if `data_dir` lacks them, tokenises with the checkpoint's
  tokenizer, and caches the arrays as .npz under `data_dir/rlft_arrays/`, keyed by the
  tokenizer, lengths, split and dataset version, so later stages (and reruns) load instead of
  re-tokenising. Bundle parts: `sft` = SFT set summaries; `prompts` = the same rows' queries
  (PPO rollouts); `reference` = the same rows (human summaries that normalise the reward
  model); `pairs` = the comparisons split. `parts` picks which sets a stage tokenises.
- `files` (rlft.data.files.FilesDataConfig): your own JSONL / Parquet / `datasets`
  save_to_disk files in TRL's formats or the pre-tokenised TL;DR layout (docs/data.md).
"""

import dataclasses
import logging
import os
import re

import jax
from etils import epath

from rlft.data.bundle import DataBundle
from rlft.data.cache import NO_VOCAB_LIMIT, cached_arrays, digest, text_tokenizer
from rlft.data.files import FilesDataConfig, files_bundle
from rlft.data.synthetic import SyntheticConfig, synthetic_bundle
from rlft.data.tldr import fixtures
from rlft.data.tldr import format as tldr_format
from rlft.data.tldr.format import MAX_QUERY_LEN, PAIR_RESPONSE_LEN, SFT_RESPONSE_LEN
from rlft.errors import ConfigError

log = logging.getLogger(__name__)
PARTS = {"sft": "sft", "pairs": "comparisons"}  # bundle part -> TL;DR builder that feeds it
CACHE_DIR = "rlft_arrays"  # under data_dir
CACHE_FORMAT = 1  # bump when rlft.data.tldr.format changes what it produces
__all__ = ["DATA_SOURCES", "NO_VOCAB_LIMIT", "TldrDataConfig", "bundle_from_config"]


@dataclasses.dataclass(frozen=True)
class TldrDataConfig:
    """`config.data` with source="tldr" (docs/tldr.md)."""

    data_dir: str = ""  # TFDS data_dir holding (or to hold) tldr_sft/ and tldr_comparisons/
    manual_dir: str = ""  # the downloaded files; read only to prepare what data_dir lacks
    tokenizer: str = ""  # dir with tokenizer.json (the HF checkpoint dir) or the file
    max_query_len: int = MAX_QUERY_LEN  # prompt tokens; longer posts are cut (format.py)
    response_len: int = SFT_RESPONSE_LEN  # SFT/reference summary + EOS; longer rows dropped
    pair_response_len: int = PAIR_RESPONSE_LEN  # comparison summaries + EOS (RM, DPO)
    sft_split: str = "train"  # TldrSft split: sft, prompts and reference
    pairs_split: str = "train"  # TldrComparisons split: pairs
    parts: tuple[str, ...] = ("sft", "pairs")  # what to build; a stage reads only its own
    max_rows: int = 0  # rows read per split (0 = all); smoke runs
    write_fixture: bool = False  # smoke: write fixture files + a BPE tokenizer where missing

    def __post_init__(self):
        object.__setattr__(self, "parts", tuple(self.parts))
        for name in ("data_dir", "tokenizer"):
            if not getattr(self, name):
                raise ValueError(f"{name} is empty; see the docstring of configs/tldr_pythia.py")
        unknown = sorted(set(self.parts) - set(PARTS))
        if unknown or not self.parts:
            raise ValueError(f"parts={self.parts}: choose from {sorted(PARTS)}")
        lengths = (self.max_query_len, self.response_len, self.pair_response_len)
        if min(lengths) <= 0 or self.max_rows < 0:
            raise ValueError("lengths must be positive and max_rows >= 0 (0 = all rows)")


# config.data.source -> its section's dataclass
DATA_SOURCES = {"synthetic": SyntheticConfig, "tldr": TldrDataConfig, "files": FilesDataConfig}


def _write_fixture(cfg: TldrDataConfig) -> None:
    """Smoke runs: the fixture files in manual_dir and a fixture-trained tokenizer."""
    if not cfg.manual_dir:
        raise ConfigError("config.data.write_fixture=True needs config.data.manual_dir")
    if not os.path.isdir(os.path.join(cfg.manual_dir, "tldr_3_filtered")):
        fixtures.write_manual(cfg.manual_dir)
    tok_file = cfg.tokenizer
    if not tok_file.endswith(".json"):
        tok_file = os.path.join(tok_file, "tokenizer.json")
    if not os.path.isfile(tok_file):
        fixtures.train_tokenizer(tok_file)


def _prepared_builders(cfg: TldrDataConfig, names: tuple[str, ...]) -> dict:
    """TL;DR builders by name, prepared from manual_dir where data_dir lacks them."""
    # tensorflow-datasets is the optional `data` extra: imported only when TL;DR is built.
    from rlft.data.tldr.builders import TldrComparisons, TldrSft, prepare_tldr  # noqa: PLC0415

    classes = {"sft": TldrSft, "comparisons": TldrComparisons}
    builders = {n: classes[n](data_dir=cfg.data_dir) for n in names}
    missing = tuple(n for n, b in builders.items() if not b.is_prepared())
    if not missing:
        return builders
    where = f"config.data.data_dir={cfg.data_dir!r}"
    if not cfg.manual_dir:
        raise ConfigError(
            f"{where} has no prepared TL;DR {list(missing)} datasets; set "
            f"config.data.manual_dir to the downloaded files (docs/tldr.md) to prepare them"
        )
    if jax.process_count() > 1:
        raise ConfigError(
            f"{where} lacks {list(missing)}; prepare once before a multi-host run: python -c "
            f"\"from rlft.data.tldr import prepare_tldr; prepare_tldr('{cfg.manual_dir}', "
            f"'{cfg.data_dir}')\""
        )
    log.info("preparing TL;DR %s from %s into %s", missing, cfg.manual_dir, cfg.data_dir)
    return builders | prepare_tldr(cfg.manual_dir, cfg.data_dir, which=missing)


def _split_spec(split: str, max_rows: int) -> str:
    return f"{split}[:{max_rows}]" if max_rows else split


def cache_path(data_dir: str, part: str, builder, split: str, num_rows: int, key: dict):
    """data_dir/rlft_arrays/<part>_<split>_<hash>.npz; the hash covers everything that
    changes the arrays (tokenizer, lengths, split, rows, dataset version, format)."""
    full = {**key, "part": part, "split": split, "rows": num_rows, "format": CACHE_FORMAT}
    full["dataset"] = f"{builder.name}:{builder.version}"
    safe = re.sub(r"[^A-Za-z0-9]+", "-", split).strip("-")
    return epath.Path(data_dir) / CACHE_DIR / f"{part}_{safe}_{digest(full)}.npz"


def _part_arrays(cfg: TldrDataConfig, part: str, builder, tok, key: dict, progress: bool):
    """One part's arrays (sft or pairs), from the cache or tokenised now."""
    split, response_len, fn = {
        "sft": (cfg.sft_split, cfg.response_len, tldr_format.sft_arrays),
        "pairs": (cfg.pairs_split, cfg.pair_response_len, tldr_format.pair_arrays),
    }[part]
    split = _split_spec(split, cfg.max_rows)
    source = builder.as_data_source(split)
    key = {**key, "max_query_len": cfg.max_query_len, "response_len": response_len}
    path = cache_path(cfg.data_dir, part, builder, split, len(source), key)
    arrays = cached_arrays(
        path, lambda: fn(source, tok, cfg.max_query_len, response_len, progress=progress)
    )
    if not len(next(iter(arrays.values()))):
        field = "pair_response_len" if part == "pairs" else "response_len"
        raise ConfigError(
            f"TL;DR {part} ({split}) has no rows left: every response + EOS is longer than "
            f"config.data.{field}={response_len} tokens"
        )
    return arrays


def tldr_bundle(cfg: TldrDataConfig, progress: bool = True) -> DataBundle:
    """The TL;DR DataBundle of `cfg` (see the module docstring)."""
    if cfg.write_fixture:
        _write_fixture(cfg)
    tok, vocab_size, fingerprint = text_tokenizer(cfg.tokenizer)
    builders = _prepared_builders(cfg, tuple(PARTS[p] for p in cfg.parts))
    out = {
        part: _part_arrays(
            cfg, part, builders[PARTS[part]], tok, {"tokenizer": fingerprint}, progress
        )
        for part in cfg.parts
    }
    sft, p = out.get("sft"), cfg.max_query_len
    prompts = None
    if sft is not None:  # the SFT rows' queries: the prompt block of their sequences
        prompts = {"prompt_tokens": sft["tokens"][:, :p], "prompt_mask": sft["mask"][:, :p]}
    return DataBundle(
        eos_id=tok.eos_id,
        pad_id=tok.pad_id,
        vocab_size=vocab_size,
        sft=sft,
        pairs=out.get("pairs"),
        prompts=prompts,
        reference=sft,
    )


def bundle_from_config(
    data: SyntheticConfig | TldrDataConfig | FilesDataConfig, progress: bool = True
) -> DataBundle:
    """The DataBundle a parsed `config.data` section describes."""
    if isinstance(data, SyntheticConfig):
        return synthetic_bundle(data)
    if isinstance(data, TldrDataConfig):
        return tldr_bundle(data, progress)
    if isinstance(data, FilesDataConfig):
        return files_bundle(data, progress)
    raise TypeError(f"unknown data config {type(data).__name__}; sources: {list(DATA_SOURCES)}")
