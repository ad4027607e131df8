"""Offline DPO on the preference pairs, from the SFT policy (also the reference).

Reference log-probs are computed once by a forward-only pass and cached in the workdir
(ref_logprobs.npz). Run after configs/sft.py:tiny:
  rlft train --config=configs/dpo.py:tiny --workdir=runs/dpo_tiny
The reference-free "local RM" variant: --config.dpo.reference_free=True; IPO:
--config.dpo.loss_type=ipo.
"""

from rlft.defaults import base_config, parse_arg


def get_config(arg: str | None = None):
    (size,) = parse_arg(arg, "configs/dpo.py", size=("", "tiny"))
    tiny = size == "tiny"
    c = base_config("dpo", tiny)
    c.total_steps = 100 if tiny else 1000
    c.optim.learning_rate = 2e-4 if tiny else 3e-5  # the paper's Pythia runs use 3e-7
    c.init.policy = "runs/sft_tiny" if tiny else "runs/sft"  # policy start and reference
    c.dpo = dict(
        beta=0.1,  # KL strength (the paper: 0.05)
        loss_type="sigmoid",  # sigmoid (DPO) | ipo
        reference_free=False,  # True: the paper's reference-free local reward
        temperature=1.0,  # log-probs from logits / temperature (online DPO uses its sampling T)
        label_smoothing=0.0,  # conservative DPO label-flip rate
    )
    # Derived: pairs seen = 100 x 32 = 3200 (1.6 epochs of 2048) on tiny.
    return c
