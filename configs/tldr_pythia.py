"""Pythia-1.4B / 2.8B on Reddit TL;DR with the paper's settings (docs/paper.md section 4), by stage.

Variant `SIZE:STAGE[:ROOT]`: SIZE is 1.4b, 2.8b, 410m (one 16 GiB chip: colab/tldr_pythia.ipynb)
or smoke; STAGE is sft, reward, dpo or ppo;
ROOT (default runs/tldr_SIZE) holds the stage workdirs ROOT/sft, ROOT/reward, ROOT/dpo,
ROOT/ppo, which later stages read through config.init, so `--workdir` must be ROOT/STAGE.

Once (docs/tldr.md): download the TL;DR files into manual/ and a Pythia checkpoint from Hugging
Face (config.json, model.safetensors, tokenizer.json) into checkpoints/pythia-1.4b-deduped/.
The first stage prepares the TFDS datasets into tfds_data/ and every stage caches its
tokenised arrays in tfds_data/rlft_arrays/. Then, from the repository root, in this order:

  rlft train --config=configs/tldr_pythia.py:1.4b:sft    --workdir=runs/tldr_1.4b/sft
  rlft train --config=configs/tldr_pythia.py:1.4b:reward --workdir=runs/tldr_1.4b/reward
  rlft train --config=configs/tldr_pythia.py:1.4b:dpo    --workdir=runs/tldr_1.4b/dpo
  rlft train --config=configs/tldr_pythia.py:1.4b:ppo    --workdir=runs/tldr_1.4b/ppo

2.8B: the same four commands with 2.8b (checkpoints/pythia-2.8b-deduped, runs/tldr_2.8b/...).
Other paths: --config.init.policy=/path/to/pythia-1.4b-deduped (the sft stage's start),
--config.data.tokenizer=/path/to/pythia-1.4b-deduped (every stage), --config.data.data_dir=...,
--config.data.manual_dir=... . On a TPU pod put ROOT in a bucket, e.g.
`--config=configs/tldr_pythia.py:1.4b:sft:gs://BUCKET/tldr --workdir=gs://BUCKET/tldr/sft`
through tpu/launch.sh, with data_dir prepared beforehand (multi-host runs do not prepare).

CPU smoke run of the same four stages (tiny model, fixture files in the published formats and a
BPE tokenizer trained on them, all written under ROOT=runs/tldr_smoke; about a minute, most
of it compiling):

  rlft train --config=configs/tldr_pythia.py:smoke:sft    --workdir=runs/tldr_smoke/sft
  rlft train --config=configs/tldr_pythia.py:smoke:reward --workdir=runs/tldr_smoke/reward
  rlft train --config=configs/tldr_pythia.py:smoke:dpo    --workdir=runs/tldr_smoke/dpo
  rlft train --config=configs/tldr_pythia.py:smoke:ppo    --workdir=runs/tldr_smoke/ppo

Online DPO (best/worst of K=25 samples at temperature 0.1, scored by the reward model, then
DPO with dpo.temperature=0.1) needs a sampling and labelling step between stages that
`rlft train` does not have, so it runs through `rlft reproduce`, whose config is the variant
`SIZE:reproduce[:ROOT]` (task `tldr`, rlft/tasks/tldr.py): SFT from the checkpoint, labelled
pairs, the reward model, then every arm (offline DPO, online DPO from SFT and from DPO, PPO,
oracle online DPO) evaluated by the gold judge (ROUGE-L vs the reference summary by default):

  rlft reproduce --config=configs/tldr_pythia.py:1.4b:reproduce --workdir=runs/tldr_1.4b/reproduce
  rlft reproduce --config=configs/tldr_pythia.py:smoke:reproduce --workdir=runs/tldr_smoke/repro

The smoke variant runs the whole pipeline on the fixture files (ROOT, default runs/tldr_smoke,
holds the fixture data) with the tiny model on CPU in about a minute. `online_dpo_config(SIZE)`
is the same DPO stage as an `rlft train` config, for reference.
"""

