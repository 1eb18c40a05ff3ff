r"""Offline evaluation of a V-JEPA 2-AC world model on held-out clips: no robot needed.

  python -m vjepa_jax.evaluate --data gs://.../droid/1.0.1 --converted converted/vitg-ac --out eval/
  python -m vjepa_jax.evaluate --data DIR --workdir runs/finetune --out eval/
  python -m vjepa_jax.evaluate --data DIR --workdir runs/finetune --converted converted/vitg-ac \
      --out eval/

With both `--workdir` and `--converted` the fine-tune is evaluated and the converted (base)
model is scored on the same clips as a baseline: the report shows both and their differences.

Metrics (all on layer-normed per-frame encoder latents, as the model is trained and used):

- `teacher_forcing_l1`: mean |prediction of frame t+1 - latent of frame t+1| with the true
  frames, actions and states as context (the training's teacher-forcing loss).
- `rollout_l1/h{k}`: the same after k autoregressive steps from frame 0, feeding predictions back
  in (true actions and states), k = 1..K; `rollout_l1/h1` equals the teacher-forcing error of the
  first transition.
- Energy-argmin action inference: for adjacent frame pairs (t, t+1), the action minimising the
  planning energy `mean |LN(pred(z_t, a, s_t)) - z_{t+1}|` (xyz grid search with rotation and
  gripper deltas 0 as the official energy-landscape notebook, or CEM), compared with the true
  action: per-axis absolute error `action_abs_err/{x,y,z}` (m), direction cosine
  `action_cosine`, and their fraction above 0 `action_cosine_positive`.
- Camera-axis calibration: the rotation R minimising sum |R a_inferred - a_true|^2 (orthogonal
  Procrustes via SVD; the paper fits it because the model only sees the scene through a camera of
  unknown placement), its angle `calibration/angle_deg` and the residual
  `calibration/residual_cm` (RMS over pairs, cm), next to the uncalibrated residual.

Outputs of `write_outputs`: `report.json`, TensorBoard scalars (`tensorboard/`), and PNG figures
(`rollout_l1.png`, `energy_landscape_{i}.png`: energy over an xy grid around the true action).

Periodic evaluation during training calls
`evaluate.run(encoder, predictor, batches, cfg) -> dict[str, float]`: `batches` is an iterable of
dicts with `video` uint8 `[B, T, H, W, 3]`, `states` `[B, T, A]`, `actions` `[B, T-1, A]` (what
`vjepa_jax.data.batches` yields on the held-out split); the result maps metric names
prefixed `eval/` to floats, ready for a metric writer. Compiled functions are cached per model
structure, so repeated calls during training do not recompile.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import json
import pathlib
import sys
from typing import Any, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from vjepa_jax.models import flags
from vjepa_jax.models import layers
from vjepa_jax.models import world_model
from vjepa_jax.planning import cem
from vjepa_jax.planning import plan_function
from vjepa_jax.planning import poses

AXES = ("x", "y", "z")
SEARCHES = ("grid", "cem")


def default_config() -> ml_collections.ConfigDict:
  """Evaluation config.

  Fields:
    max_batches: batches to evaluate (0 = all the iterable yields).
    rollout_horizon: K, the longest autoregressive rollout scored (capped at T-1).
    search: "grid" (official energy-landscape notebook: an xyz grid, rotation and gripper 0) or
      "cem" (the planner, horizon 1).
    grid_points, grid_extent: points per axis and half-width (m) of the xyz search grid.
    max_pairs_per_batch: adjacent frame pairs per batch used for action inference (0 = all).
    landscapes: number of energy-landscape figures (evaluated pairs with the largest xyz motion
      of the first batches; idle pairs are never chosen).
    landscape_points, landscape_extent: xy grid of the figures, centred on the true action.
    sample_chunk: candidate actions rolled out at once (0 = all, -1 = automatic, see
      `models.world_model.resolve_sample_chunk`).
    crop: crop of the clips' frames (`vjepa_jax.preprocess`; "ac", what training and the planner
      use by default); clips already cut by the data pipeline pass it unchanged.
    cem: planner config for `search="cem"` (its horizon is forced to 1).
    seed: PRNG seed of the CEM search.
  """
  c = ml_collections.ConfigDict()
  c.max_batches = 0
  c.rollout_horizon = 3
  c.search = "grid"
  c.grid_points = 9
  c.grid_extent = 0.075
  c.max_pairs_per_batch = 8
  c.landscapes = 2
  c.landscape_points = 15
  c.landscape_extent = 0.05
  c.sample_chunk = -1
  c.crop = "ac"
  c.cem = cem.default_config()
  c.cem.samples = 200
  c.cem.iterations = 5
  c.seed = 0
  return c


# -- Compiled pieces (graph definitions are static, so each model structure compiles once) ----


@functools.partial(jax.jit, static_argnums=(0, 2, 3))
def _encode(graphdef, params, size: int, crop: str, video: jnp.ndarray) -> jnp.ndarray:
  """uint8 `[B, T, H, W, 3]` -> layer-normed latents `[B, T, h*w, D]`."""
  encoder = world_model.inference_module(graphdef, params)
  z = world_model.encode_latents(encoder, video, size, crop)
  return z.reshape(video.shape[:2] + (-1, z.shape[-1]))


@functools.partial(jax.jit, static_argnums=(0, 5))
def _prediction_errors(graphdef, params, z, actions, states, horizon: int):
  """Teacher-forcing L1 `[B]` and rollout L1 `[B, horizon]`."""
  model = world_model.inference_module(graphdef, params)
  b, t, hw, d = z.shape
  norm = layers.layer_norm_no_affine
  pred, cache = model(z[:, :-1].reshape(b, -1, d), actions, states[:, :-1],
                      cache=model.empty_cache())
  pred = norm(pred).reshape(b, t - 1, hw, d)
  tf = jnp.mean(jnp.abs(pred - z[:, 1:]), axis=(1, 2, 3))
  # The rollout's first prediction is the teacher-forcing pass's first frame; later steps
  # continue from its cached keys/values.
  frames = [pred[:, 0]] + world_model.rollout_frames(
      model, cache.first_steps(1), pred[:, 0], actions[:, 1:horizon], states[:, 1:horizon], norm)
  errors = [jnp.mean(jnp.abs(f - z[:, h + 1]), axis=(1, 2)) for h, f in enumerate(frames)]
  return tf, jnp.stack(errors, axis=1)


def _pair_energies(model, context, pose, goal, candidates, chunk: int):
  """Energies `[C]` of candidate actions `[C, A]` from one frame pair."""
  ctx = world_model.prepare_context(model, context[None], pose[None, None])
  return world_model.rollout_energy(model, ctx, candidates[:, None], goal, poses.integrate_pose,
                                    chunk)


@functools.partial(jax.jit, static_argnums=(0, 6))
def _grid_search(graphdef, params, context, pose, goal, candidates, chunk: int):
  """Per pair (`context`, `goal` `[N, h*w, D]`, `pose` `[N, A]`): the lowest-energy candidate
  `[N, A]` and its energy `[N]`."""
  model = world_model.inference_module(graphdef, params)

  def one(args):
    e = _pair_energies(model, *args, candidates, chunk)
    i = jnp.argmin(e)
    return candidates[i], e[i]

  return jax.lax.map(one, (context, pose, goal))


@functools.partial(jax.jit, static_argnums=(0, 6))
def _cem_search(graphdef, params, context, pose, goal, keys,
                cfg: ml_collections.FrozenConfigDict):
  model = world_model.inference_module(graphdef, params)

  def one(args):
    c, p, g, k = args
    ctx = world_model.prepare_context(model, c[None], p[None, None])
    energy_fn = lambda a: world_model.rollout_energy(  # noqa: E731
        model, ctx, a, g, poses.integrate_pose, cfg.sample_chunk)
    res = cem.cem_search(energy_fn, k, cfg)
    return res.actions[0], res.energies[-1]

  return jax.lax.map(one, (context, pose, goal, keys))


@functools.partial(jax.jit, static_argnums=(0, 6))
def _landscape(graphdef, params, context, pose, goal, candidates, chunk: int):
  """Energies `[N, C]` of per-pair candidates `[N, C, A]`."""
  model = world_model.inference_module(graphdef, params)
  return jax.lax.map(lambda a: _pair_energies(model, *a[:3], a[3], chunk),
                     (context, pose, goal, candidates))


# -- Pure metric functions -------------------------------------------------------------------


def xyz_grid(points: int, extent: float, action_dim: int = 7) -> np.ndarray:
  """Candidate actions `[points^3, A]`: an xyz grid in [-extent, extent] on the first three
  action dimensions (the translation), the other deltas 0."""
  axis = np.linspace(-extent, extent, points, dtype=np.float32)
  xyz = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
  return np.concatenate([xyz, np.zeros((xyz.shape[0], action_dim - 3), np.float32)], axis=1)


def landscape_grid(true_action: np.ndarray, points: int, extent: float
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """xy grid around a true action `[A]`: (xs [L], ys [L], candidates [L*L, A], y-major)."""
  xs = true_action[0] + np.linspace(-extent, extent, points, dtype=np.float32)
  ys = true_action[1] + np.linspace(-extent, extent, points, dtype=np.float32)
  cand = np.tile(true_action.astype(np.float32), (points * points, 1))
  yy, xx = np.meshgrid(ys, xs, indexing="ij")
  cand[:, 0], cand[:, 1] = xx.reshape(-1), yy.reshape(-1)
  return xs, ys, cand


def direction_cosine(inferred: np.ndarray, true: np.ndarray) -> np.ndarray:
  """Cosine `[N]` between xyz vectors `[N, 3]` (0 where either is zero)."""
  num = np.sum(inferred * true, axis=-1)
  den = np.linalg.norm(inferred, axis=-1) * np.linalg.norm(true, axis=-1)
  return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def calibrate_axes(inferred: np.ndarray, true: np.ndarray) -> dict[str, Any]:
  """Least-squares rotation from inferred to true xyz displacements (orthogonal Procrustes).

  Args:
    inferred, true: `[N, 3]` displacements (m).

  Returns:
    `rotation` `[3, 3]` (R with R @ inferred_i ~ true_i, det +1), `angle_deg` (its rotation
    angle), `residual_cm` (RMS |R inferred - true| in cm) and `residual_cm_uncalibrated`
    (RMS |inferred - true|).
  """
  inferred, true = np.asarray(inferred, np.float64), np.asarray(true, np.float64)
  if inferred.shape != true.shape or inferred.ndim != 2 or inferred.shape[1] != 3:
    raise ValueError(f"need two [N, 3] arrays, got {inferred.shape} and {true.shape}")
  if inferred.shape[0] < 2:
    raise ValueError("calibration needs at least 2 displacement pairs")
  u, _, vt = np.linalg.svd(inferred.T @ true)
  fix = np.diag([1.0, 1.0, np.sign(np.linalg.det(vt.T @ u.T))])
  rot = vt.T @ fix @ u.T
  rms = lambda d: float(np.sqrt(np.mean(np.sum(d * d, axis=-1))) * 100.0)  # noqa: E731
  angle = np.degrees(np.arccos(np.clip((np.trace(rot) - 1.0) / 2.0, -1.0, 1.0)))
  return {"rotation": rot, "angle_deg": float(angle),
          "residual_cm": rms(inferred @ rot.T - true),
          "residual_cm_uncalibrated": rms(inferred - true)}


@dataclasses.dataclass
class Results:
  """Everything one evaluation produced.

  Attributes:
    scalars: metric name (prefixed `eval/`) -> float.
    rollout_l1: `[K]` mean rollout error per horizon.
    inferred, true: `[N, A]` energy-argmin and true actions of the evaluated pairs.
    calibration: output of `calibrate_axes` (None with fewer than 2 pairs).
    landscapes: list of dicts with `xs`, `ys`, `energy` `[L, L]`, `true` `[A]` and `pair` (where
      the frame pair comes from: batch, clip and step in the clip, and the clip's episode id and
      raw step index when the batch has them).
  """
  scalars: dict[str, float]
  rollout_l1: np.ndarray
  inferred: np.ndarray
  true: np.ndarray
  calibration: dict[str, Any] | None
  landscapes: list[dict[str, np.ndarray]]


def _check_batch(batch: Mapping[str, np.ndarray], action_dim: int) -> tuple[int, int]:
  for key in ("video", "states", "actions"):
    if key not in batch:
      raise ValueError(f"evaluation batches need 'video', 'states' and 'actions'; missing {key!r}")
  video, states, actions = (np.asarray(batch[k]) for k in ("video", "states", "actions"))
  if video.ndim != 5 or video.shape[-1] != 3 or video.dtype != np.uint8:
    raise ValueError(f"video must be uint8 [B, T, H, W, 3], got {video.dtype} {video.shape}")
  b, t = video.shape[:2]
  if t < 2:
    raise ValueError(f"clips need at least 2 frames, got T={t}")
  a = action_dim
  if states.shape != (b, t, a) or actions.shape != (b, t - 1, a):
    raise ValueError(f"states must be [{b}, {t}, {a}] and actions [{b}, {t - 1}, {a}] (the "
                     f"predictor's action_dim is {a}); got {states.shape} and {actions.shape}")
  return b, t


def compute(encoder: Any, predictor: Any, batches: Iterable[Mapping[str, np.ndarray]],
            cfg: ml_collections.ConfigDict | None = None) -> Results:
  """Runs every metric over `batches` (see the module docstring)."""
  cfg = default_config() if cfg is None else cfg
  if cfg.search not in SEARCHES:
    raise ValueError(f"search must be one of {SEARCHES}, got {cfg.search!r}")
  encoder, predictor = world_model.module_of(encoder), world_model.module_of(predictor)
  enc_def, enc_params = nnx.split(encoder)
  pred_def, pred_params = nnx.split(predictor)
  size = predictor.cfg.img_size
  action_dim = predictor.cfg.action_dim
  grid = jnp.asarray(xyz_grid(cfg.grid_points, cfg.grid_extent, action_dim))
  grid_chunk = world_model.resolve_sample_chunk(cfg.sample_chunk, grid.shape[0])
  land_chunk = world_model.resolve_sample_chunk(cfg.sample_chunk, cfg.landscape_points ** 2)
  cem_cfg = cfg.cem.copy_and_resolve_references()
  cem_cfg.horizon = 1
  cem_cfg = ml_collections.FrozenConfigDict(plan_function.resolve(cem_cfg, predictor.cfg))
  key = jax.random.key(cfg.seed)
  tf_all, ro_all, inferred, true, landscapes = [], [], [], [], []
  for i, batch in enumerate(batches):
    if cfg.max_batches and i >= cfg.max_batches:
      break
    b, t = _check_batch(batch, action_dim)
    horizon = min(cfg.rollout_horizon, t - 1)
    states = jnp.asarray(batch["states"], jnp.float32)
    actions = jnp.asarray(batch["actions"], jnp.float32)
    z = _encode(enc_def, enc_params, size, cfg.crop, jnp.asarray(batch["video"]))
    tf, ro = _prediction_errors(pred_def, pred_params, z, actions, states, horizon)
    tf_all.append(np.asarray(tf))
    ro_all.append(np.asarray(ro))
    pairs = [(bi, ti) for bi in range(b) for ti in range(t - 1)]
    if cfg.max_pairs_per_batch:
      pairs = pairs[:cfg.max_pairs_per_batch]
    bi, ti = (jnp.asarray(x) for x in zip(*pairs))
    context, goal, pose = z[bi, ti], z[bi, ti + 1], states[bi, ti]
    if cfg.search == "grid":
      found, _ = _grid_search(pred_def, pred_params, context, pose, goal, grid, grid_chunk)
    else:
      keys = jax.random.split(jax.random.fold_in(key, i), len(pairs))
      found, _ = _cem_search(pred_def, pred_params, context, pose, goal, keys, cem_cfg)
    inferred.append(np.asarray(found))
    true.append(np.asarray(actions[bi, ti]))
    want = cfg.landscapes - len(landscapes)
    if want > 0:
      landscapes += _landscapes(pred_def, pred_params, batch, i, pairs, context, pose, goal,
                                np.asarray(actions[bi, ti]), want, cfg, land_chunk)
  if not tf_all:
    raise ValueError("no evaluation batches: the iterable was empty")
  return _summarise(tf_all, ro_all, np.concatenate(inferred), np.concatenate(true), landscapes)


def _landscapes(pred_def, pred_params, batch, batch_index, pairs, context, pose, goal, true,
                want: int, cfg, chunk: int) -> list[dict]:
  """Energy landscapes of up to `want` evaluated pairs, those with the most xyz motion first.

  Idle pairs (zero true action, such as the first steps of an episode) are skipped: their
  landscape only shows that standing still is cheap.
  """
  motion = np.linalg.norm(true[:, :3], axis=-1)
  chosen = [int(j) for j in np.argsort(-motion, kind="stable") if motion[j] > 0][:want]
  if not chosen:
    return []
  grids = [landscape_grid(true[j], cfg.landscape_points, cfg.landscape_extent) for j in chosen]
  idx = jnp.asarray(chosen)
  energy = _landscape(pred_def, pred_params, context[idx], pose[idx], goal[idx],
                      jnp.asarray(np.stack([g[2] for g in grids])), chunk)
  out = []
  for j, e, (xs, ys, _) in zip(chosen, energy, grids):
    clip, step = pairs[j]
    pair = {"batch": batch_index, "clip": clip, "step": step,
            "motion_m": float(motion[j])}
    if "episode_id" in batch:
      pair["episode_id"] = np.asarray(batch["episode_id"])[clip].decode(errors="replace")
    if "step_index" in batch:
      pair["step_index"] = int(np.asarray(batch["step_index"])[clip, step])
    out.append({"xs": xs, "ys": ys, "true": true[j], "pair": pair,
                "energy": np.asarray(e).reshape(len(ys), len(xs))})
  return out


def _summarise(tf_all, ro_all, inferred, true, landscapes) -> Results:
  k = min(r.shape[1] for r in ro_all)
  rollout_l1 = np.concatenate([r[:, :k] for r in ro_all]).mean(0)
  scalars = {"eval/teacher_forcing_l1": float(np.concatenate(tf_all).mean()),
             "eval/num_clips": float(sum(len(x) for x in tf_all)),
             "eval/num_pairs": float(len(true))}
  for h, v in enumerate(rollout_l1):
    scalars[f"eval/rollout_l1/h{h + 1}"] = float(v)
  err = np.abs(inferred[:, :3] - true[:, :3]).mean(0)
  for name, v in zip(AXES, err):
    scalars[f"eval/action_abs_err/{name}"] = float(v)
  cos = direction_cosine(inferred[:, :3], true[:, :3])
  scalars["eval/action_cosine"] = float(cos.mean())
  scalars["eval/action_cosine_positive"] = float((cos > 0).mean())
  calibration = None
  if len(true) >= 2:
    calibration = calibrate_axes(inferred[:, :3], true[:, :3])
    scalars["eval/calibration/angle_deg"] = calibration["angle_deg"]
    scalars["eval/calibration/residual_cm"] = calibration["residual_cm"]
    scalars["eval/calibration/residual_cm_uncalibrated"] = (
        calibration["residual_cm_uncalibrated"])
  return Results(scalars, rollout_l1, inferred, true, calibration, landscapes)


def run(encoder: Any, predictor: Any, batches: Iterable[Mapping[str, np.ndarray]],
        cfg: ml_collections.ConfigDict | None = None) -> dict[str, float]:
  """Scalar metrics `{"eval/...": float}` of `compute` (the entry point for periodic eval)."""
  return compute(encoder, predictor, batches, cfg).scalars


def plot_rollout(path: str, rollout_l1: np.ndarray,
                 baseline: np.ndarray | None = None) -> None:
  """Rollout error vs horizon (and the baseline model's, if given)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(4.5, 3.2))
  h = np.arange(1, len(rollout_l1) + 1)
  ax.plot(h, rollout_l1, marker="o", label="evaluated model")
  if baseline is not None:
    ax.plot(h[:len(baseline)], baseline[:len(h)], marker="s", linestyle="--", label="baseline")
    ax.legend(fontsize=8)
  ax.set_xlabel("rollout horizon (steps)")
  ax.set_ylabel("L1 to true latent")
  ax.set_xticks(h)
  ax.set_title("World-model rollout error")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_landscape(path: str, landscape: Mapping[str, np.ndarray]) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  xs, ys, e, true = (landscape[k] for k in ("xs", "ys", "energy", "true"))
  fig, ax = plt.subplots(figsize=(4.8, 4.0))
  im = ax.imshow(e, origin="lower", cmap="viridis", aspect="auto",
                 extent=[xs[0], xs[-1], ys[0], ys[-1]])
  fig.colorbar(im, ax=ax, label="energy")
  ax.plot(true[0], true[1], "r+", markersize=12, label="true action")
  j, i = np.unravel_index(np.argmin(e), e.shape)
  ax.plot(xs[i], ys[j], "wx", markersize=9, label="energy minimum")
  ax.set_xlabel("action dx (m)")
  ax.set_ylabel("action dy (m)")
  ax.legend(loc="upper right", fontsize=7)
  pair = landscape.get("pair", {})
  where = (f"{pair['episode_id']} step {pair['step_index']}" if "step_index" in pair
           else f"clip {pair.get('clip')} step {pair.get('step')}")
  ax.set_title(f"Energy landscape, {where}\n(dz, rotation, gripper = true)", fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def write_tensorboard(logdir: str, scalars: Mapping[str, float], step: int) -> None:
  import tensorflow as tf
  writer = tf.summary.create_file_writer(logdir)
  with writer.as_default():
    for name, value in scalars.items():
      tf.summary.scalar(name, value, step=step)
  writer.flush()
  writer.close()


def write_outputs(results: Results, out_dir: str, step: int = 0,
                  extra: Mapping[str, Any] | None = None,
                  baseline: Results | None = None) -> dict[str, Any]:
  """Writes `report.json`, TensorBoard scalars and PNG figures; returns the report dict.

  With `baseline` (e.g. the base model a fine-tune started from, scored on the same batches) the
  report also holds its scalars and the differences, and TensorBoard gets them under
  `eval_base/`.
  """
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  report = {"step": step, "scalars": results.scalars,
            "rollout_l1": results.rollout_l1.tolist(),
            "pairs": {"inferred": results.inferred.tolist(), "true": results.true.tolist()}}
  report["landscapes"] = [land["pair"] for land in results.landscapes]
  if results.calibration is not None:
    report["calibration"] = {k: (v.tolist() if isinstance(v, np.ndarray) else v)
                             for k, v in results.calibration.items()}
  tb_scalars = dict(results.scalars)
  if baseline is not None:
    report["baseline_scalars"] = baseline.scalars
    report["minus_baseline"] = {k: v - baseline.scalars[k] for k, v in results.scalars.items()
                                if k in baseline.scalars}
    tb_scalars.update({k.replace("eval/", "eval_base/", 1): v
                       for k, v in baseline.scalars.items()})
  report.update(dict(extra or {}))
  (out / "report.json").write_text(json.dumps(report, indent=2))
  write_tensorboard(str(out / "tensorboard"), tb_scalars, step)
  plot_rollout(str(out / "rollout_l1.png"), results.rollout_l1,
               None if baseline is None else baseline.rollout_l1)
  for i, land in enumerate(results.landscapes):
    plot_landscape(str(out / f"energy_landscape_{i}.png"), land)
  return report


# -- Command line ----------------------------------------------------------------------------


def _load_models(args: argparse.Namespace) -> list[tuple[str, Any, Any]]:
  """[(name, encoder, predictor)]: the model to evaluate first, then the baseline if any."""
  out = []
  for source in flags.given_sources(args):
    path = getattr(args, source)
    encoder, predictor = flags.load(args, source)
    if predictor is None:
      raise ValueError(f"{path} has no AC predictor to evaluate (a pre-training encoder only)")
    out.append((path, encoder, predictor))
  return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m vjepa_jax.evaluate", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--data", help="DROID-format TFDS version directory (required)")
  p.add_argument("--out", help="output directory (required)")
  flags.add_model_options(p)
  p.add_argument("--split", default="val", choices=("val", "train", "all"),
                 help="episodes by a stable hash of their file path: val (held out), train, or "
                      "all (e.g. a run trained with data.val_fraction=0)")
  p.add_argument("--val-fraction", type=float, default=None,
                 help="held-out fraction defining the split (default: the run's with --workdir, "
                      "else the data default)")
  p.add_argument("--camera", default=None)
  p.add_argument("--spec", default=None,
                 help="dataset spec (preset name or spec .py; default: the run's with --workdir "
                      "on its own data, else guessed from the dataset's features)")
  p.add_argument("--frames", type=int, default=4, help="frames per clip (T)")
  p.add_argument("--batch-size", type=int, default=4)
  p.add_argument("--max-batches", type=int, default=8)
  p.add_argument("--horizon", type=int, default=3, help="longest rollout K")
  p.add_argument("--search", choices=SEARCHES, default="grid")
  p.add_argument("--grid-points", type=int, default=9)
  p.add_argument("--max-pairs", type=int, default=8, help="frame pairs per batch")
  p.add_argument("--tb-step", type=int, default=0, help="step recorded in TensorBoard")
  args = p.parse_args(argv)
  errors = [f"--{name} is required" for name in ("data", "out") if not getattr(args, name)]
  sources = flags.given_sources(args)
  if not sources:
    errors.append("give the model: --workdir (training run), --converted (converted "
                  "checkpoint) or --checkpoint (.pt); --workdir with one of the others scores "
                  "the latter as a baseline")
  elif len([s for s in sources if s != "workdir"]) > 1:
    errors.append("give at most one of --converted and --checkpoint")
  errors += flags.option_errors(args)
  if errors:
    p.error("; ".join(errors))
  return args


def _data_config(args: argparse.Namespace, img_size: int) -> ml_collections.ConfigDict:
  from vjepa_jax import data as data_lib
  cfg = data_lib.default_config()
  # Frames at their crop size: `vjepa_jax.preprocess` resizes them on the device, as training
  # and the planner do.
  cfg.update(dict(path=args.data, split=args.split, frames_per_clip=args.frames,
                  image_size=img_size, shuffle=False, deterministic=True, num_epochs=1,
                  resize_on_host=False))
  if args.workdir:
    from vjepa_jax.models import workdir as workdir_lib
    trained = workdir_lib.read_run(args.workdir)["config"]["data"]
    cfg.val_fraction = trained["val_fraction"]
    if trained.get("path") == args.data:
      # The run's own data: read it as the run did (its spec, camera and frame step).
      cfg.update({k: trained[k] for k in ("spec", "camera", "frame_step", "crop") if k in trained})
  if args.val_fraction is not None:
    cfg.val_fraction = args.val_fraction
  if args.camera:
    cfg.camera = args.camera
  if args.spec:
    cfg.spec = args.spec
  return cfg


def _empty_split_hint(args: argparse.Namespace, data: ml_collections.ConfigDict) -> str:
  if data.split == "val" and data.val_fraction == 0.0:
    return (f"--split val holds no episodes: {'the run' if args.workdir else 'the data config'} "
            "held out none (data.val_fraction=0). Score the training episodes with --split all "
            "(or --split train), or hold some out with --val-fraction F")
  return (f"the {data.split!r} split of {args.data} gives fewer than --batch-size "
          f"{args.batch_size} clips of --frames {args.frames}: try --split all, a smaller "
          "--batch-size or fewer --frames")


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  from vjepa_jax import data as data_lib
  try:
    models = _load_models(args)
    data = _data_config(args, models[0][2].cfg.img_size)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  try:
    data_lib.check_config(data)
  except ValueError as e:
    hint = f"\n{_empty_split_hint(args, data)}" if "empty split" in str(e) else ""
    print(f"error: {e}{hint}", file=sys.stderr)
    return 2
  cfg = default_config()
  cfg.update(dict(max_batches=args.max_batches, rollout_horizon=args.horizon,
                  search=args.search, grid_points=args.grid_points,
                  max_pairs_per_batch=args.max_pairs))
  # Held in memory so a baseline is scored on exactly the same clips.
  it = data_lib.batches(data, args.batch_size)
  try:
    batches = list(itertools.islice(it, args.max_batches or None))
  except ValueError as e:
    if "empty split" not in str(e):
      raise
    print(f"error: {e}\n{_empty_split_hint(args, data)}", file=sys.stderr)
    return 2
  finally:
    it.close()
  if not batches:
    print(f"error: {_empty_split_hint(args, data)}", file=sys.stderr)
    return 2
  results = [compute(encoder, predictor, batches, cfg) for _, encoder, predictor in models]
  write_outputs(results[0], args.out, args.tb_step,
                extra={"data": args.data, "split": args.split, "weights": models[0][0],
                       "baseline_weights": models[1][0] if len(models) > 1 else None,
                       "config": cfg.to_dict()},
                baseline=results[1] if len(results) > 1 else None)
  for name, value in results[0].scalars.items():
    base = f"   (baseline {results[1].scalars[name]:.6g})" if len(results) > 1 else ""
    print(f"{name:45s} {value:.6g}{base}")
  print(f"wrote {args.out}/report.json, tensorboard/, *.png")
  return 0


if __name__ == "__main__":
  sys.exit(main())
