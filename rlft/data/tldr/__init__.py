"""Reddit TL;DR (OpenAI summarize-from-feedback): TFDS builders and formatting into rlft arrays.

`rlft.data.tldr.builders` (TldrSft, TldrComparisons, prepare_tldr) needs the `data` extra
(tensorflow-datasets, array-record; no TensorFlow) and is imported on first use; formatting
needs only numpy and a tokenizer. See docs/tldr.md.
"""

from rlft.data.tldr.format import (
    MAX_QUERY_LEN,
    PAIR_RESPONSE_LEN,
    QUERY_FORMAT,
    SFT_RESPONSE_LEN,
    Packed,
    TextTokenizer,
    decode_row,
    format_query,
    pair_arrays,
    prompt_arrays,
    sft_arrays,
    truncated_query,
)

_BUILDERS = ("TldrComparisons", "TldrSft", "prepare_tldr")

__all__ = [
    "MAX_QUERY_LEN",
    "PAIR_RESPONSE_LEN",
    "QUERY_FORMAT",
    "SFT_RESPONSE_LEN",
    "Packed",
    "TextTokenizer",
    "decode_row",
    "format_query",
    "pair_arrays",
    "prompt_arrays",
    "sft_arrays",
    "truncated_query",
    *_BUILDERS,
]


def __getattr__(name: str):
    if name in _BUILDERS:  # tensorflow_datasets is imported only when a builder is asked for
        from rlft.data.tldr import builders

        return getattr(builders, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
