"""Metrics to DIR/metrics.jsonl (one object per logged step) and TensorBoard event files."""

import json
import math
import os
from typing import Any

import numpy as np


class MetricsWriter:
    """Appends metrics; on resume, drops lines past the restored step so the file reads as if
    the run had never been interrupted."""

    def __init__(self, workdir: str, resume_step: int = 0):
        os.makedirs(workdir, exist_ok=True)
        self.path = os.path.join(workdir, "metrics.jsonl")
        kept = []
        if os.path.exists(self.path):
            with open(self.path) as f:
                kept = [
                    line for line in f if line.strip() and json.loads(line)["step"] <= resume_step
                ]
        with open(self.path, "w") as f:
            f.writelines(kept)
        self._tb = None
        self._tb_dir = os.path.join(workdir, "tensorboard")

    def write(self, step: int, metrics: dict[str, Any]) -> dict[str, float]:
        row = {"step": int(step)}
        row.update({k: _to_float(v) for k, v in sorted(metrics.items())})
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is None:
            from tensorboardX import SummaryWriter  # noqa: PLC0415  (import cost only when used)

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
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]
