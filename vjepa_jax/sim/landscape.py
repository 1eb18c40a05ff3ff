"""Energy landscapes in simulation: is the world model's energy usable for planning?

Two views of the planner's energy (mean L1 between layer-normed latents and the goal latent):

- `encoder_landscape`: the end effector is placed on a grid of real positions through the goal
  (the plane at the goal's height), each scene is rendered and encoded, and the energy is that
  of the real frame: it shows whether the encoder's latents tell positions apart at all,
  independent of the predictor. Planning can only work where this decreases towards the goal.
- `predictor_landscape`: from the current frame, the energy of the predictor's prediction for
  each action on a (dx, dy) grid (dz set towards the goal): what the planner searches.

`rank_correlation` summarises a landscape in one number: Spearman's rho between energy and the
true distance to the goal (1 = energy orders positions exactly by distance).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vjepa_jax.models import world_model
from vjepa_jax.planning import poses


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
  """Spearman's rho of two equally shaped arrays (ties broken by order)."""
  ra = np.argsort(np.argsort(np.ravel(a))).astype(np.float64)
  rb = np.argsort(np.argsort(np.ravel(b))).astype(np.float64)
  ra -= ra.mean()
  rb -= rb.mean()
  denom = np.sqrt((ra * ra).sum() * (rb * rb).sum())
  return float((ra * rb).sum() / denom) if denom > 0 else 0.0


def encoder_landscape(sim, planner, points: int = 9, extent: float = 0.2) -> dict:
  """Energies `[points, points]` of real frames with the end effector on an (x, y) grid.

  The grid spans +-`extent` m around the goal end-effector position at its height; the scene
  is restored afterwards.
  """
  goal_ee, width, obj = sim.goal_configuration()
  goal = planner.goal_latent(sim.goal_frame())
  xs = goal_ee[0] + np.linspace(-extent, extent, points)
  ys = goal_ee[1] + np.linspace(-extent, extent, points)
  energy = np.zeros((points, points))
  dist = np.zeros((points, points))
  saved = sim.env.save_state()
  try:
    for j, y in enumerate(ys):
      for i, x in enumerate(xs):
        sim.place(np.array([x, y, goal_ee[2]]), width, obj)
        z = planner.encode(sim.frame())
        energy[j, i] = float(jnp.mean(jnp.abs(z - goal)))
        dist[j, i] = float(np.linalg.norm(sim.ee_position()[:2] - goal_ee[:2]))
  finally:
    sim.env.restore_state(saved)
    sim.env.remove_state(saved)
  return {"xs": xs, "ys": ys, "energy": energy, "distance": dist, "goal": goal_ee[:2],
          "rho": rank_correlation(energy, dist)}


@functools.partial(jax.jit, static_argnums=(0,))
def _energies(graphdef, params, context, pose, goal, candidates):
  model = world_model.inference_module(graphdef, params)
  ctx = world_model.prepare_context(model, context[None], pose[None, None])
  return world_model.rollout_energy(model, ctx, candidates[:, None], goal, poses.integrate_pose)


def predictor_landscape(sim, planner, predictor, points: int = 11) -> dict:
  """Energies `[points, points]` of one-step predictions over an action (dx, dy) grid.

  dz is the goal direction's, clipped to the step bound; the true step towards the goal is
  returned as `best`.
  """
  frame, state = sim.observe()
  goal = planner.goal_latent(sim.goal_frame())
  bound = sim.cfg.max_step
  to_goal = sim.goal_configuration()[0] - sim.ee_position()
  best = np.clip(to_goal, -bound, bound)
  d = np.linspace(-bound, bound, points)
  dx, dy = np.meshgrid(d, d)
  cand = np.zeros((points * points, 7), np.float32)
  cand[:, 0], cand[:, 1], cand[:, 2] = dx.ravel(), dy.ravel(), best[2]
  graphdef, params = nnx.split(world_model.module_of(predictor))
  e = _energies(graphdef, params, planner.encode(frame), jnp.asarray(state), goal,
                jnp.asarray(cand))
  energy = np.asarray(e).reshape(points, points)
  # Distance to the goal after each candidate step (what the energy should order).
  after = to_goal[None, :2] - cand[:, :2]
  dist = np.hypot(after[:, 0], after[:, 1]).reshape(points, points)
  return {"xs": d, "ys": d, "energy": energy, "distance": dist, "best": best[:2],
          "rho": rank_correlation(energy, dist)}


def plot(path: str, enc: dict | None, pred: dict | None, title: str = "") -> None:
  """One PNG with the encoder (left) and predictor (right) landscapes."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  panels = [(k, v) for k, v in (("encoder", enc), ("predictor", pred)) if v is not None]
  fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.9), squeeze=False)
  for ax, (kind, land) in zip(axes[0], panels):
    xs, ys, e = land["xs"], land["ys"], land["energy"]
    im = ax.imshow(e, origin="lower", cmap="viridis", aspect="auto",
                   extent=[xs[0], xs[-1], ys[0], ys[-1]])
    fig.colorbar(im, ax=ax, label="energy")
    j, i = np.unravel_index(np.argmin(e), e.shape)
    ax.plot(xs[i], ys[j], "wx", markersize=9, label="energy minimum")
    if kind == "encoder":
      ax.plot(*land["goal"], "r+", markersize=12, label="goal")
      ax.set_xlabel("end-effector x (m)")
      ax.set_ylabel("end-effector y (m)")
      ax.set_title(f"real frames: rho {land['rho']:.2f}", fontsize=9)
    else:
      ax.plot(*land["best"], "r+", markersize=12, label="step to goal")
      ax.set_xlabel("action dx (m)")
      ax.set_ylabel("action dy (m)")
      ax.set_title(f"predicted, one step: rho {land['rho']:.2f}", fontsize=9)
    ax.legend(loc="upper right", fontsize=7)
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
