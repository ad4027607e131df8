"""Bring your own data: `config.data.source = "files"` reads local files into a DataBundle.

Formats (docs/data.md), told apart by their columns, pre-tokenised ones first:

| part | pre-tokenised (TL;DR reproductions) | text (TRL) |
|---|---|---|
| sft | query_token + reference_response_token | prompt + completion, or text |
| pairs | query_token + chosen_token + rejected_token | prompt + chosen + rejected |
| prompts | query_token | prompt |

Files: JSONL, Parquet, Arrow, or a `datasets` save_to_disk folder, read by pyarrow
(rlft.data.tables; imported only when files are read). Text is
tokenised by the TL;DR rules (rlft.data.file_rows) and cached as .npz beside the data (or in
`cache_dir`), named by a hash of the files' sizes and mtimes, the tokenizer, the lengths, the
columns and FORMAT_VERSION. Bundle: `sft`, `pairs`, `prompts` (the prompts file, else the SFT
rows' prompts, else the pairs'), `reference` (the SFT rows, else the chosen side of the pairs).
"""

import dataclasses
import os
import re
import string

import numpy as np
from etils import epath

from rlft.data.arrays import pack_pairs, pack_prompts, pack_sequences
from rlft.data.bundle import DataBundle
from rlft.data.cache import cached_arrays, digest, text_tokenizer
from rlft.data.tldr import format as tldr_format
from rlft.data.tldr.format import MAX_QUERY_LEN, PAIR_RESPONSE_LEN, SFT_RESPONSE_LEN, Packed
from rlft.errors import ConfigError, check_ranges

FORMAT_VERSION = 1  # bump when what a file turns into changes (the cache key holds it)
CACHE_DIR = "rlft_arrays"  # beside the data file, unless config.data.cache_dir is set
PARTS = ("sft", "pairs", "prompts")
SPLITS = ("train", "validation")
# part -> (layout, column fields it needs), in the order they are tried
LAYOUTS = {
    "sft": (
        ("tokens", ("query_token_column", "response_token_column")),
        ("text", ("prompt_column", "completion_column")),
        ("lm", ("text_column",)),
    ),
    "pairs": (
        ("tokens", ("query_token_column", "chosen_token_column", "rejected_token_column")),
        ("text", ("prompt_column", "chosen_column", "rejected_column")),
    ),
    "prompts": (("tokens", ("query_token_column",)), ("text", ("prompt_column",))),
}


@dataclasses.dataclass(frozen=True)
class FilesDataConfig:
    """`config.data` with source="files" (docs/data.md)."""

    tokenizer: str = ""  # dir with tokenizer.json (the HF checkpoint dir) or the file
    sft_train: str = ""  # file or save_to_disk folder: SFT rows
    sft_validation: str = ""
    pairs_train: str = ""  # preference rows (reward, DPO)
    pairs_validation: str = ""
    prompts_train: str = ""  # prompt-only rows (PPO); empty: the SFT rows' (else pairs') prompts
    prompts_validation: str = ""
    split: str = "train"  # which paths this stage reads: train | validation
    parts: tuple[str, ...] = ()  # parts to build; () = every part whose path is set
    max_prompt_len: int = MAX_QUERY_LEN  # P: prompt tokens (text prompts are cut to fit)
    response_len: int = SFT_RESPONSE_LEN  # R of sft rows: completion + EOS; longer dropped
    pair_response_len: int = PAIR_RESPONSE_LEN  # R of pairs: chosen/rejected + EOS
    prompt_template: str = ""  # str.format over columns; "" = "{<prompt_column>}"
    prompt_column: str = "prompt"  # the column cut when a prompt is too long
    completion_column: str = "completion"
    text_column: str = "text"  # plain-text SFT rows (the whole text is the target)
    chosen_column: str = "chosen"
    rejected_column: str = "rejected"
    query_token_column: str = "query_token"  # pre-tokenised, left-padded prompt ids
    response_token_column: str = "reference_response_token"  # SFT response ids (EOS inside)
    chosen_token_column: str = "chosen_token"
    rejected_token_column: str = "rejected_token"
    token_pad_id: int = -1  # pad id removed from token columns; -1 = the tokenizer's [PAD]
    max_rows: int = 0  # rows read per file (0 = all); smoke runs
    cache_dir: str = ""  # where tokenised .npz go; "" = rlft_arrays/ beside each data file

    def __post_init__(self):
        """Raises ConfigError naming the field: empty tokenizer, unknown part or split, a
        part without a path, a length out of range, or a template without its prompt column."""
        object.__setattr__(self, "parts", tuple(self.parts))
        if not self.tokenizer:
            raise ConfigError("data.tokenizer is empty; give the dir with tokenizer.json")
        if self.split not in SPLITS:
            raise ConfigError(f"data.split={self.split!r}; choose one of {SPLITS}")
        unknown = sorted(set(self.parts) - set(PARTS))
        if unknown:
            raise ConfigError(f"data.parts={self.parts}: choose from {PARTS}")
        for part in self.parts:
            if not self.path(part) and not (part == "prompts" and self.path("sft")):
                raise ConfigError(f"data.parts has {part!r} but data.{part}_{self.split} is empty")
        if not self.active_parts():
            raise ConfigError(
                f"data.sft_{self.split} and data.pairs_{self.split} are empty; give a file"
            )
        check_ranges(
            "data",
            vars(self),
            {
                "max_prompt_len": ("int >= 1", "prompt tokens; TL;DR uses 512"),
                "response_len": ("int >= 1", "SFT response tokens with EOS; TL;DR uses 53"),
                "pair_response_len": ("int >= 1", "chosen/rejected tokens with EOS"),
                "token_pad_id": ("int >= -1", "-1 = the tokenizer's [PAD]"),
                "max_rows": ("int >= 0", "rows read per file; 0 = all"),
            },
        )
        if f"{{{self.prompt_column}}}" not in self.template():
            raise ConfigError(
                f"data.prompt_template={self.prompt_template!r} lacks "
                f"{{{self.prompt_column}}} (data.prompt_column, the part cut to fit)"
            )

    def path(self, part: str) -> str:
        return getattr(self, f"{part}_{self.split}")

    def active_parts(self) -> tuple[str, ...]:
        return self.parts or tuple(p for p in PARTS if self.path(p))

    def template(self) -> str:
        return self.prompt_template or f"{{{self.prompt_column}}}"


