"""What every tokenising data source shares: the tokenizer it reads and the .npz array cache.

`rlft.data.sources` (TL;DR) and `rlft.data.files` (your own files) both tokenise on the host
once and keep the arrays as .npz beside the data, named by a hash of everything that changes
them, so later stages and reruns load instead of tokenising again.
"""

import hashlib
import json
import logging
import os

import jax
import numpy as np
from etils import epath

from rlft.data.tldr import format as tldr_format
from rlft.errors import ConfigError
from rlft.models.hf_files import load_tokenizer

log = logging.getLogger(__name__)
NO_VOCAB_LIMIT = 2**31 - 1  # the embedding check is build_stage's, against config.model


def text_tokenizer(path: str, field: str = "config.data.tokenizer"):
    """(TextTokenizer, vocab size incl. [PAD], sha256 of the tokenizer) of `path`, a directory
    with tokenizer.json or the file; raises ConfigError naming `field` if it cannot be read."""
    try:
        hf = load_tokenizer(path, vocab_size=NO_VOCAB_LIMIT)
        tok = tldr_format.TextTokenizer.from_hf(hf)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"{field}={path!r}: {e}") from e
    vocab_size = max(hf.get_vocab(with_added_tokens=True).values()) + 1
    fingerprint = hashlib.sha256(hf.to_str().encode()).hexdigest()
    return tok, vocab_size, fingerprint


def digest(key: dict) -> str:
    """16 hex digits of sha256 over `key` as sorted JSON: the cache file's name part."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def cached_arrays(path: epath.Path, build) -> dict[str, np.ndarray]:
    """Arrays from `path`, or `build()` (a tldr.format.Packed) saved there; process 0 writes,
    atomically (a temporary file renamed), so a killed run never leaves half a cache."""
    if path.exists():
        with path.open("rb") as f:
            data = dict(np.load(f))
        data.pop("rows")
        log.info("loaded tokenised arrays from %s", path)
        return data
    packed = build()
    if jax.process_index() == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f"{path.name}.tmp{os.getpid()}"
        with tmp.open("wb") as f:
            np.savez(f, rows=packed.rows, **packed.arrays)
        tmp.rename(path)
        log.info("cached tokenised arrays in %s", path)
    return packed.arrays