import ml_collections

from rlft.defaults import VARIANT_QUERY, base_config, parse_arg
from rlft.errors import ConfigError
from rlft.experiments.arms import DEFAULT_ARMS
from rlft.experiments.pipeline.spec import strip_owned

SFT_TRAIN_ROWS = 116_722  # published size of TL;DR tldr_3_filtered train
COMPARISON_TRAIN_ROWS = 92_858  # published size of the comparisons train split
STAGES = {"sft": "sft", "reward": "reward", "dpo": "dpo", "ppo": "ppo"}
BATCH = {"sft": 64, "reward": 128, "dpo": 128, "ppo": 64}  # rows (pairs, prompts) per step
LR = {"sft": 3e-6, "reward": 3e-6, "dpo": 3e-7, "ppo": 3e-6}
PARTS = {"sft": ("sft",), "reward": ("pairs", "sft"), "dpo": ("pairs",), "ppo": ("sft",)}
# Micro-batches per update, sized for a v4-8 (4 devices x 32 GiB) from tpu/memory.py: 1.4b at
# <= 16 sequences per device, 2.8b at <= 8 (PPO: 4, two trained models). Lower on larger slices.
ACCUM = {
    "1.4b": {"sft": 1, "reward": 4, "dpo": 4, "ppo": 1},
    "2.8b": {"sft": 2, "reward": 8, "dpo": 8, "ppo": 4},
    # One v5e chip (Colab, 16 GiB; colab/tldr_pythia.ipynb), sized from the compiled DPO step
    # (`python benchmarks/memory.py --models=pythia-410m --objectives=dpo --meshes=1
    # --seqs-per-device=N`, CPU compiler as a proxy): peak 6.64 / 9.95 / 15.03 GiB at N = 2 / 4 /
    # 8 sequences x 565 tokens (bf16, remat; 4.53 GiB of it params + AdamW). 8 leaves no room
    # under 90% of 16 GiB, 4 does: so at most 4 sequences per micro-batch, i.e. sft 64 / 16,
    # reward and dpo 128 pairs = 256 sequences / 64. PPO does not fit the chip at all
    # (tpu/memory.py: policy + critic + reference + RM = 14.1 GiB before activations); the
    # notebook leaves its arm out, and its 16 only keeps `410m:ppo` parsing. `410m:reproduce`
    # takes the largest, 64, for every stage (its SFT then runs 1 sequence a micro-batch).
    "410m": {"sft": 16, "reward": 64, "dpo": 64, "ppo": 16},
    "smoke": {"sft": 1, "reward": 1, "dpo": 1, "ppo": 1},
}
ONLINE_DPO = dict(  # the sampling step of online DPO (docs/paper.md section 4), for the pipeline
    num_samples=25,  # K responses per preference prompt from the starting policy
    temperature=0.1,  # sampling temperature; dpo.temperature matches it
    max_new_tokens=53,
)


def _steps(size: str, stage: str) -> int:
    """One epoch at the published split sizes; smoke: a few steps."""
    if size == "smoke":
        return {"sft": 4, "reward": 4, "dpo": 4, "ppo": 2}[stage]
    # sft, ppo: 116,722 // 64 = 1823 (ppo: one rollout per batch of 64 SFT prompts);
    # reward, dpo: 92,858 // 128 = 725. Rows dropped for long summaries make the real epoch a
    # little shorter; the step-indexed data stream then wraps into the next permutation.
    rows = COMPARISON_TRAIN_ROWS if stage in ("reward", "dpo") else SFT_TRAIN_ROWS
    return rows // BATCH[stage]


def _model(size: str) -> ml_collections.ConfigDict:
    m = ml_collections.ConfigDict()
    if size == "smoke":
        m.preset = "tiny"  # 2 layers, d 64
        m.vocab_size = 512  # >= the fixture tokenizer's 400 tokens + [PAD]
    else:
        m.preset = f"pythia-{size}"  # vocab 50304, the checkpoint's padded embedding
    m.dtype = "bfloat16"  # compute dtype (paper: bf16); params and optimizer stay float32
    m.remat = True  # recompute blocks in the backward pass (memory, tpu/README.md)
    return m  # the model has no dropout layers: the paper's dropout 0


