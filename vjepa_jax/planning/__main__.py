"""Plans on a recorded trajectory and prints the chosen actions next to the recorded ones.

  python -m vjepa_jax.planning --trajectory traj.npz --checkpoint vjepa2-ac-vitg.pt
  python -m vjepa_jax.planning --trajectory traj.npz --converted converted/vitg-ac
  python -m vjepa_jax.planning --trajectory traj.npz --workdir runs/finetune

The trajectory file holds `observations` uint8 `[T, H, W, 3]` or `[N, T, H, W, 3]` and `states`
`[T, 7]` or `[N, T, 7]` (the official `franka_example_traj.npz` layout). For every frame t < T-1
the planner starts from (frame t, state t) with frame t+1 (`--goal next`) or the last frame
(`--goal last`) as goal; the recorded action is the pose difference of states t and t+1. Without
weights a random tiny model is used, which only exercises the code path. `--method` picks CEM
(default), MPPI or the gradient planner; the search flags (`--samples`, `--gd-steps`, ...) are
those of `vjepa_jax.serve` and `vjepa_jax.sim.evaluate`.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Sequence

import jax
import numpy as np

from vjepa_jax import models
from vjepa_jax.models import EncoderConfig
from vjepa_jax.models import PredictorConfig
from vjepa_jax.models import flags
from vjepa_jax.planning import config as config_lib
from vjepa_jax.planning import planner as planner_lib
from vjepa_jax.planning import poses

RANDOM_WARNING = ("WARNING: no weights given (--converted, --checkpoint or --workdir): planning "
                  "with a RANDOM-INIT TINY model. The actions below are meaningless; this run only "
                  "exercises the code path.")


def random_tiny_models(seed: int = 0, img_size: int = 64):
  """A tiny random encoder/predictor pair (widths 48/64, depth 2) for smoke runs."""
  enc = EncoderConfig(embed_dim=48, depth=2, num_heads=3, mlp_hidden=192, img_size=img_size)
  pred = PredictorConfig(embed_dim=48, predictor_embed_dim=64, depth=2, num_heads=4,
                         mlp_hidden=256, img_size=img_size)
  return models.random_model("encoder", enc, seed), models.random_model("predictor", pred, seed)


def load_models(args: argparse.Namespace):
  """(encoder, predictor, description) from the weight options; random tiny models if none."""
  given = flags.given_sources(args)
  if not given:
    encoder, predictor = random_tiny_models(args.seed)
    return encoder, predictor, "RANDOM-INIT tiny model (no weights given; actions are meaningless)"
  source = given[0]
  encoder, predictor = flags.load(args, source)
  path = getattr(args, source)
  if predictor is None:
    raise ValueError(f"{path} has no AC predictor; planning needs V-JEPA 2-AC weights (e.g. "
                     "vjepa2-ac-vitg.pt)")
  kind = {"workdir": "training run", "converted": "converted", "checkpoint": "official"}[source]
  return encoder, predictor, f"{kind} {path}"


def load_trajectory(path: str, episode: int) -> tuple[np.ndarray, np.ndarray]:
  """(frames uint8 [T, H, W, 3], states float32 [T, 7]) of one recorded episode."""
  with np.load(path) as data:
    missing = {"observations", "states"} - set(data.files)
    if missing:
      raise ValueError(f"{path} lacks {sorted(missing)} (has {data.files})")
    frames, states = data["observations"], data["states"]
  if frames.ndim == 5:
    if not 0 <= episode < frames.shape[0]:
      raise ValueError(f"--episode {episode} out of range: {path} has {frames.shape[0]}")
    frames, states = frames[episode], states[episode]
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(f"observations must be uint8 [T, H, W, 3] (or [N, T, H, W, 3]), got "
                     f"{frames.dtype} {frames.shape}")
  if states.shape != (frames.shape[0], 7):
    raise ValueError(f"states must be [T={frames.shape[0]}, 7], got {states.shape}")
  if frames.shape[0] < 2:
    raise ValueError("the trajectory needs at least 2 frames")
  return frames, states.astype(np.float32)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m vjepa_jax.planning", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--trajectory", required=True, help="npz with observations and states")
  p.add_argument("--episode", type=int, default=0, help="episode index for [N, T, ...] files")
  flags.add_model_options(p)
  p.add_argument("--goal", choices=("next", "last"), default="next")
  p.add_argument("--preset", default="paper", choices=sorted(config_lib.PRESETS))
  p.add_argument("--method", choices=config_lib.METHODS, default="cem", help="search method")
  config_lib.add_search_flags(p)
  p.add_argument("--search-rotation", action="store_true")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--json", action="store_true", help="also print one JSON line per step")
  args = p.parse_args(argv)
  errors = flags.option_errors(args)
  if len(flags.given_sources(args)) > 1:
    errors.append("give at most one of --workdir, --converted, --checkpoint (got "
                  f"{', '.join('--' + s for s in flags.given_sources(args))})")
  if errors:
    p.error("; ".join(errors))
  return args


def _fmt(v: np.ndarray) -> str:
  return " ".join(f"{x:+.4f}" for x in v)


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  cfg = config_lib.with_overrides(config_lib.default_config(args.preset),
                                  config_lib.search_overrides(args))
  cfg.method = args.method
  cfg.search_rotation = args.search_rotation
  cfg.seed = args.seed
  try:
    frames, states = load_trajectory(args.trajectory, args.episode)
    encoder, predictor, description = load_models(args)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if description.startswith("RANDOM"):
    print(RANDOM_WARNING, file=sys.stderr, flush=True)
  planner = planner_lib.Planner(encoder, predictor, cfg)
  recorded = np.asarray(poses.poses_to_diffs(states))
  print(f"model: {description}; devices: {jax.devices()[0].platform} x {jax.device_count()}")
  print(f"{cfg.method}: samples {cfg.samples}, iterations {cfg.iterations}, top-k {cfg.topk}, "
        f"horizon {cfg.horizon}, maxnorm {cfg.maxnorm}; goal: {args.goal} frame")
  print("   t  kind      dx      dy      dz   droll  dpitch    dyaw   dgrip   xyz-cos  sec")
  cosines = []
  for t in range(frames.shape[0] - 1):
    goal = frames[t + 1] if args.goal == "next" else frames[-1]
    start = time.perf_counter()
    action = planner.plan(frames[t], states[t], goal)
    seconds = time.perf_counter() - start
    true = recorded[t]
    denom = np.linalg.norm(action[:3]) * np.linalg.norm(true[:3])
    cos = float(action[:3] @ true[:3] / denom) if denom > 0 else float("nan")
    cosines.append(cos)
    print(f"{t:4d}  plan   {_fmt(action)}  {cos:+.3f}  {seconds:6.2f}")
    print(f"{t:4d}  record {_fmt(true)}")
    if args.json:
      print(json.dumps({"t": t, "planned": action.tolist(), "recorded": true.tolist(),
                        "xyz_cosine": cos, "seconds": seconds}))
  print(f"mean xyz cosine (planned vs recorded): {np.nanmean(cosines):+.3f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