def _layout(cfg: FilesDataConfig, part: str, columns: list[str], where: str) -> str:
    """The first layout of `part` whose columns the file has, else ConfigError naming the
    closest layout's missing column and the config field that renames it."""
    misses = []
    for layout, fields in LAYOUTS[part]:
        missing = [f for f in fields if getattr(cfg, f) not in columns]
        if not missing:
            return layout
        misses.append((len(missing) / len(fields), layout != "text", missing[0]))
    _, _, field = min(misses)
    wanted = " | ".join("+".join(getattr(cfg, f) for f in fields) for _, fields in LAYOUTS[part])
    raise ConfigError(
        f"{where}: no column {getattr(cfg, field)!r} (columns: {columns}); {part} rows need "
        f"{wanted}; set config.data.{field} to the column that holds it"
    )


def _template_columns(cfg: FilesDataConfig) -> dict[str, str]:
    names = [n for _, n, _, _ in string.Formatter().parse(cfg.template()) if n]
    return {n: "prompt_template" for n in names} | {cfg.prompt_column: "prompt_column"}


def _text_packed(cfg, part, layout, table, tok, where, progress) -> Packed:
    """Text rows tokenised by the TL;DR rules (rlft.data.file_rows)."""
    from rlft.data import file_rows  # noqa: PLC0415 (pyarrow: imported when files are read)

    if layout == "lm":
        columns = {cfg.text_column: "text_column"}
        encode_q, encode_r, p = file_rows.lm_query, file_rows.lm_response, 1
    else:
        columns = _template_columns(cfg)
        encode_q = file_rows.prompt_encoder(cfg.template(), cfg.prompt_column, where)
        encode_r, p = tldr_format.encode_responses, cfg.max_prompt_len
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ConfigError(
            f"{where}: no column {missing[0]!r} (columns: {table.column_names}), named by "
            f"config.data.{columns[missing[0]]}; fix the template or the file"
        )
    if part == "prompts":
        rows = file_rows.text_rows(table, columns, where)
        tokens, mask = pack_prompts(encode_q(rows, tok, p), p, tok.pad_id)
        kept = np.asarray([r[file_rows.ROW] for r in rows], np.int64)
        return Packed({"prompt_tokens": tokens, "prompt_mask": mask}, kept)
    response_fields = {
        "lm": ("text_column",),
        "text": ("chosen_column", "rejected_column") if part == "pairs" else ("completion_column",),
    }[layout]
    fields = [getattr(cfg, f) for f in response_fields]
    rows = file_rows.text_rows(
        table, columns | dict(zip(fields, response_fields, strict=True)), where
    )
    r = cfg.pair_response_len if part == "pairs" else cfg.response_len
    q, rs, kept = tldr_format._pack_responses(  # noqa: SLF001 (the TL;DR rules, shared)
        rows, tok, p, r, fields, True, progress, f"{where} {part}", encode_q, encode_r
    )
    kept = np.asarray(kept, np.int64)
    if part == "sft":
        return Packed(pack_sequences(q, rs[0], p, r, tok.pad_id), kept)
    return Packed(pack_pairs(q, rs[0], rs[1], p, r, tok.pad_id), kept)


