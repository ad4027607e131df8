"""The paper's comparison in miniature: `rlft reproduce`, the project's main job.

  rlft reproduce --config=configs/reproduce.py --workdir=runs/reproduce          # default
  rlft reproduce --config=configs/reproduce.py:quick --workdir=runs/quick        # CI, ~3 min
  rlft reproduce --config=configs/reproduce.py:hypotheses --workdir=runs/hyp     # H3, H4, curves
  rlft reproduce --config=configs/reproduce.py:full --workdir=runs/full          # hours
  rlft reproduce --config=configs/reproduce.py:control --workdir=runs/control    # ~15 min

default: the gap task (`keyed`) and its short control (`keyed_short`), every arm, 3 seeds,
one label budget. quick: one task, one seed, every arm, small budgets. hypotheses: `keyed`,
3 seeds, budgets 256 and 1024 (learning curves, budget trend), narrow and wide preference
data (H4: tasks `keyed_narrow`, `keyed_wide`) and the extra arm online_dpo_more_prompts (H3:
online DPO on 2.3x as many pairs, from extra unlabelled prompts). full: every task (incl. the
hard-verifier `rouge` and the isomorphic `bandit` control), a label-budget sweep, 5 seeds,
both pair sources and the extra arm. control: the isomorphic `bandit` alone (Theorem 2.2),
offline DPO, online DPO and PPO trained long, next to the exact tabular solution of both roads
on the same pairs (rlft/experiments/isomorphic.py). See docs/tasks.md for the tasks and
PAPER.md for the hypotheses.

Arms (rlft.experiments.spec.ARMS): sft, offline_dpo, online_dpo (best/worst of K SFT samples
by the RM), online_dpo_from_dpo, ppo, oracle_online_dpo (scored by the gold verifier); extra
(spec.EXTRA_ARMS, compared against online_dpo by the report): online_dpo_more_prompts.
labels.sources: "sft" (two SFT samples per prompt: narrow, the paper's data) and "wide" (each
response from SFT at temperature 1 or 2 or the demonstrator); anything but ("sft",) records
each source as its own task, `{task}_narrow` / `{task}_wide`, sharing SFT and prompts.
"""

import ml_collections

ARMS = ("sft", "offline_dpo", "online_dpo", "online_dpo_from_dpo", "ppo", "oracle_online_dpo")
EXTRA_ARMS = ("online_dpo_more_prompts",)  # H3: more online data; not in the default run
VARIANTS = ("default", "quick", "hypotheses", "full", "control")


def get_config(arg: str | None = None):
    variant = arg or "default"
    if variant not in VARIANTS:
        raise ValueError(
            f"configs/reproduce.py: unknown variant {arg!r}; "
            "use quick, hypotheses, full, control or none"
        )
    c = ml_collections.ConfigDict()
    c.tasks = ("keyed", "keyed_short")  # names in rlft.tasks.TASKS
    c.task_knobs = {}  # task name -> {knob: value}, e.g. {"keyed": {"response_len": 9}}
    c.seeds = (0, 1, 2)
    c.label_budgets = (512,)  # preference pairs; budgets share a nested prefix of one pool
    c.arms = ARMS
    c.model = dict(preset="tiny", vocab_size=64)  # policy, reward model and critic
    c.sft = dict(
        num_examples=4096,  # task demonstrations
        steps=300,  # 300 x 64 / 4096 = 4.7 epochs
        batch_size=64,
        learning_rate=1e-3,
    )
    c.labels = dict(
        bt_scale=10.0,  # Bradley-Terry sharpness of the simulated labeller
        temperature=1.0,  # SFT sampling temperature for the two responses of each pair
        num_val_pairs=512,  # held-out pairs for RM / DPO accuracy
        sources=("sft",),  # pair sources: sft (narrow) | wide; several: one task entry each (H4)
    )
    c.reward = dict(
        pooling="last",  # reward-model class: last (the paper's head) | mean | sum | bilinear
        epochs=4.0,
        batch_size=64,
        learning_rate=5e-4,  # bilinear (a zero-init table) fits at ~5e-2; the others at this
    )
    c.dpo = dict(
        beta=0.1,  # every arm's KL strength (PPO's kl_coef too): H2, identical beta/reference
        epochs=4.0,  # passes over the pairs (offline: the label budget; online: one per prompt)
        batch_size=64,
        learning_rate=2e-4,
        eval_points=3,  # frontier checkpoints per arm
    )
    c.online = dict(
        num_samples=8,  # K samples per prompt, best and worst by the RM become a pair
        temperature=1.0,
        more_prompts_factor=2.3,  # online_dpo_more_prompts: online pairs / label budget (H3)
    )
    c.ppo = dict(iterations=48, batch_size=64, learning_rate=1e-4, temperature=1.0, eval_points=3)
    c.parallel = dict(  # every stage's layout (optional section; these are the defaults)
        data=-1,  # mesh.data: -1 = all devices
        fsdp=1,  # mesh.fsdp: >1 (or -1) splits params + AdamW over devices (Pythia scale)
        accum_steps=1,  # optim.accum_steps of every training stage
    )
    c.eval = dict(num_prompts=256, samples_per_prompt=4, best_of_n=(1, 2, 5, 10, 25))
    if variant == "quick":
        c.tasks = ("keyed",)
        c.seeds = (0,)
        c.label_budgets = (256,)
        c.sft.update(num_examples=2048, steps=150)
        c.labels.num_val_pairs = 256
        c.dpo.update(epochs=2.0, eval_points=2)
        c.ppo.update(iterations=12, eval_points=2)
        c.eval.update(num_prompts=128, samples_per_prompt=2, best_of_n=(1, 2, 5, 10))
    elif variant == "hypotheses":
        c.tasks = ("keyed",)
        c.label_budgets = (256, 1024)  # two budgets: learning curves and the budget trend
        c.labels.sources = ("sft", "wide")  # tasks keyed_narrow and keyed_wide (H4)
        c.arms = ARMS + EXTRA_ARMS  # online_dpo_more_prompts: ~2.3 x 256 = 589 online pairs (H3)
    elif variant == "full":
        c.tasks = ("keyed", "keyed_short", "rouge", "bandit")
        c.seeds = (0, 1, 2, 3, 4)
        c.label_budgets = (128, 512, 2048)
        c.labels.sources = ("sft", "wide")
        c.arms = ARMS + EXTRA_ARMS
        c.eval.num_prompts = 512
    elif variant == "control":
        # Theorem 2.2's isomorphic case, both roads run long; results.json gets the exact tabular
        # solution of both roads on the same pairs (section "isomorphic"). beta = 1 makes the
        # label optimum pi_ref exp(bt_scale r / beta) = pi_ref exp(10 r) reachable: at beta 0.1
        # it is exp(100 r), logit gaps no finite run gets near.
        c.tasks = ("bandit",)
        c.seeds = (0, 1, 2)
        c.label_budgets = (1024,)  # 128 pairs per context on the default 8 x 16 bandit
        c.arms = ("sft", "offline_dpo", "online_dpo", "ppo")
        c.sft.update(num_examples=2048, steps=150)
        c.labels.num_val_pairs = 256
        c.reward.epochs = 16.0  # 16 x 1024 / 64 = 256 steps
        c.dpo.update(beta=1.0, epochs=32.0, eval_points=4)  # offline: 32 x 1024 / 64 = 512 steps
        c.ppo.update(iterations=192, eval_points=4)  # 4x the default
        c.eval.update(num_prompts=128, samples_per_prompt=2, best_of_n=(1, 2, 5, 10))
    return c