def _data(size: str, stage: str, root: str) -> ml_collections.ConfigDict:
    d = ml_collections.ConfigDict()
    d.source = "tldr"  # rlft.data.sources.TldrDataConfig
    if size == "smoke":
        d.data_dir = f"{root}/tfds"
        d.manual_dir = f"{root}/manual"
        d.tokenizer = f"{root}/tokenizer"  # trained on the fixture text on first use
        d.max_query_len = 64  # tiny preset max_len 256; long fixture posts get cut
        d.response_len = 16
        d.pair_response_len = 16
        d.write_fixture = True  # rlft/data/tldr/fixtures.py files into manual_dir if missing
    else:
        d.data_dir = "tfds_data"  # prepared by the first stage (or prepare_tldr)
        d.manual_dir = "manual"  # downloaded files (docs/tldr.md); only read to prepare
        d.tokenizer = f"checkpoints/pythia-{size}-deduped"  # dir with tokenizer.json
        d.max_query_len = 512  # query tokens, post cut at a newline to fit
        d.response_len = 53  # SFT summary + EOS (longer rows dropped)
        d.pair_response_len = 128  # comparison summaries + EOS (RM, DPO)
        d.write_fixture = False
    d.sft_split = "train"  # TldrSft split: sft, PPO prompts, RM normalisation references
    d.pairs_split = "train"  # TldrComparisons split (valid1/valid2 for evaluation)
    d.parts = PARTS[stage]  # sets this stage tokenises (cached under data_dir/rlft_arrays)
    d.max_rows = 0  # rows per split, 0 = all
    return d


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    if (arg or "").split(":")[1:2] == ["online_dpo"]:
        raise ConfigError(
            "configs/tldr_pythia.py: online DPO samples its pairs between stages, which `rlft "
            f"train` cannot do; run it with `rlft reproduce --config=configs/tldr_pythia.py:"
            f"{arg.split(':')[0]}:reproduce --workdir=DIR` (every arm, online DPO included)"
        )
    usage = "SIZE:STAGE[:ROOT], e.g. 1.4b:sft"
    if len((arg or "").split(":")) < 2 and arg != VARIANT_QUERY:
        raise ConfigError(f"configs/tldr_pythia.py: variant {arg!r}; give {usage}")
    size, stage, root = parse_arg(
        arg,
        "configs/tldr_pythia.py",
        usage,
        size=tuple(ACCUM),
        stage=(*STAGES, "reproduce"),
        root="",
    )
    root = root or f"runs/tldr_{size}"
    if stage == "reproduce":
        return reproduce_config(size, root)
    c = base_config(STAGES[stage], tiny=False)
    c.total_steps = _steps(size, stage)  # 1 epoch (derivation in _steps)
    c.batch_size = 8 if size == "smoke" else BATCH[stage]  # smoke: one row per CPU test device
    c.checkpoint_every = c.total_steps if size == "smoke" else 100
    c.log_every = 1 if size == "smoke" else 10
    c.model = _model(size)
    c.optim.learning_rate = LR[stage]  # peak (paper)
    c.optim.schedule = "cosine"  # to 0 (end_lr_frac 0), no warm-up
    c.optim.warmup_steps = 0
    c.optim.end_lr_frac = 0.0
    c.optim.eps = 1e-5  # AdamW eps of the paper's code; weight decay 0, clip 1 are rlft's
    c.optim.accum_steps = ACCUM[size][stage]
    c.mesh.data = 1  # FSDP over every device: params + AdamW of 1.4b (22.6 GB) and 2.8b
    c.mesh.fsdp = -1  # (44 GB) do not fit one chip; tpu/memory.py has the table (410m: 1 chip)
    c.data = _data(size, stage, root)
    hf = "" if size == "smoke" else f"checkpoints/pythia-{size}-deduped"
    c.init.policy = hf if stage == "sft" else f"{root}/sft"  # smoke sft: random init
    c.init.reward = f"{root}/reward" if stage == "ppo" else ""  # PPO scorer and critic init
    c.init.reference = ""  # = init.policy: the SFT model is every stage's reference
    # Derived, per optimizer update: sequences = batch (x2 for pairs), tokens per sequence =
    # max_query_len + response length (565 SFT/PPO, 640 pairs at full size).
    if stage == "sft":
        c.sft = dict(temperature=1.0)  # plain next-token cross-entropy, prompt masked
    elif stage == "reward":
        c.reward = dict(model_class="last")  # the paper's last-token head, normalised after
    elif stage == "dpo":
        c.dpo = dict(
            beta=0.05,  # the paper's KL strength
            loss_type="sigmoid",
            reference_free=False,  # reference = the SFT policy (init.policy)
            temperature=1.0,  # offline: log-probs from the plain logits
            label_smoothing=0.0,
        )
    else:
        _ppo(c, size)
    return c