def _token_packed(cfg, part, table, vocab_size, pad_id, where) -> Packed:
    """Pre-tokenised rows as they are (rlft.data.file_rows.pack_tokens)."""
    from rlft.data import file_rows  # noqa: PLC0415

    fields = dict(LAYOUTS[part])["tokens"]
    strip = cfg.token_pad_id if cfg.token_pad_id >= 0 else pad_id
    cols = [
        file_rows.token_column(table, getattr(cfg, f), f, where, vocab_size, strip) for f in fields
    ]
    r = cfg.pair_response_len if part == "pairs" else cfg.response_len
    lengths = (cfg.max_prompt_len, r)
    return file_rows.pack_tokens(
        part, cols[0], cols[1:], lengths, pad_id, where, cfg.query_token_column
    )


def _cache_path(cfg: FilesDataConfig, part: str, path: str, key: dict) -> epath.Path:
    folder = cfg.cache_dir or os.path.join(os.path.dirname(os.path.abspath(path)), CACHE_DIR)
    fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    for name in ("cache_dir", "parts", *(f"{p}_{s}" for p in PARTS for s in SPLITS)):
        fields.pop(name)
    full = key | fields | {"part": part, "format": FORMAT_VERSION}
    stem = re.sub(r"[^A-Za-z0-9]+", "-", os.path.basename(os.path.normpath(path))).strip("-")
    return epath.Path(folder) / f"{part}_{stem}_{digest(full)}.npz"


def _part(cfg: FilesDataConfig, part: str, tok_info, progress: bool) -> dict:
    """One part's arrays, from the cache or read and tokenised now."""
    from rlft.data.tables import file_stamps, read_table  # noqa: PLC0415 (pyarrow)

    tok, vocab_size, fingerprint = tok_info
    path, field = cfg.path(part), f"config.data.{part}_{cfg.split}"
    key = {"tokenizer": fingerprint, "files": file_stamps(path, field)}

    def build() -> Packed:
        table = read_table(path, field, cfg.max_rows)
        layout = _layout(cfg, part, table.column_names, path)
        if layout == "tokens":
            return _token_packed(cfg, part, table, vocab_size, tok.pad_id, path)
        return _text_packed(cfg, part, layout, table, tok, path, progress)

    arrays = cached_arrays(_cache_path(cfg, part, path, key), build)
    if not len(next(iter(arrays.values()))):
        length = "pair_response_len" if part == "pairs" else "response_len"
        raise ConfigError(
            f"{path}: no {part} rows left: every response + EOS is longer than "
            f"config.data.{length}={getattr(cfg, length)} tokens; raise it"
        )
    return arrays


def _prompt_block(seqs: dict, prefix: str = "") -> dict:
    """The prompt block [N, P] of sequence arrays: P is the first column every row's loss
    covers (each response holds at least its EOS there)."""
    p = int(np.argmax(seqs[f"{prefix}loss_mask"].any(0)))
    return {
        "prompt_tokens": seqs[f"{prefix}tokens"][:, :p],
        "prompt_mask": seqs[f"{prefix}mask"][:, :p],
    }


def files_bundle(cfg: FilesDataConfig, progress: bool = True) -> DataBundle:
    """The DataBundle of `cfg`'s files for `cfg.split` (see the module docstring).

    sft: tokens/mask/loss_mask [N, P+R]; pairs: chosen_*/rejected_* [M, P+R_pair]; prompts:
    prompt_tokens/prompt_mask [K, P] (P = max_prompt_len, 1 for plain-text SFT rows).
    Raises ConfigError naming the field, file, row and column of what cannot be read."""
    tok_info = text_tokenizer(cfg.tokenizer)
    tok, vocab_size, _ = tok_info
    parts = cfg.active_parts()
    if "prompts" in parts and not cfg.path("prompts"):  # the SFT rows' prompts
        parts = (*parts, "sft")
    out = {p: _part(cfg, p, tok_info, progress) for p in dict.fromkeys(parts) if cfg.path(p)}
    sft, pairs, prompts = out.get("sft"), out.get("pairs"), out.get("prompts")
    if prompts is None and (sft is not None or pairs is not None):  # the SFT rows', or pairs'
        prompts = _prompt_block(sft) if sft is not None else _prompt_block(pairs, "chosen_")
    if cfg.parts and "sft" not in cfg.parts:
        sft = None  # read for its prompts only
    reference = sft
    if sft is None and pairs is not None:  # the chosen responses normalise the reward model
        reference = {k.removeprefix("chosen_"): v for k, v in pairs.items() if "chosen_" in k}
    return DataBundle(
        eos_id=tok.eos_id,
        pad_id=tok.pad_id,
        vocab_size=vocab_size,
        sft=sft,
        pairs=pairs,
        prompts=prompts,
        reference=reference,
    )
