"""Columns of a pyarrow Table -> rlft arrays, by the TL;DR path's rules (rlft.data.tldr.format).

Text rows: the prompt is `template` filled from the row's columns, cut at the end of its
`cut_column` (newline, then space, then character: `truncated_text`) until it fits P tokens, so
the text after it (a marker such as "TL;DR:" or "Assistant:") survives; each response is
`" " + text.strip()` + EOS (`encode_responses`); rows whose response + EOS exceeds R are dropped
with a warning. Pre-tokenised rows (the TL;DR reproductions' `query_token` ...) are used as they
are: pad ids removed, nothing appended, prompts never cut. Every check raises ConfigError naming
the file, the row (counted from 0) and the column.
"""

import logging
from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rlft.data.arrays import pack_pairs, pack_prompts, pack_sequences
from rlft.data.tables import first_null
from rlft.data.tldr import format as tldr_format
from rlft.data.tldr.format import Packed, TextTokenizer
from rlft.errors import ConfigError

log = logging.getLogger(__name__)
ROW = "__row__"  # the table row a text row came from, carried through the TL;DR encoders


def _fix(field: str) -> str:
    return f"set config.data.{field} to the column that holds it, or fix the file"


def text_rows(table: pa.Table, columns: dict[str, str], where: str) -> list[dict]:
    """Rows as {column: str, ROW: index}; `columns` maps each column to its config field.

    Raises ConfigError for a non-text column (e.g. a conversational list of messages) or a
    null, naming the file, the row and the column."""
    for name, field in columns.items():
        col = table.column(name)
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            raise ConfigError(
                f"{where}: column {name!r} ({field}) holds {col.type}, not text; conversational "
                "rows (lists of messages) need a chat template applied first, outside rlft"
            )
        bad = first_null(col)
        if bad is not None:
            raise ConfigError(
                f"{where}: row {bad}, column {name!r}: null or missing; fill it or drop the row "
                f"(config.data.{field} names the column)"
            )
    rows = table.select(list(columns)).to_pylist()
    return [r | {ROW: i} for i, r in enumerate(rows)]


def prompt_encoder(template: str, cut_column: str, where: str) -> Callable:
    """encode_q(rows, tok, P) for tldr_format._pack_responses: `template.format_map(row)`,
    its `cut_column` cut (as TL;DR cuts the post) when it exceeds P tokens."""

    def render(row: dict, cut: str | None = None) -> str:
        return template.format_map(row if cut is None else row | {cut_column: cut})

    def encode_q(rows: list[dict], tok: TextTokenizer, max_len: int) -> list[list[int]]:
        out = []
        for row, ids in zip(rows, tok.encode_many([render(r) for r in rows]), strict=True):
            if len(ids) > max_len:
                cut = lambda text, row=row: render(row, text)  # noqa: E731
                ids = tldr_format.truncated_text(row[cut_column], cut, tok, max_len)
                if ids is None:
                    raise ConfigError(
                        f"{where}: row {row[ROW]}: the prompt without column {cut_column!r} "
                        f"already exceeds config.data.max_prompt_len={max_len} tokens; raise it"
                    )
            if not ids:
                raise ConfigError(
                    f"{where}: row {row[ROW]}, column {cut_column!r}: the prompt has no tokens; "
                    "drop the row or fill its prompt"
                )
            out.append(ids)
        return out

    return encode_q


def lm_query(rows: list[dict], tok: TextTokenizer, max_len: int) -> list[list[int]]:
    """Plain-text rows: the prompt is the one token EOS (GPT-2's document separator), so the
    loss covers every text token."""
    return [[tok.eos_id] for _ in rows]


def lm_response(texts: list[str], tok: TextTokenizer) -> list[list[int]]:
    """Plain text as it is (no leading space, not stripped) + EOS."""
    return [ids + [tok.eos_id] for ids in tok.encode_many(texts)]


def token_column(
    table: pa.Table, name: str, field: str, where: str, vocab_size: int, pad_id: int
) -> list[list[int]]:
    """A list-of-int column with every `pad_id` removed; raises ConfigError naming the row and
    the column for nulls, non-integer lists, or ids outside [0, vocab_size)."""
    col = table.column(name)
    lists = (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)) and (
        pa.types.is_integer(col.type.value_type)
    )
    if not lists:
        raise ConfigError(
            f"{where}: column {name!r} ({field}) holds {col.type}, not lists of token ids; "
            f"{_fix(field)}"
        )
    bad = first_null(col)
    if bad is not None:
        raise ConfigError(
            f"{where}: row {bad}, column {name!r}: null; fill it or drop the row "
            f"(config.data.{field} names the column)"
        )
    col = pa.chunked_array([c.cast(pa.large_list(pa.int64())) for c in col.chunks])
    flat = pc.list_flatten(col).to_numpy()
    out_of_range = (flat < 0) | (flat >= vocab_size)
    if out_of_range.any():
        parents = pc.list_parent_indices(col).to_numpy()
        i = int(np.argmax(out_of_range))
        raise ConfigError(
            f"{where}: row {parents[i]}, column {name!r}: token id {flat[i]} is outside the "
            f"tokenizer's [0, {vocab_size}); use the tokenizer the data was made with "
            "(config.data.tokenizer)"
        )
    return [[t for t in ids if t != pad_id] for ids in col.to_pylist()]


def pack_tokens(
    part: str,
    queries: list[list[int]],
    responses: Sequence[list[list[int]]],
    lengths: tuple[int, int],
    pad_id: int,
    where: str,
    query_column: str,
) -> Packed:
    """Pre-tokenised rows of `part` packed as they are; rows with a response over R dropped.

    Raises ConfigError for an empty or over-long prompt (pre-tokenised prompts are never cut).
    """
    p, r = lengths
    for i, q in enumerate(queries):
        if not 0 < len(q) <= p:
            raise ConfigError(
                f"{where}: row {i}, column {query_column!r}: {len(q)} prompt tokens (pad "
                f"removed); they must number 1..config.data.max_prompt_len={p} (raise it)"
            )
    kept = [i for i in range(len(queries)) if all(len(rs[i]) <= r for rs in responses)]
    if len(kept) < len(queries):
        log.warning(
            "%s: dropped %d of %d rows whose response exceeds %d tokens",
            where,
            len(queries) - len(kept),
            len(queries),
            r,
        )
    q = [queries[i] for i in kept]
    rs = [[x[i] for i in kept] for x in responses]
    if part == "prompts":
        tokens, mask = pack_prompts(q, p, pad_id)
        arrays = {"prompt_tokens": tokens, "prompt_mask": mask}
    elif part == "sft":
        arrays = pack_sequences(q, rs[0], p, r, pad_id)
    else:
        arrays = pack_pairs(q, rs[0], rs[1], p, r, pad_id)
    return Packed(arrays, np.asarray(kept, np.int64))
