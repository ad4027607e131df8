"""TL;DR rows -> rlft's batch layout: the paper's query format, post truncation, tokenising.

Query: QUERY_FORMAT, `SUBREDDIT: r/{subreddit}\\n\\nTITLE: {title}\\n\\nPOST: {post}\\n\\nTL;DR:`,
tokenised as one string. A query longer than `max_query_len` tokens loses the end of its
post, cut at the last newline, then (once no newline is left) at the last space, then a
character at a time, until it fits (OpenAI's summarize-from-feedback cuts one newline at a
time). Responses are `" " + summary.strip()` followed by EOS. Rows are dicts from a TFDS data
source (bytes values) or any sequence of dicts with str values; tokenising stays on the host,
in numpy.
"""

import dataclasses
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from tqdm.auto import tqdm

from rlft.data.arrays import pack_pairs, pack_prompts, pack_sequences

QUERY_FORMAT = "SUBREDDIT: r/{subreddit}\n\nTITLE: {title}\n\nPOST: {post}\n\nTL;DR:"
MAX_QUERY_LEN = 512  # tokens, the paper's query length
SFT_RESPONSE_LEN = 53  # tokens including EOS, the paper's summary length
PAIR_RESPONSE_LEN = 128  # comparison summaries (policy samples) run longer than SFT references
EOS_TOKEN = "<|endoftext|>"  # GPT-NeoX / Pythia
PAD_TOKEN = "[PAD]"  # added by rlft.models.hf_files.load_tokenizer
CHUNK = 1024  # rows tokenised per batch call

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TextTokenizer:
    """What formatting needs from a tokenizer: encode, decode, and the PAD/EOS ids."""

    encode: Callable[[str], list[int]]
    decode: Callable[[Sequence[int]], str]
    pad_id: int
    eos_id: int
    encode_batch: Callable[[list[str]], list[list[int]]] | None = None  # optional fast path

    def encode_many(self, texts: list[str]) -> list[list[int]]:
        if self.encode_batch is not None:
            return self.encode_batch(texts)
        return [self.encode(t) for t in texts]

    @classmethod
    def from_hf(
        cls, tokenizer, eos_token: str = EOS_TOKEN, pad_token: str = PAD_TOKEN
    ) -> "TextTokenizer":
        """Adapter for a `tokenizers.Tokenizer` (e.g. from rlft.models.hf_files.load_tokenizer)."""
        ids = {}
        for role, token in (("eos", eos_token), ("pad", pad_token)):
            ids[role] = tokenizer.token_to_id(token)
            if ids[role] is None:
                raise ValueError(
                    f"tokenizer has no {role} token {token!r}; pass {role}_token= (load it with "
                    f"rlft.models.hf_files.load_tokenizer, which adds {PAD_TOKEN})"
                )
        return cls(
            encode=lambda text: tokenizer.encode(text, add_special_tokens=False).ids,
            decode=lambda ids: tokenizer.decode(list(ids), skip_special_tokens=False),
            pad_id=ids["pad"],
            eos_id=ids["eos"],
            encode_batch=lambda texts: [
                e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)
            ],
        )


def as_text(value: Any) -> str:
    """TFDS Text features arrive as UTF-8 bytes."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def decode_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A TFDS example with bytes -> str and numpy scalars -> python numbers."""

    def plain(v):
        if isinstance(v, bytes):
            return v.decode("utf-8")
        return v.item() if isinstance(v, np.generic | np.ndarray) and np.ndim(v) == 0 else v

    return {k: plain(v) for k, v in row.items()}


def format_query(row: Mapping[str, Any], post: str | None = None) -> str:
    """The query text of a row (optionally with a truncated `post`)."""
    return QUERY_FORMAT.format(
        subreddit=as_text(row["subreddit"]),
        title=as_text(row["title"]),
        post=as_text(row["post"]) if post is None else post,
    )


def _cut_lengths(post: str) -> list[int]:
    """Post prefix lengths in the order the cut-one-at-a-time loop visits them."""
    cuts = [len(post)] + [i for i in range(len(post) - 1, -1, -1) if post[i] == "\n"]
    cuts += [i for i in range(cuts[-1] - 1, -1, -1) if post[i] == " "]
    return cuts + list(range(cuts[-1] - 1, -1, -1))


def truncated_text(
    text: str, render: Callable[[str], str], tok: TextTokenizer, max_len: int
) -> list[int] | None:
    """Tokens of `render(text[:cut])` for the longest cut (at a newline, else a space, else a
    character) that fits `max_len` tokens; None when even `render("")` does not fit.

    Binary search over the cut points: it returns the cut-one-at-a-time loop's answer whenever
    a longer prefix never tokenises shorter, which holds for BPE away from pathological merges.
    """
    cuts = _cut_lengths(text)
    tokens: dict[int, list[int]] = {}

    def fits(i: int) -> bool:
        if i not in tokens:
            tokens[i] = tok.encode(render(text[: cuts[i]]))
        return len(tokens[i]) <= max_len

    if not fits(len(cuts) - 1):
        return None
    lo, hi = 0, len(cuts) - 1  # answer in [lo, hi]; cuts[hi] fits
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(mid):
            hi = mid
        else:
            lo = mid + 1
    return tokens[lo]


def truncated_query(row: Mapping[str, Any], tok: TextTokenizer, max_query_len: int) -> list[int]:
    """Query tokens with the post cut (at a newline, else a space) so they fit max_query_len.

    Raises ValueError naming the row when the query without its post is already too long.
    """
    tokens = truncated_text(
        as_text(row["post"]), lambda post: format_query(row, post), tok, max_query_len
    )
    if tokens is None:
        raise ValueError(
            f"row {as_text(row.get('id', '?'))}: the query without its post already has "
            f"{len(tok.encode(format_query(row, '')))} tokens > max_query_len={max_query_len}"
        )
    return tokens


