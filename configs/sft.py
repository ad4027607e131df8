"""SFT: next-token cross-entropy on demonstrations, prompt tokens masked.

Run (CPU, about a minute):
  rlft train --config=configs/sft.py:tiny --workdir=runs/sft_tiny
Full-size synthetic run:
  rlft train --config=configs/sft.py --workdir=runs/sft
The tiny stages chain through their workdirs: sft -> reward -> dpo / ppo (see each file).
"""

from rlft.defaults import base_config, parse_arg


def get_config(arg: str | None = None):
    (size,) = parse_arg(arg, "configs/sft.py", size=("", "tiny"))
    tiny = size == "tiny"
    c = base_config("sft", tiny)
    c.sft = dict(temperature=1.0)  # log-probs from logits / temperature (1 for SFT)
    # Derived: tokens per step = batch_size x (prompt + response) = 32 x 14 on tiny;
    # epochs = total_steps x batch_size / num_examples = 200 x 32 / 2048 = 3.1 on tiny.
    return c
