"""The arrays a stage trains on, whatever produced them (synthetic task, TL;DR, a pipeline)."""

import dataclasses

import numpy as np

from rlft.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class DataBundle:
    """Arrays in rlft's batch layout plus the token ids the stages must know.

    sft: tokens/mask/loss_mask (demonstrations); pairs: chosen_*/rejected_* (preferences);
    prompts: prompt_tokens/prompt_mask (for rollouts). A stage reads only the part it needs.
    `reference` (optional) holds reference responses in the sft layout, used to normalise the
    reward model; it defaults to `sft`.
    """

    eos_id: int
    pad_id: int
    vocab_size: int  # token ids are < vocab_size; must fit the model's embedding
    sft: dict[str, np.ndarray] | None = None
    pairs: dict[str, np.ndarray] | None = None
    prompts: dict[str, np.ndarray] | None = None
    reference: dict[str, np.ndarray] | None = None

    def require(self, part: str, stage: str) -> dict[str, np.ndarray]:
        arrays = getattr(self, part)
        if arrays is None:
            raise ValueError(f"the {stage} stage needs `{part}` data, which this run lacks")
        rows = min((len(a) for a in arrays.values()), default=0)
        if rows == 0:
            raise ConfigError(
                f"the {stage} stage's `{part}` data has no rows; check config.data (e.g. "
                "num_examples, max_rows, or the files under data_dir)"
            )
        return arrays