def response_text(summary: Any) -> str:
    return " " + as_text(summary).strip()


def _chunks(source: Sequence, progress: bool, desc: str) -> Iterator[tuple[int, list]]:
    """(start, rows) in CHUNK-sized reads; TFDS data sources read a chunk at once."""
    n = len(source)
    get_many = getattr(source, "__getitems__", None)
    with tqdm(total=n, desc=desc, disable=not progress, unit="rows") as bar:
        for start in range(0, n, CHUNK):
            idx = list(range(start, min(n, start + CHUNK)))
            yield start, list(get_many(idx)) if get_many else [source[i] for i in idx]
            bar.update(len(idx))


def encode_queries(rows: list[Mapping], tok: TextTokenizer, max_query_len: int) -> list[list[int]]:
    full = tok.encode_many([format_query(r) for r in rows])
    return [
        q if len(q) <= max_query_len else truncated_query(r, tok, max_query_len)
        for r, q in zip(rows, full, strict=True)
    ]


def encode_responses(texts: list[Any], tok: TextTokenizer) -> list[list[int]]:
    return [ids + [tok.eos_id] for ids in tok.encode_many([response_text(t) for t in texts])]


class Packed(NamedTuple):
    arrays: dict[str, np.ndarray]  # rlft's batch layout
    rows: np.ndarray  # source row of each packed row (rows dropped for long responses absent)


def prompt_arrays(
    source: Sequence[Mapping],
    tok: TextTokenizer,
    max_query_len: int = MAX_QUERY_LEN,
    dedupe: bool = False,
    progress: bool = True,
) -> Packed:
    """{'prompt_tokens', 'prompt_mask'} [N, max_query_len], left-padded queries.

    `dedupe` keeps the first row of each post id (comparisons hold many rows per post).
    """
    queries, kept, seen = [], [], set()
    for start, rows in _chunks(source, progress, "tl;dr prompts"):
        if dedupe:
            offsets = []
            for i, r in enumerate(rows):
                if as_text(r["id"]) not in seen:
                    seen.add(as_text(r["id"]))
                    offsets.append(i)
            rows = [rows[i] for i in offsets]
        else:
            offsets = range(len(rows))
        queries += encode_queries(rows, tok, max_query_len)
        kept += [start + i for i in offsets]
    tokens, mask = pack_prompts(queries, max_query_len, tok.pad_id)
    return Packed({"prompt_tokens": tokens, "prompt_mask": mask}, np.asarray(kept, np.int64))


def _pack_responses(
    source,
    tok,
    max_query_len,
    response_len,
    fields,
    drop_long,
    progress,
    desc,
    encode_q=encode_queries,
    encode_r=encode_responses,
) -> tuple[list, list[list], list[int]]:
    """Queries, per-field encoded responses and kept row ids; over-long rows dropped or cut.

    `encode_q(rows, tok, max_query_len)` and `encode_r(values, tok)` default to the TL;DR
    query format and `" " + text.strip()` + EOS (rlft.data.files passes its own prompts).
    """
    queries, responses, kept, dropped = [], [[] for _ in fields], [], 0
    for start, rows in _chunks(source, progress, desc):
        q = encode_q(rows, tok, max_query_len)
        rs = [encode_r([r[f] for r in rows], tok) for f in fields]
        for i in range(len(rows)):
            if drop_long and any(len(r[i]) > response_len for r in rs):
                dropped += 1
                continue
            queries.append(q[i])
            for out, r in zip(responses, rs, strict=True):
                out.append(r[i])
            kept.append(start + i)
    if dropped:
        log.warning(
            "%s: dropped %d of %d rows whose response + EOS exceeds response_len=%d tokens",
            desc,
            dropped,
            len(source),
            response_len,
        )
    return queries, responses, kept


def sft_arrays(
    source: Sequence[Mapping],
    tok: TextTokenizer,
    max_query_len: int = MAX_QUERY_LEN,
    response_len: int = SFT_RESPONSE_LEN,
    drop_long: bool = True,
    progress: bool = True,
) -> Packed:
    """{'tokens', 'mask', 'loss_mask'} [N, max_query_len + response_len] from query + summary.

    Rows whose summary + EOS exceeds `response_len` are dropped (`drop_long`) or cut (their EOS
    is lost, so the model would not learn to stop on them).
    """
    q, (r,), kept = _pack_responses(
        source, tok, max_query_len, response_len, ("summary",), drop_long, progress, "tl;dr sft"
    )
    arrays = pack_sequences(q, r, max_query_len, response_len, tok.pad_id)
    return Packed(arrays, np.asarray(kept, np.int64))


def pair_arrays(
    source: Sequence[Mapping],
    tok: TextTokenizer,
    max_query_len: int = MAX_QUERY_LEN,
    response_len: int = PAIR_RESPONSE_LEN,
    drop_long: bool = True,
    progress: bool = True,
) -> Packed:
    """chosen_* / rejected_* {'tokens', 'mask', 'loss_mask'} from comparison rows.

    A row is dropped (`drop_long`) when either summary + EOS exceeds `response_len`.
    """
    q, (c, r), kept = _pack_responses(
        source,
        tok,
        max_query_len,
        response_len,
        ("chosen", "rejected"),
        drop_long,
        progress,
        "tl;dr pairs",
    )
    arrays = pack_pairs(q, c, r, max_query_len, response_len, tok.pad_id)
    return Packed(arrays, np.asarray(kept, np.int64))
