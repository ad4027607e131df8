"""Metrics to DIR/metrics.jsonl (one object per logged step) and TensorBoard event files.

The workdir may be local or a URL (gs://...): the file is handled through `etils.epath`, which
Orbax uses too. TensorBoard events are written for local workdirs only.
"""

import json
import math
from typing import Any

import numpy as np
from etils import epath

from rlft.train.files import replace_file

# rlft's metric keys -> the names TRL's trainers log (DPOTrainer, RewardTrainer, SFTTrainer in
# TRL 1.16; PPO as TRL's PPOTrainer logged them), so TRL users read metrics.jsonl and
# TensorBoard without a glossary. Keys not listed (loss, grad_norm, learning_rate, param_norm,
# denom, reward_offset, rollout/response_len) are the same in both or have no TRL counterpart.
# The README's "Metrics" table documents each one.
TRL_NAMES = {
    "sft": {"accuracy": "mean_token_accuracy"},
    "reward": {"chosen_reward": "rewards/chosen", "rejected_reward": "rewards/rejected"},
    "dpo": {
        "accuracy": "rewards/accuracies",
        "margin": "rewards/margins",
        "chosen_reward": "rewards/chosen",
        "rejected_reward": "rewards/rejected",
        "policy_chosen_logp": "logps/chosen",
        "policy_rejected_logp": "logps/rejected",
    },
    "ppo": {
        "pg_loss": "loss/policy_avg",
        "vf_loss": "loss/value_avg",
        "entropy": "policy/entropy_avg",
        "clipfrac": "policy/clipfrac_avg",
        "vf_clipfrac": "val/clipfrac_avg",
        "ratio": "val/ratio",
        "rollout/score": "objective/scores",
        "rollout/kl": "objective/kl",
        "rollout/reward": "objective/rlhf_reward",
        "rollout/eos_rate": "val/contain_eos_token",
    },
}
TRL_NAMES["mle"] = TRL_NAMES["sft"]


def trl_names(objective: str) -> dict[str, str]:
    """The renaming MetricsWriter applies for `objective` (an unknown one: none)."""
    return TRL_NAMES.get(objective, {})


def is_remote(workdir: str) -> bool:
    return "://" in str(workdir)


class MetricsWriter:
    """Writes metrics rows; on resume, drops rows past the restored step so the file reads as
    if the run had never been interrupted. The whole file is rewritten on each write (object
    stores cannot append; logged rows are few)."""

    def __init__(self, workdir: str, resume_step: int = 0, names: dict[str, str] | None = None):
        self.names = names or {}  # rlft key -> the name written (trl_names)
        root = epath.Path(workdir)
        root.mkdir(parents=True, exist_ok=True)
        self.path = root / "metrics.jsonl"
        self.lines: list[str] = []
        if self.path.exists():
            self.lines = [
                line + "\n"
                for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= resume_step
            ]
        replace_file(self.path, "".join(self.lines))
        self._tb = None
        self._tb_dir = None if is_remote(workdir) else str(root / "tensorboard")

    def write(self, step: int, metrics: dict[str, Any]) -> dict[str, float]:
        row = {"step": int(step)}
        row.update({self.names.get(k, k): _to_float(v) for k, v in sorted(metrics.items())})
        self.lines.append(json.dumps(row) + "\n")
        replace_file(self.path, "".join(self.lines))  # a kill never leaves half a file
        if self._tb_dir is not None:
            if self._tb is None:
                from tensorboardX import SummaryWriter  # noqa: PLC0415  (cost only when used)

                self._tb = SummaryWriter(self._tb_dir)
            for k, v in row.items():
                if k != "step" and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)
        return row

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _to_float(v: Any) -> float:
    return float(np.asarray(v))


def read_metrics(workdir: str) -> list[dict[str, float]]:
    text = (epath.Path(workdir) / "metrics.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]
