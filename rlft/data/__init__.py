"""Datasets as arrays in the batch layout the objectives read, with step-indexed batching."""

from rlft.data.arrays import (
    ArrayDataset,
    pack_pairs,
    pack_prompts,
    pack_sequences,
    shared_prefix_len,
)

__all__ = ["ArrayDataset", "pack_pairs", "pack_prompts", "pack_sequences", "shared_prefix_len"]
