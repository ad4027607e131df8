"""Model configuration and named presets, from a CPU-sized `tiny` up to the Pythia suite."""

import dataclasses
from typing import Any

# GPT-NeoX / Pythia shapes (deduped and standard share them). Vocab 50304 is the padded
# embedding size of the Pythia checkpoints; the tokenizer itself has 50277 entries.
_PYTHIA = dict(
    vocab_size=50304, rotary_pct=0.25, rotary_base=10000.0, parallel_residual=True, max_len=2048
)
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        vocab_size=64,
        num_layers=2,
        d_model=64,
        num_heads=4,
        d_ff=256,
        rotary_pct=0.25,
        parallel_residual=True,
        max_len=256,
    ),
    "small": dict(
        vocab_size=256,
        num_layers=4,
        d_model=128,
        num_heads=4,
        d_ff=512,
        rotary_pct=0.25,
        parallel_residual=True,
        max_len=512,
    ),
    "pythia-70m": dict(_PYTHIA, num_layers=6, d_model=512, num_heads=8, d_ff=2048),
    "pythia-160m": dict(_PYTHIA, num_layers=12, d_model=768, num_heads=12, d_ff=3072),
    "pythia-410m": dict(_PYTHIA, num_layers=24, d_model=1024, num_heads=16, d_ff=4096),
    "pythia-1.4b": dict(_PYTHIA, num_layers=24, d_model=2048, num_heads=16, d_ff=8192),
    "pythia-2.8b": dict(_PYTHIA, num_layers=32, d_model=2560, num_heads=32, d_ff=10240),
    "pythia-6.9b": dict(_PYTHIA, num_layers=32, d_model=4096, num_heads=32, d_ff=16384),
}
# Short aliases so configs can say `model.preset = "1.4b"`.
PRESETS.update({k.removeprefix("pythia-"): v for k, v in list(PRESETS.items()) if "pythia" in k})


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shape and numerics of a GPT-NeoX-style decoder."""

    vocab_size: int
    num_layers: int
    d_model: int
    num_heads: int
    d_ff: int
    rotary_pct: float = 0.25  # fraction of each head's dims that get rotary embeddings
    rotary_base: float = 10000.0
    parallel_residual: bool = True  # x + attn(ln1 x) + mlp(ln2 x), as in Pythia
    layer_norm_eps: float = 1e-5
    max_len: int = 2048
    dtype: str = "float32"  # compute dtype; params stay float32 ("bfloat16" for TPU runs)
    remat: bool = False  # rematerialise each block in the backward pass

    def __post_init__(self):
        if self.d_model % self.num_heads:
            raise ValueError(
                f"model.d_model={self.d_model} is not divisible by model.num_heads="
                f"{self.num_heads}; pick a head count that divides the width."
            )
        if self.rotary_dim % 2:
            raise ValueError(
                f"model.rotary_pct={self.rotary_pct} gives an odd rotary dim {self.rotary_dim} "
                f"(head dim {self.head_dim}); rotary needs an even number of dims."
            )
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"model.dtype={self.dtype!r}: use float32, bfloat16 or float16.")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.rotary_pct)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def model_config(preset: str, **overrides: Any) -> ModelConfig:
    """A preset by name with field overrides; unknown names and fields raise."""
    if preset not in PRESETS:
        raise ValueError(f"model.preset={preset!r} is unknown; choose one of {sorted(PRESETS)}.")
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown model field(s) {unknown}; valid fields: {sorted(fields)}.")
    return ModelConfig(**{**PRESETS[preset], **overrides})
