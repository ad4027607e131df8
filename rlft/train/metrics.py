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


def is_remote(workdir: str) -> bool:
    return "://" in str(workdir)


class MetricsWriter:
    """Writes metrics rows; on resume, drops rows past the restored step so the file reads as
    if the run had never been interrupted. The whole file is rewritten on each write (object
    stores cannot append; logged rows are few)."""

    def __init__(self, workdir: str, resume_step: int = 0):
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
        row.update({k: _to_float(v) for k, v in sorted(metrics.items())})
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
