"""Pictures of closed-loop runs: per-episode filmstrips and success rate against compute."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def _plt():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def filmstrip(path: str, goal: np.ndarray, frames: Sequence[np.ndarray],
              actions: Sequence[np.ndarray], title: str, max_frames: int = 8) -> None:
  """Goal image, then observations at evenly spaced steps with the action chosen there.

  Args:
    goal: uint8 `[H, W, 3]`.
    frames: the T+1 observations of the episode (uint8 `[H, W, 3]`).
    actions: the T executed actions `[7]` (the last frame has none).
  """
  plt = _plt()
  n = len(frames)
  idx = sorted(set(np.linspace(0, n - 1, min(max_frames, n)).round().astype(int).tolist()))
  fig, axes = plt.subplots(1, len(idx) + 1, figsize=(1.6 * (len(idx) + 1), 2.1))
  axes[0].imshow(goal)
  axes[0].set_title("goal", fontsize=8)
  for ax, t in zip(axes[1:], idx):
    ax.imshow(frames[t])
    ax.set_title(f"t={t}", fontsize=8)
    if t < len(actions):
      a = np.asarray(actions[t]) * 100
      ax.set_xlabel(f"a=({a[0]:+.1f},{a[1]:+.1f},{a[2]:+.1f}) cm", fontsize=6)
  for ax in axes:
    ax.set_xticks([])
    ax.set_yticks([])
  fig.suptitle(title, fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


def success_vs_compute(path: str, reports: Sequence[dict]) -> None:
  """Success rate against predictor FLOPs and seconds per planned step, one point per run.

  Runs without a model (random, oracle) are drawn as horizontal reference lines.
  """
  plt = _plt()
  fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.6))
  for ax, key, label in ((axes[0], "flops_per_step", "predictor FLOPs per planned step"),
                         (axes[1], "plan_s_per_step_median", "planning seconds per step")):
    for i, r in enumerate(reports):
      colour = f"C{i % 10}"
      name = r.get("label", r["planner"])
      if r.get(key) and r["planner"] not in ("random", "oracle"):
        ax.plot(r[key], r["success_rate"], "o", color=colour, label=name)
      else:
        ax.axhline(r["success_rate"], color=colour, linestyle="--", label=name)
    ax.set_xscale("log")
    ax.set_xlabel(label)
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=7, loc="best")
  task = reports[0]["task"] if reports else ""
  fig.suptitle(f"{task}: success rate vs planning compute", fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