def _ppo(c: ml_collections.ConfigDict, size: str) -> None:
    """PPO of the public TL;DR reproductions (docs/paper.md section 4). The batch (64 prompts per
    rollout, one pass over the SFT prompts) is our choice: docs/paper.md fixes none."""
    c.reward_model = _model(size)  # scorer and critic: the reward stage's architecture
    c.ppo = dict(
        clip_eps=0.2,  # policy ratio clip
        vf_clip=0.2,  # value clip
        vf_coef=0.1,  # value-loss weight
        ent_coef=0.0,
        temperature=0.7,  # sampling temperature; log-probs from logits / 0.7
    )
    c.rollout = dict(
        response_len=16 if size == "smoke" else 53,  # new tokens per prompt
        top_p=1.0,
        kl_coef=0.05,  # per-token KL beta, folded into the reward
        kl_estimator="k1",
        no_eos_penalty=-1.0,  # score of a response without EOS
        gamma=1.0,
        lam=0.95,
        whiten_rewards=False,  # advantages are whitened, rewards not
        ppo_epochs=4,
        num_minibatches=1,  # updates per rollout = 4 epochs x 1 = 4
    )


def online_dpo_config(size: str, start: str = "sft", root: str | None = None):
    """The DPO stage online DPO would train (the pipeline passes the sampled pairs as
    `data=`, so there is no data section): same beta, lr, batch as offline DPO, log-probs
    from logits / 0.1 as the samples were drawn. `start`: sft, or dpo (the offline-DPO
    policy, then also the reference). total_steps: the pipeline sets len(pairs) // 128."""
    c = get_config(f"{size}:dpo" + (f":{root}" if root else ""))
    del c.data
    c.dpo.temperature = ONLINE_DPO["temperature"]
    if start == "dpo":
        c.init.policy = c.init.policy.removesuffix("/sft") + "/dpo"
    elif start != "sft":
        raise ValueError(f"online_dpo_config: start={start!r}; use sft or dpo")
    return c


