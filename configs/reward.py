"""Bradley-Terry reward model: SFT backbone + scalar head read at the last real token.

Run after configs/sft.py:tiny (it loads the backbone from runs/sft_tiny):
  rlft train --config=configs/reward.py:tiny --workdir=runs/reward_tiny
"""

from rlft.defaults import base_config, parse_arg


def get_config(arg: str | None = None):
    (size,) = parse_arg(arg, "configs/reward.py", size=("", "tiny"))
    tiny = size == "tiny"
    c = base_config("reward", tiny)
    c.total_steps = 150 if tiny else 1000
    c.optim.learning_rate = 5e-4 if tiny else 1e-4
    c.init.policy = "runs/sft_tiny" if tiny else "runs/sft"  # backbone source
    c.reward = dict(model_class="last")  # RM class: last (paper's head) | mean | sum | bilinear
    # Derived: pairs seen = total_steps x batch_size = 150 x 32 = 4800 (2.3 epochs) on tiny.
    return c
