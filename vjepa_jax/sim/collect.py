"""Collects scripted episodes in simulation and writes them as a dataset the trainer reads.

  python -m vjepa_jax.sim.collect --task reach --episodes 100 --out DATA
  python -m vjepa_jax.main --config configs/sim_franka.py --workdir RUN --config.data.path=DATA

`--format rlds` (default) writes a TFDS directory in the DROID RLDS feature layout (one exterior
camera, `exterior_image_1_left`; `observation/cartesian_position` and `gripper_position` are the
simulator's 7-D state, `observation/joint_position` the arm joints, `action_dict/*` the next
step's state as the command) through `vjepa_jax.data.synthetic`'s writer, so
`droid.make_clip_dataset` reads it like DROID. `sim.json` beside it records the simulator
settings (task, camera, image size) for `vjepa_jax.sim.evaluate`. `--format lerobot` writes a
LeRobot v3.0 dataset (spec `lerobot_pose`, H.264 video) through `vjepa_jax.data.writers`; the
trainer reads either with the same config.
Episodes come from `expert.ScriptedExpert` with exploration noise and random motions; episode i
uses seed `seed + i` (the same episodes for any `--workers`).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Sequence

import numpy as np

from vjepa_jax.sim import env as env_lib
from vjepa_jax.sim import expert as expert_lib
from vjepa_jax.sim import render as render_lib

FORMATS = ("rlds", "lerobot")
CAMERA_KEY = "exterior_image_1_left"
SIM_FILE = "sim.json"
INSTRUCTIONS = {"reach": "move the gripper to the green target",
                "push": "push the green cube to the target",
                "pick_and_place": "put the green cube on the target"}
# Velocity units of DROID's action_dict (1 = this much per step).
MAX_LINEAR, MAX_GRIPPER, MAX_JOINT = 0.075, 0.25, 0.2
# The rows' rate in a LeRobot dataset: one row per control step. Clips take every frame
# (`data.frame_step=1` in configs/sim_franka.py), so the value only labels the timestamps.
LEROBOT_FPS = 4


def run_episode(sim: env_lib.FrankaSim, expert: expert_lib.ScriptedExpert, seed: int,
                stop_on_success: bool = False) -> dict:
  """One episode: frames uint8 `[T, S, S, 3]`, states `[T, 7]`, joints `[T, 7]`, success."""
  frame, state = sim.reset(seed)
  expert.reset()
  frames, states, joints = [frame], [state], [sim.joints()]
  success = False
  for _ in range(sim.cfg.max_steps):
    info = sim.step(expert.act())
    frame, state = sim.observe()
    frames.append(frame)
    states.append(state)
    joints.append(sim.joints())
    success = success or info["is_success"]
    if stop_on_success and success:
      break
  return {"frames": np.stack(frames), "states": np.stack(states), "joints": np.stack(joints),
          "success": success, "seed": seed}


def _jpegs(frames: np.ndarray, quality: int) -> list[bytes]:
  import tensorflow as tf
  return [tf.io.encode_jpeg(f, quality=quality).numpy() for f in frames]


def droid_episode(ep: dict, task: str, index: int, jpeg_quality: int = 95) -> dict:
  """An episode from `run_episode` as the dict `vjepa_jax.data.synthetic` serializes."""
  states = ep["states"].astype(np.float64)
  joints = ep["joints"].astype(np.float64)
  nxt = np.concatenate([states[1:], states[-1:]])
  nxt_joints = np.concatenate([joints[1:], joints[-1:]])
  delta = nxt - states
  # The orientation is held fixed: its commanded velocity is 0.
  velocity = np.concatenate([delta[:, :3] / MAX_LINEAR, np.zeros_like(delta[:, 3:6])], axis=1)
  outcome = "success" if ep["success"] else "failure"
  root = f"sim/panda/{task}/{outcome}/seed_{ep['seed']}/episode_{index:05d}"
  return {
      "file_path": root + "/trajectory.h5",
      "recording_folderpath": root + "/recordings",
      "language_instruction": INSTRUCTIONS[task],
      "success": bool(ep["success"]),
      "observation/cartesian_position": states[:, :6],
      "observation/gripper_position": states[:, 6:],
      "observation/joint_position": joints,
      "action_dict/cartesian_position": nxt[:, :6],
      "action_dict/cartesian_velocity": np.clip(velocity, -1.0, 1.0),
      "action_dict/gripper_position": nxt[:, 6:],
      "action_dict/gripper_velocity": np.clip(delta[:, 6:] / MAX_GRIPPER, -1.0, 1.0),
      "action_dict/joint_position": nxt_joints,
      "action_dict/joint_velocity": np.clip((nxt_joints - joints) / MAX_JOINT, -1.0, 1.0),
      "images": {CAMERA_KEY: _jpegs(ep["frames"], jpeg_quality)},
  }


def write_rlds(out_dir: str, episodes: Sequence[dict], task: str, image_size: int,
               shards: int = 1) -> list[str]:
  """Writes `run_episode` outputs as a DROID-layout TFDS directory; returns the shard paths."""
  from vjepa_jax.data import synthetic
  if not episodes:
    raise ValueError("no episodes to write")
  eps = [droid_episode(ep, task, i) for i, ep in enumerate(episodes)]
  return synthetic.write_dataset(out_dir, eps, num_shards=min(shards, len(eps)),
                                 name="sim_panda_" + task, image_hw=(image_size, image_size))


def write_lerobot(out_dir: str, episodes: Sequence[dict], task: str, fps: int) -> dict:
  """Writes `run_episode` outputs as a LeRobot v3.0 dataset (spec `lerobot_pose`: the 7-D state
  in `observation.state`, the camera as `observation.images.exterior_image_1_left`, H.264)."""
  from vjepa_jax.data import writers
  if not episodes:
    raise ValueError("no episodes to write")
  eps = [{"frames": {CAMERA_KEY: ep["frames"]}, "states": ep["states"],
          "language": INSTRUCTIONS[task], "success": bool(ep["success"]),
          "episode_id": f"sim/panda/{task}/seed_{ep['seed']}"} for ep in episodes]
  return writers.write_lerobot(out_dir, eps, spec="lerobot_pose", fps=fps,
                               robot_type="panda_sim")


def _collect_seeds(cfg_dict: dict, seeds: Sequence[int], expert_kw: dict,
                   log_every: int = 0) -> list[dict]:
  """Episodes for `seeds` in one simulator; episode `s` draws its expert noise from
  `default_rng([s, 2])`, so results do not depend on how seeds are split over workers."""
  start = time.time()
  runs = []
  with env_lib.FrankaSim(env_lib.SimConfig.from_dict(cfg_dict)) as sim:
    for i, s in enumerate(seeds):
      expert = expert_lib.ScriptedExpert(sim, np.random.default_rng([s, 2]), explore=True,
                                         **expert_kw)
      runs.append(run_episode(sim, expert, s))
      if log_every and (i + 1) % log_every == 0:
        print(f"episode {i + 1}/{len(seeds)} ({time.time() - start:.0f} s)", flush=True)
  return runs


def collect(cfg: env_lib.SimConfig, episodes: int, out_dir: str, fmt: str = "rlds",
            seed: int = 0, noise: float = 0.3, random_motion: float = 0.1,
            speed: tuple[float, float] = (0.3, 1.0), shards: int = 1, workers: int = 1,
            log_every: int = 10) -> dict:
  """Runs and writes `episodes` episodes (over `workers` processes); returns a summary."""
  if fmt not in FORMATS:
    raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
  if episodes < 1 or workers < 1:
    raise ValueError(f"episodes and workers must be >= 1, got {episodes}, {workers}")
  start = time.time()
  seeds = list(range(seed, seed + episodes))
  expert_kw = {"noise": noise, "random_motion": random_motion, "speed": tuple(speed)}
  if workers == 1:
    runs = _collect_seeds(cfg.to_dict(), seeds, expert_kw, log_every)
  else:
    import concurrent.futures
    import multiprocessing
    parts = [seeds[w::workers] for w in range(workers) if seeds[w::workers]]
    with concurrent.futures.ProcessPoolExecutor(
        len(parts), mp_context=multiprocessing.get_context("spawn")) as pool:
      done = list(pool.map(_collect_seeds, [cfg.to_dict()] * len(parts), parts,
                           [expert_kw] * len(parts), [log_every] * len(parts)))
    by_seed = {r["seed"]: r for part in done for r in part}
    runs = [by_seed[s] for s in seeds]
  if fmt == "lerobot":
    write_lerobot(out_dir, runs, cfg.task, LEROBOT_FPS)
  else:
    write_rlds(out_dir, runs, cfg.task, cfg.image_size, shards)
  with open(os.path.join(out_dir, SIM_FILE), "w") as f:
    json.dump({"sim": cfg.to_dict(), "seed": seed, "episodes": episodes, "noise": noise,
               "random_motion": random_motion, "speed": list(speed)}, f, indent=2)
  steps = sum(len(r["states"]) for r in runs)
  return {"task": cfg.task, "episodes": episodes, "steps": steps, "format": fmt,
          "out": out_dir, "expert_success_rate": float(np.mean([r["success"] for r in runs])),
          "seconds": round(time.time() - start, 1)}


def add_sim_flags(parser: argparse.ArgumentParser) -> None:
  """Simulator flags shared with `vjepa_jax.sim.evaluate`."""
  d = env_lib.SimConfig()
  parser.add_argument("--task", default="reach", choices=sorted(env_lib.TASKS))
  parser.add_argument("--image-size", type=int, default=None,
                      help=f"rendered frame side (default {d.image_size})")
  parser.add_argument("--max-steps", type=int, default=None,
                      help=f"control steps per episode (default {d.max_steps})")
  parser.add_argument("--camera-eye", type=float, nargs=3, default=None, metavar=("X", "Y", "Z"),
                      help=f"camera position, world frame (default {d.camera.eye})")
  parser.add_argument("--camera-target", type=float, nargs=3, default=None,
                      metavar=("X", "Y", "Z"), help=f"camera target (default {d.camera.target})")
  parser.add_argument("--camera-fov", type=float, default=None,
                      help=f"vertical field of view, degrees (default {d.camera.fov})")


def sim_config(args: argparse.Namespace, base: env_lib.SimConfig | None = None
               ) -> env_lib.SimConfig:
  """SimConfig from the flags; unset flags keep `base` (default: the defaults)."""
  base = base or env_lib.SimConfig()
  cam = base.camera
  cam = render_lib.Camera(eye=tuple(args.camera_eye) if args.camera_eye else cam.eye,
                          target=tuple(args.camera_target) if args.camera_target else cam.target,
                          fov=args.camera_fov if args.camera_fov else cam.fov, shadow=cam.shadow)
  return env_lib.SimConfig(
      task=args.task, camera=cam,
      image_size=args.image_size if args.image_size else base.image_size,
      max_steps=args.max_steps if args.max_steps else base.max_steps,
      substeps=base.substeps, max_step=base.max_step,
      reach_start_distance=base.reach_start_distance)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  add_sim_flags(parser)
  parser.add_argument("--episodes", type=int, required=True)
  parser.add_argument("--out", required=True, help="output dataset directory")
  parser.add_argument("--format", default="rlds", choices=FORMATS)
  parser.add_argument("--seed", type=int, default=0, help="episode i uses seed + i")
  parser.add_argument("--noise", type=float, default=0.3,
                      help="expert exploration noise, fraction of the max step")
  parser.add_argument("--random-motion", type=float, default=0.1,
                      help="probability per step of starting a random motion")
  parser.add_argument("--shards", type=int, default=1)
  parser.add_argument("--workers", type=int, default=1,
                      help="simulator processes (episodes are the same for any count)")
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  try:
    summary = collect(sim_config(args), args.episodes, args.out, args.format, args.seed,
                      args.noise, args.random_motion, shards=args.shards,
                      workers=args.workers)
  except (ValueError, NotImplementedError, ImportError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps(summary), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
