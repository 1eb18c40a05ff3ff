"""Metric writers: TensorBoard (tf.summary), a JSONL file and optional wandb; process 0 only."""
from __future__ import annotations

import json
import logging
import time
from typing import Mapping

import jax
from etils import epath

METRICS_FILE = "metrics.jsonl"
# The training losses as the step reports them (train/step.py); plotted under these names.
LOSSES = ("loss", "teacher_forcing_loss", "rollout_loss")


class MetricWriter:
  """Writes scalars per step. `resume_step`: rows of later steps (written before a crash or a
  stop and trained again now) are dropped first, so metrics.jsonl keeps one row per step."""

  def __init__(self, workdir: str, use_wandb: bool = False, wandb_project: str = "vjepa-jax",
               config: Mapping | None = None, resume_step: int = 0):
    self.active = jax.process_index() == 0
    self.workdir = epath.Path(workdir)
    self._tb = None
    self._wandb = None
    if not self.active:
      return
    path = self.workdir / METRICS_FILE
    if path.exists():
      kept = [json.dumps(r) for r in _rows(path) if r["step"] <= resume_step]
      path.write_text("".join(line + "\n" for line in kept))
    import tensorflow as tf
    self._tf = tf
    self._tb = tf.summary.create_file_writer(str(self.workdir / "tensorboard"))
    self._jsonl = (self.workdir / METRICS_FILE).open("a")
    if use_wandb:
      try:
        import wandb
        self._wandb = wandb.init(project=wandb_project, config=dict(config or {}),
                                 dir=str(self.workdir), resume="allow")
      except ImportError:
        logging.warning("wandb logging requested but wandb is not installed; skipping it")

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.active:
      return
    scalars = {k: float(v) for k, v in scalars.items()}
    with self._tb.as_default(step=step):
      for k, v in scalars.items():
        self._tf.summary.scalar(k, v)
    self._jsonl.write(json.dumps({"step": step, "time": time.time(), **scalars}) + "\n")
    self._jsonl.flush()
    if self._wandb is not None:
      self._wandb.log(scalars, step=step)

  def close(self) -> None:
    if self.active:
      self._tb.flush()
      self._jsonl.close()
      if self._wandb is not None:
        self._wandb.finish()


def _rows(path: epath.Path) -> list[dict]:
  return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def read_jsonl(workdir: str) -> list[dict]:
  """The rows of metrics.jsonl in step order; of two rows with the same step and keys (a step
  trained again after a resume) only the later one."""
  path = epath.Path(workdir) / METRICS_FILE
  if not path.exists():
    return []
  latest = {}
  for i, row in enumerate(_rows(path)):
    latest[(row["step"], tuple(sorted(k for k in row if k != "time")))] = (i, row)
  return [row for _, row in sorted(latest.values(), key=lambda ir: (ir[1]["step"], ir[0]))]


def plot_loss(workdir: str, out_name: str = "loss.png") -> str | None:
  """Writes the loss curve of a run as a PNG; returns its path."""
  rows = [r for r in read_jsonl(workdir) if "loss" in r]
  if not rows or jax.process_index() != 0:
    return None
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  for key in LOSSES:
    ax.plot([r["step"] for r in rows], [r[key] for r in rows], label=key)
  ax.set_xlabel("step")
  ax.set_ylabel("L1")
  ax.set_title("V-JEPA 2-AC training loss")
  ax.legend()
  fig.tight_layout()
  path = str(epath.Path(workdir) / out_name)
  with epath.Path(path).open("wb") as f:
    fig.savefig(f, format="png", dpi=100)
  plt.close(fig)
  return path


def peak_flops_per_device() -> float | None:
  """bf16 dense peak FLOP/s of the local accelerator, when known."""
  kind = jax.devices()[0].device_kind.lower()
  table = {"h100": 989e12, "h200": 989e12, "a100": 312e12, "v4": 275e12, "v5p": 459e12,
           "v5 lite": 197e12, "v5e": 197e12, "v6": 918e12, "l4": 121e12, "4090": 165e12}
  for key, value in table.items():
    if key in kind:
      return value
  return None
