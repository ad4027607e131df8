"""Fields every stage config shares, with their meaning; `configs/*.py` start from here."""

import ml_collections

from rlft.errors import ConfigError


def base_config(objective: str, tiny: bool) -> ml_collections.ConfigDict:
    """A complete config for `objective`; `tiny` sizes it for a CPU smoke run."""
    c = ml_collections.ConfigDict()
    c.objective = objective  # sft (alias mle) | reward | dpo | ppo (rlft.objectives.OBJECTIVES)
    c.seed = 0  # init, data order and sampling
    c.total_steps = 200 if tiny else 2000  # loop steps (PPO: rollout iterations)
    c.batch_size = 32 if tiny else 64  # rows per step (pairs for reward/DPO, prompts for PPO)
    c.checkpoint_every = 100 if tiny else 500  # loop steps between checkpoints
    c.log_every = 10 if tiny else 50  # loop steps between metrics.jsonl rows

    c.model = ml_collections.ConfigDict()
    c.model.preset = "tiny" if tiny else "small"  # a name in rlft.models.PRESETS
    c.model.dtype = "float32"  # compute dtype ("bfloat16" on TPU); params stay float32
    c.model.remat = False  # recompute blocks in the backward pass to save memory

    c.optim = ml_collections.ConfigDict()
    c.optim.learning_rate = 1e-3 if tiny else 3e-4  # peak; the paper's Pythia runs use 3e-6
    c.optim.schedule = "cosine"  # constant | linear | cosine, decaying over the run
    c.optim.warmup_steps = 0
    c.optim.end_lr_frac = 0.0  # final lr as a fraction of the peak
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.eps = 1e-5  # AdamW eps as in the paper's code
    c.optim.weight_decay = 0.0
    c.optim.max_grad_norm = 1.0  # global-norm clipping (0 disables)
    c.optim.accum_steps = 1  # micro-batches per update: batch_size / accum_steps rows each

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # data-parallel ways; -1 uses every device not used by fsdp
    c.mesh.fsdp = 1  # parameter-sharding ways (e.g. 4 on a v4-8 for 2.8B models)

    c.data = ml_collections.ConfigDict()  # the in-process synthetic "reverse" task
    c.data.vocab_size = 64  # must fit model vocab_size
    c.data.num_examples = 2048 if tiny else 16384  # prompts; SFT demos and pairs each
    c.data.max_items = 6  # content tokens per prompt; prompt and response lengths are this + 1
    c.data.noise = 0.15  # corruption of SFT demonstrations (the noisy "human")
    c.data.pair_noise_max = 0.6  # pair responses get noise ~ U(0, this)
    c.data.bt_scale = 8.0  # Bradley-Terry temperature of the preference labels
    c.data.seed = 1234  # dataset seed, independent of the run seed

    c.init = ml_collections.ConfigDict()
    c.init.policy = ""  # workdir of the stage that trained the starting policy
    c.init.reward = ""  # workdir of the reward-model stage (PPO)
    c.init.reference = ""  # reference policy workdir; empty = same as init.policy
    return c


VARIANT_QUERY = "?"  # get_config("?") raises VariantQuery: how `rlft train --help` lists variants


class VariantQuery(ConfigError):
    """Raised by parse_arg for VARIANT_QUERY: the variant fields a config file accepts."""

    def __init__(self, file: str, fields: dict, usage: str = ""):
        self.file, self.fields, self.usage = file, fields, usage
        super().__init__(self.describe())

    def describe(self) -> str:
        parts = [
            f"{name} (any, default {allowed!r})"
            if isinstance(allowed, str)
            else f"{name}: {' | '.join(a or '(none)' for a in allowed)}"
            for name, allowed in self.fields.items()
        ]
        how = f" ({self.usage})" if self.usage else ""
        return f"variants of {self.file} ({':'.join(self.fields)}): " + "; ".join(parts) + how


def parse_arg(arg: str | None, file: str, usage: str = "", **fields) -> tuple:
    """A config variant `a:b:c` read as the positional `fields`, each checked, in order.

    fields: name -> allowed values (a tuple, its first entry the default when the part is
    missing or empty) or a plain default string (any value; the last field takes the rest of
    `arg`, colons included); `usage` is added to the message. Returns the values as a tuple.
    Raises ConfigError naming the file, the field and its choices (the CLI prints that line);
    VariantQuery for arg == VARIANT_QUERY.
    E.g. parse_arg("1.4b:sft", "configs/tldr_pythia.py", size=SIZES, stage=STAGES, root="")
    """
    if arg == VARIANT_QUERY:
        raise VariantQuery(file, fields, usage)
    parts = arg.split(":", len(fields) - 1) if arg else []  # the last part may hold ':' (gs://)
    parts += [""] * (len(fields) - len(parts))
    values = []
    for (name, allowed), part in zip(fields.items(), parts, strict=True):
        if isinstance(allowed, str):
            values.append(part or allowed)
        elif (part or allowed[0]) in allowed:
            values.append(part or allowed[0])
        else:
            shown = [a or "(none)" for a in allowed]
            how = f" ({usage})" if usage else ""
            raise ConfigError(
                f"{file}: unknown {name} {part!r} in variant {arg!r}; use one of {shown}{how}"
            )
    return tuple(values)
