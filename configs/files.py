"""Your own data from local files (docs/data.md): the sft, reward, dpo and ppo stages.

Variant `SIZE:STAGE[:ROOT]`: SIZE is tiny (CPU) or a Pythia size (70m, 160m, 410m, 1.4b,
2.8b); STAGE is sft, reward, dpo or ppo; ROOT (default runs/files_SIZE) holds the stage
workdirs ROOT/sft, ROOT/reward, ROOT/dpo, ROOT/ppo, which later stages read through
config.init, so `--workdir` must be ROOT/STAGE.

Files are JSONL, Parquet, or a `datasets` save_to_disk folder, in TRL's formats (sft:
prompt/completion or text; preferences: prompt/chosen/rejected; prompts: prompt) or the
pre-tokenised TL;DR layout (query_token, reference_response_token, chosen_token,
rejected_token). Defaults: data/sft.jsonl, data/preferences.jsonl and the tokenizer.json of
checkpoints/pythia-SIZE-deduped (also the sft stage's start). From the repository root:

  rlft train --config=configs/files.py:1.4b:sft    --workdir=runs/files_1.4b/sft
  rlft train --config=configs/files.py:1.4b:reward --workdir=runs/files_1.4b/reward
  rlft train --config=configs/files.py:1.4b:dpo    --workdir=runs/files_1.4b/dpo
  rlft train --config=configs/files.py:1.4b:ppo    --workdir=runs/files_1.4b/ppo

Other files: --config.data.sft_train=my_sft.parquet --config.data.pairs_train=prefs_folder
--config.data.tokenizer=DIR; other columns: --config.data.prompt_column=question
--config.data.completion_column=answer (every field: rlft.data.files.FilesDataConfig).

CPU: `tiny:STAGE` (tiny model, vocab 512, prompts of 32 and responses of 16 tokens) needs a
tokenizer of at most 511 tokens + [PAD]; tests/test_data_files.py trains one and runs the
stages on it. The tokenised arrays are cached in rlft_arrays/ beside each data file.
"""

import ml_collections

from rlft.defaults import VARIANT_QUERY, base_config, parse_arg
from rlft.errors import ConfigError

SIZES = ("tiny", "70m", "160m", "410m", "1.4b", "2.8b")
STAGES = ("sft", "reward", "dpo", "ppo")
# What each stage tokenises (rlft.data.files.PARTS); () = every part whose path is set, so the
# reward model is normalised on the SFT completions when there are any, else on the chosen ones.
PARTS = {"sft": ("sft",), "reward": (), "dpo": ("pairs",), "ppo": ("prompts",)}
LR = {"sft": 3e-6, "reward": 3e-6, "dpo": 3e-7, "ppo": 3e-6}  # docs/paper.md (Pythia)
TINY_LR = {"sft": 1e-3, "reward": 5e-4, "dpo": 5e-4, "ppo": 1e-4}
TINY_STEPS = {"sft": 12, "reward": 12, "dpo": 12, "ppo": 4}


def _data(size: str, stage: str) -> ml_collections.ConfigDict:
    tiny = size == "tiny"
    d = ml_collections.ConfigDict()
    d.source = "files"  # rlft.data.files.FilesDataConfig
    d.tokenizer = "data/tokenizer.json" if tiny else f"checkpoints/pythia-{size}-deduped"
    d.sft_train = "data/sft.jsonl"  # prompt/completion, text, or query_token + response ids
    d.sft_validation = ""  # read with data.split=validation
    d.pairs_train = "data/preferences.jsonl"  # prompt/chosen/rejected or *_token columns
    d.pairs_validation = ""
    d.prompts_train = ""  # prompt-only rows for PPO; empty: the SFT rows' prompts
    d.prompts_validation = ""
    d.split = "train"  # train | validation: which paths this run reads
    d.parts = PARTS[stage]
    d.max_prompt_len = 32 if tiny else 512  # prompt tokens; text prompts cut to fit
    d.response_len = 16 if tiny else 53  # SFT completion + EOS (longer rows dropped)
    d.pair_response_len = 16 if tiny else 128  # chosen/rejected + EOS
    d.prompt_template = ""  # e.g. "{prompt}\n\nTL;DR:"; "" = the prompt column as it is
    d.max_rows = 0  # rows read per file, 0 = all
    d.cache_dir = ""  # "" = rlft_arrays/ beside each data file
    return d  # column names: FilesDataConfig's defaults (prompt, completion, chosen, ...)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    usage = "SIZE:STAGE[:ROOT], e.g. 1.4b:sft or tiny:dpo"
    if len((arg or "").split(":")) < 2 and arg != VARIANT_QUERY:
        raise ConfigError(f"configs/files.py: variant {arg!r}; give {usage}")
    size, stage, root = parse_arg(arg, "configs/files.py", usage, size=SIZES, stage=STAGES, root="")
    root = root or f"runs/files_{size}"
    tiny = size == "tiny"
    c = base_config(stage, tiny)
    c.total_steps = TINY_STEPS[stage] if tiny else 1000
    c.batch_size = 8 if tiny else (128 if stage in ("reward", "dpo") else 64)
    c.checkpoint_every = c.total_steps if tiny else 200
    c.log_every = 1 if tiny else 10
    if tiny:
        c.model.vocab_size = 512  # the tokenizer's ids + [PAD] must fit
    else:
        c.model.preset = f"pythia-{size}"
        c.model.dtype = "bfloat16"
        c.model.remat = True
        c.mesh.data, c.mesh.fsdp = 1, -1  # FSDP over every device (tpu/memory.py)
    c.optim.learning_rate = (TINY_LR if tiny else LR)[stage]
    c.data = _data(size, stage)
    start = "" if tiny else f"checkpoints/pythia-{size}-deduped"
    c.init.policy = start if stage == "sft" else f"{root}/sft"
    c.init.reward = f"{root}/reward" if stage == "ppo" else ""
    # Derived: rows seen = total_steps x batch_size (tiny sft: 12 x 8 = 96).
    if stage == "sft":
        c.sft = dict(temperature=1.0)  # next-token cross-entropy on the completion
    elif stage == "reward":
        c.reward = dict(model_class="last")  # last-token head, normalised after training
    elif stage == "dpo":
        c.dpo = dict(
            beta=0.1 if tiny else 0.05,  # KL strength (the paper: 0.05)
            loss_type="sigmoid",
            reference_free=False,  # reference = the SFT policy (init.policy)
            temperature=1.0,
            label_smoothing=0.0,
        )
    else:
        c.reward_model = ml_collections.ConfigDict(c.model.to_dict())  # the reward stage's
        c.ppo = dict(clip_eps=0.2, vf_clip=0.2, vf_coef=0.1, ent_coef=0.0, temperature=0.7)
        c.rollout = dict(
            response_len=c.data.response_len,  # new tokens per prompt
            top_p=1.0,
            kl_coef=0.05,
            kl_estimator="k1",
            no_eos_penalty=-1.0,
            gamma=1.0,
            lam=0.95,
            whiten_rewards=False,
            ppo_epochs=4,
            num_minibatches=1,
        )
    return c
