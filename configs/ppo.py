"""PPO against the trained reward model, KL to the SFT reference folded into the reward.

Recipe of the public TL;DR PPO reproductions (docs/paper.md section 4): critic initialised from the
reward model, temperature-scaled log-probs, responses cut after the first EOS, a fixed penalty
when no EOS appears, per-token k1 KL, GAE(1, 0.95), whitened advantages, 4 epochs, clip 0.2.
Run after configs/sft.py:tiny and configs/reward.py:tiny:
  rlft train --config=configs/ppo.py:tiny --workdir=runs/ppo_tiny
"""

from rlft.defaults import base_config, parse_arg


def get_config(arg: str | None = None):
    (size,) = parse_arg(arg, "configs/ppo.py", size=("", "tiny"))
    tiny = size == "tiny"
    c = base_config("ppo", tiny)
    c.total_steps = 40 if tiny else 500  # rollout iterations
    c.checkpoint_every = 20 if tiny else 50
    c.log_every = 5 if tiny else 10
    c.optim.learning_rate = 1e-4 if tiny else 3e-5  # the paper's Pythia runs use 3e-6
    c.init.policy = "runs/sft_tiny" if tiny else "runs/sft"  # policy start and reference
    c.init.reward = "runs/reward_tiny" if tiny else "runs/reward"  # scorer and critic init
    c.reward_model = dict(preset=c.model.preset)  # the scorer's (and critic's) architecture
    c.ppo = dict(
        clip_eps=0.2,  # policy ratio clip
        vf_clip=0.2,  # value clip around the rollout value
        vf_coef=0.1,  # value-loss weight
        ent_coef=0.0,  # entropy bonus
        temperature=0.7,  # sampling temperature; log-probs from logits / temperature
    )
    c.rollout = dict(
        response_len=7 if tiny else 53,  # new tokens per prompt (7 = max_items + EOS on tiny)
        top_p=1.0,
        kl_coef=0.05,  # per-token KL penalty beta
        kl_estimator="k1",  # k1 | k3
        no_eos_penalty=-1.0,  # score of a response that never emits EOS
        gamma=1.0,
        lam=0.95,
        whiten_rewards=False,
        ppo_epochs=4,
        num_minibatches=2,  # per epoch; updates per iteration = ppo_epochs x num_minibatches
    )
    # Derived: optimizer updates = total_steps x 4 x 2 = 320 on tiny; samples per iteration =
    # batch_size = 32 prompts x 1 response.
    return c