def reproduce_config(size: str, root: str) -> ml_collections.ConfigDict:
    """`rlft reproduce` on TL;DR (task `tldr`): the stages above with the paper's settings.

    The stage sections are this file's `rlft train` configs of the same size minus the keys the
    pipeline sets per unit (spec.PIPELINE_OWNED), so the recipe is read from one place. Labels
    are the pipeline's: two SFT samples per training post, labelled by Bradley-Terry on the gold
    judge (ROUGE-L vs the reference summary), not the human comparisons. One epoch per stage.
    """
    smoke = size == "smoke"
    beta = ml_collections.FieldReference(0.05)  # the paper's, every arm (PPO's kl_coef too)
    c = ml_collections.ConfigDict()
    c.tasks = ("tldr",)  # rlft.tasks.tldr.TldrTask
    d = _data(size, "sft", root)
    c.task_knobs = {
        "tldr": dict(
            data_dir=d.data_dir,  # tldr_sft/ prepared here from manual_dir on first use
            manual_dir=d.manual_dir,
            tokenizer=d.tokenizer,
            max_query_len=d.max_query_len,  # P
            response_len=d.response_len,  # R: reference summary + EOS, and every sample
            train_split="train",  # SFT demonstrations, preference and PPO prompts
            eval_split="validation",  # held-out evaluation prompts
            max_rows=0,
            write_fixture=d.write_fixture,
            judge="rouge",  # gold reward; "rm" with gold_rm=<reward-stage workdir>
            gold_rm="",
        )
    }
    c.seeds = (0,)
    # Preference pairs: 725 x 128 = 92,800, about the human comparisons train split (92,858);
    # with the 512 held-out pairs that is 93,312 of the 116,722 training posts.
    c.label_budgets = (16,) if smoke else (COMPARISON_TRAIN_ROWS // BATCH["dpo"] * BATCH["dpo"],)
    c.arms = DEFAULT_ARMS
    c.reward_classes = ("last",)  # the paper's last-token head, normalised on the references
    c.reward_class_overrides = {}
    m = _model(size)
    if smoke:
        m.dtype = "float32"  # bf16 matmuls are slow on CPU; the stage smoke runs cover bf16
        m.remat = False
    c.model = m.to_dict()  # policy, reward model and critic
    c.beta = beta
    c.sft_examples = 64 if smoke else SFT_TRAIN_ROWS  # draws from the post pool
    c.sft_init = "" if smoke else f"checkpoints/pythia-{size}-deduped"  # smoke: random init
    c.labels = dict(
        bt_scale=10.0,  # labeller P(a > b) = sigmoid(10 (rouge_a - rouge_b)); our choice
        temperature=1.0,  # the two SFT samples of a pair
        num_val_pairs=8 if smoke else 512,  # held-out pairs (accuracy, checkpoint selection)
        sources=("sft",),
    )
    c.online = dict(
        num_samples=4 if smoke else ONLINE_DPO["num_samples"],  # K, best/worst by the RM
        # Sampling, and the online arms' dpo.temperature. Smoke: at 0.1 the tiny SFT policy
        # draws the same summary K times for every post, which leaves no pairs.
        temperature=1.0 if smoke else ONLINE_DPO["temperature"],
        rounds=2,  # iterated_online_dpo
        more_prompts_factor=2.3,  # only for the extra arm online_dpo_more_prompts
    )
    c.epochs = dict(sft=1.0, reward=1.0, dpo=1.0, online_dpo=1.0, ppo=1.0)  # the paper's
    c.frontier = dict(points=1 if smoke else 4)  # checkpoints per arm besides its start
    c.eval = dict(  # validation posts; the paper's near-greedy evaluation at T = 0.01
        num_prompts=8 if smoke else 512,
        samples_per_prompt=2 if smoke else 4,
        greedy_temperature=0.01,
        primary="greedy",
        best_of_n=(1, 2, 4) if smoke else (1, 2, 5, 10, 25),
    )
    c.parallel = dict(  # every stage's layout; smoke: data parallel over the CPU test devices
        data=-1 if smoke else 1,
        fsdp=1 if smoke else -1,  # params + AdamW split over all chips, as the stage configs
        accum_steps=max(ACCUM[size].values()),  # one value for all stages: the largest
    )
    for stage in STAGES:
        c[stage] = strip_owned(get_config(f"{size}:{stage}:{root}"))
    if smoke:  # one row per CPU test device; PPO: 2 minibatches of 8
        for stage, batch in (("sft", 8), ("reward", 8), ("dpo", 8), ("ppo", 16)):
            c[stage].batch_size = batch
            c[stage].optim.learning_rate = 1e-3
        c.ppo.rollout.num_minibatches = 2
    c.dpo.dpo.beta = beta
    c.ppo.rollout.kl_coef = beta
    return c
