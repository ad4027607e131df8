"""Packing token lists into fixed-shape arrays, and a dataset whose batch is a function of step.

Layout (the one every objective reads): prompt left-padded to P, response right-padded to R,
`tokens` = prompt ++ response [N, P+R]; `mask` marks real tokens; `loss_mask` marks response
tokens (the targets). Batches are pure functions of (seed, step), so the data position in a
checkpoint is just the step and a resumed run sees exactly the batches it would have seen.
"""

from collections.abc import Sequence

import numpy as np


def pack_prompts(prompts: Sequence[Sequence[int]], length: int, pad_id: int):
    """Left-padded prompts: (tokens [N, P], mask [N, P])."""
    tokens = np.full((len(prompts), length), pad_id, np.int32)
    mask = np.zeros((len(prompts), length), bool)
    for i, p in enumerate(prompts):
        if not 0 < len(p) <= length:
            raise ValueError(
                f"prompt {i} has {len(p)} tokens; prompts need 1..{length} tokens "
                f"(raise data.prompt_len or truncate)."
            )
        tokens[i, length - len(p) :] = p
        mask[i, length - len(p) :] = True
    return tokens, mask


def pack_sequences(prompts, responses, prompt_len: int, response_len: int, pad_id: int) -> dict:
    """Prompt ++ response rows: {'tokens', 'mask', 'loss_mask'} each [N, P+R]."""
    p_tokens, p_mask = pack_prompts(prompts, prompt_len, pad_id)
    r_tokens = np.full((len(responses), response_len), pad_id, np.int32)
    r_mask = np.zeros((len(responses), response_len), bool)
    for i, r in enumerate(responses):
        r = list(r)[:response_len]
        r_tokens[i, : len(r)] = r
        r_mask[i, : len(r)] = True
    return {
        "tokens": np.concatenate([p_tokens, r_tokens], 1),
        "mask": np.concatenate([p_mask, r_mask], 1),
        "loss_mask": np.concatenate([np.zeros_like(p_mask), r_mask], 1),
    }


def pack_pairs(prompts, chosen, rejected, prompt_len: int, response_len: int, pad_id: int) -> dict:
    """Preference pairs: chosen_* and rejected_* versions of the sequence layout."""
    out = {}
    for name, responses in (("chosen", chosen), ("rejected", rejected)):
        for key, value in pack_sequences(
            prompts, responses, prompt_len, response_len, pad_id
        ).items():
            out[f"{name}_{key}"] = value
    return out


def shared_prefix_len(pairs: dict) -> int:
    """Leading columns in which every pair's chosen and rejected rows agree, tokens and mask,
    so `rlft.models.backbone_hidden` may run them once per pair (`Models.pair_prefix_len`): in
    rlft's layout (`pack_pairs`) the prompt at least, unless capped. At most T - 1, so each row
    keeps a column of its own; 0 for no pairs. Reads chosen_/rejected_ tokens and mask [N, T]
    (KeyError if one is missing); raises ValueError if their shapes differ."""
    chosen_NxT, rejected_NxT = (np.asarray(pairs[f"{s}_tokens"]) for s in ("chosen", "rejected"))
    chosen_mask_NxT, rejected_mask_NxT = (
        np.asarray(pairs[f"{s}_mask"]) for s in ("chosen", "rejected")
    )
    shapes = [x.shape for x in (chosen_NxT, rejected_NxT, chosen_mask_NxT, rejected_mask_NxT)]
    if len(set(shapes)) != 1:
        raise ValueError(
            "chosen_tokens, rejected_tokens, chosen_mask and rejected_mask must have one shape; "
            f"got {', '.join(map(str, shapes))}"
        )
    if chosen_NxT.shape[0] == 0:
        return 0
    same_NxT = (chosen_NxT == rejected_NxT) & (chosen_mask_NxT == rejected_mask_NxT)
    same_T = np.all(same_NxT, axis=0)
    differs = np.flatnonzero(~same_T)
    return int(max(min(differs[0] if differs.size else same_T.size, same_T.size - 1), 0))


class ArrayDataset:
    """Rows of equal-length arrays; `batch(step)` is deterministic in (seed, step)."""

    def __init__(self, arrays: dict[str, np.ndarray], batch_size: int, seed: int):
        sizes = {k: len(v) for k, v in arrays.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"dataset fields have different row counts: {sizes}")
        self.arrays, self.batch_size, self.seed = arrays, batch_size, seed
        self.num_rows = next(iter(sizes.values()))
        if self.num_rows == 0:
            raise ValueError("dataset is empty")
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            rng = np.random.default_rng([self.seed, epoch])
            self._perms = {epoch: rng.permutation(self.num_rows)}
        return self._perms[epoch]

    def indices(self, step: int) -> np.ndarray:
        """Row ids of batch `step`: a stream of per-epoch permutations, cut into batches."""
        flat = np.arange(step * self.batch_size, (step + 1) * self.batch_size)
        epochs, offsets = flat // self.num_rows, flat % self.num_rows
        return np.array([self._perm(int(e))[o] for e, o in zip(epochs, offsets, strict=True)])

    def batch(self, step: int) -> dict[str, np.ndarray]:
        idx = self.indices(step)
        return {k: v[idx] for k, v in self.arrays.items()}

    def epoch(self, step: int) -> float:
        return step * self.batch_size / self.num_rows
