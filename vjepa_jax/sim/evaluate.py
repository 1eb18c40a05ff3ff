"""Closed-loop evaluation in simulation: plan every step towards a goal image, count successes.

  python -m vjepa_jax.sim.evaluate --task reach --episodes 50 --planner cem --workdir RUN --out EVAL/cem
  python -m vjepa_jax.sim.evaluate --task reach --episodes 50 --planner random --out EVAL/random
  python -m vjepa_jax.sim.evaluate --task reach --episodes 50 --planner cem --converted DIR --out EVAL/zero_shot

Each episode (seed `--seed + i`; the default 10000 keeps them apart from collected episodes)
renders the goal image (the scene at the goal configuration), then runs receding-horizon MPC:
at every control step the planner plans from the current frame and pose to the goal image and
the first action is executed, until the task's own success test passes or `--max-steps`.
Planners: `cem`, `mppi`, `gd` (the world model's planners, `planning.Planner` with
`cfg.method`), `random` (uniform actions within the step bound) and `oracle` (the scripted
expert on the true state, no noise); the last two need no model and bound the scale.
`--server ws://HOST:PORT` plans through a running planner server instead of a local model.

Writes into `--out`: `report.json` (settings, per-episode results, summary), filmstrips/
(goal, observations and the chosen actions of each episode), `success_vs_compute.png` (this run
and every other `report.json` of the same task in sibling folders of `--out`), and with
`--landscapes K` energy-landscape PNGs of the first K episodes. The last line printed is one
JSON object with the summary.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Sequence

import numpy as np

from vjepa_jax.planning import config as planning_config
from vjepa_jax.sim import collect as collect_lib
from vjepa_jax.sim import env as env_lib
from vjepa_jax.sim import expert as expert_lib
from vjepa_jax.sim import plots

PLANNERS = ("cem", "mppi", "gd", "random", "oracle")
MODEL_PLANNERS = ("cem", "mppi", "gd")
REPORT = "report.json"
DEFAULT_SEED = 10000


# -- Policies: `start(goal_frame)` once per episode, then `act(frame, state) -> action [7]` ----

class RandomPolicy:
  """Uniform random actions within the per-axis step bound (gripper too where it moves)."""

  flops_per_step = 0.0

  def __init__(self, sim: env_lib.FrankaSim, seed: int):
    self.sim, self.rng = sim, np.random.default_rng(seed)

  def start(self, goal_frame: np.ndarray) -> None:
    del goal_frame

  def act(self, frame: np.ndarray, state: np.ndarray) -> np.ndarray:
    del frame, state
    action = np.zeros(7)
    action[:3] = self.rng.uniform(-self.sim.cfg.max_step, self.sim.cfg.max_step, 3)
    if not self.sim.blocked_gripper:
      action[6] = self.rng.uniform(-1.0, 1.0)
    return action


class OraclePolicy:
  """The scripted expert on the true scene state, without noise or random motions."""

  flops_per_step = 0.0

  def __init__(self, sim: env_lib.FrankaSim, seed: int):
    self.expert = expert_lib.ScriptedExpert(sim, np.random.default_rng(seed))

  def start(self, goal_frame: np.ndarray) -> None:
    del goal_frame
    self.expert.reset()

  def act(self, frame: np.ndarray, state: np.ndarray) -> np.ndarray:
    del frame, state
    return self.expert.act()


class PlannerPolicy:
  """A local `planning.Planner` (CEM, MPPI or gradient)."""

  def __init__(self, planner, flops_per_step: float | None):
    self.planner, self.flops_per_step = planner, flops_per_step
    self.goal = None

  def start(self, goal_frame: np.ndarray) -> None:
    self.goal = goal_frame

  def act(self, frame: np.ndarray, state: np.ndarray) -> np.ndarray:
    return np.asarray(self.planner.plan(frame, state, self.goal), np.float64)


class ServerPolicy:
  """Plans through a planner server (`vjepa_jax.serve.client.PlannerClient`)."""

  flops_per_step = None

  def __init__(self, url: str, token: str | None = None):
    from vjepa_jax.serve.client import PlannerClient
    self.client = PlannerClient.from_url(url, token=token)

  def start(self, goal_frame: np.ndarray) -> None:
    self.client.set_goal(goal_frame)

  def act(self, frame: np.ndarray, state: np.ndarray) -> np.ndarray:
    return np.asarray(self.client.plan(frame, state), np.float64)


# -- Model planners --------------------------------------------------------------------------

def planner_config(method: str, sim_cfg: env_lib.SimConfig, blocked_gripper: bool,
                   preset: str = "paper", seed: int = 0, overrides: dict | None = None):
  """The planner config for `method` in this simulator: actions bounded by the sim's step,
  the gripper fixed where it does not move; `overrides` (dotted planner config fields, as
  `planning.config.search_overrides` gives) replace the preset's values."""
  from vjepa_jax import planning
  cfg = planning.default_config(preset)
  cfg.maxnorm = sim_cfg.max_step
  planning_config.with_overrides(cfg, overrides or {})
  if blocked_gripper:
    cfg.fixed_axes = ((6, 0.0),)
  cfg.seed = seed
  cfg.method = method
  return cfg


def recorded_sim_config(workdir: str) -> dict | None:
  """The `sim.json` of the data a training run was fine-tuned on, if there is one."""
  from etils import epath
  run = epath.Path(workdir) / "run.json"
  if not run.exists():
    return None
  data = json.loads(run.read_text()).get("config", {}).get("data", {}).get("path", "")
  path = epath.Path(data) / collect_lib.SIM_FILE if data else None
  if path is None or not path.exists():
    return None
  return json.loads(path.read_text())["sim"]


def make_policy(args: argparse.Namespace, sim: env_lib.FrankaSim):
  """The policy for `--planner` (the one place planners are dispatched) and, for local model
  planners, the (planner, predictor) pair for landscapes."""
  if args.server:
    return ServerPolicy(args.server, args.token), None
  if args.planner == "random":
    return RandomPolicy(sim, args.seed), None
  if args.planner == "oracle":
    return OraclePolicy(sim, args.seed), None
  from vjepa_jax import planning
  from vjepa_jax.sim import models
  encoder, predictor = models.load_world_model(args.workdir, args.converted)
  cfg = planner_config(args.planner, sim.cfg, sim.blocked_gripper, args.preset, args.seed,
                       planning_config.search_overrides(args))
  planner = planning.Planner(encoder, predictor, cfg)
  return PlannerPolicy(planner, float(planner.plan_function.flops)), (planner, predictor)


# -- The loop --------------------------------------------------------------------------------

def run_episode(sim: env_lib.FrankaSim, policy, seed: int) -> dict:
  """One closed-loop episode; returns its results plus the frames and actions."""
  frame, state = sim.reset(seed)
  goal = sim.goal_frame()
  policy.start(goal)
  start_distance = sim.distance()
  frames, actions, plan_s = [frame], [], []
  steps_to_success = 0 if sim.info()["is_success"] else None
  for t in range(sim.cfg.max_steps if steps_to_success is None else 0):
    t0 = time.perf_counter()
    action = policy.act(frame, state)
    plan_s.append(time.perf_counter() - t0)
    info = sim.step(action)
    frame, state = sim.observe()
    frames.append(frame)
    actions.append(np.asarray(action, np.float64))
    if info["is_success"]:
      steps_to_success = t + 1
      break
  return {"seed": seed, "success": steps_to_success is not None,
          "steps_to_success": steps_to_success, "steps": len(actions),
          "start_distance": start_distance, "final_distance": sim.distance(),
          "plan_s": plan_s, "goal": goal, "frames": frames, "actions": actions}


def summarise(args: argparse.Namespace, results: Sequence[dict], flops: float | None) -> dict:
  plan_s = [s for r in results for s in r["plan_s"]]
  reached = [r["steps_to_success"] for r in results if r["success"]]
  return {
      "task": args.task, "planner": args.planner, "episodes": len(results),
      "success_rate": float(np.mean([r["success"] for r in results])),
      "mean_final_distance": float(np.mean([r["final_distance"] for r in results])),
      "median_final_distance": float(np.median([r["final_distance"] for r in results])),
      "mean_start_distance": float(np.mean([r["start_distance"] for r in results])),
      "mean_steps_to_success": float(np.mean(reached)) if reached else None,
      "plan_s_per_step_median": float(np.median(plan_s)) if plan_s else 0.0,
      "plan_s_per_step_mean": float(np.mean(plan_s)) if plan_s else 0.0,
      "flops_per_step": flops, "seed": args.seed,
  }


def _label(args: argparse.Namespace, cfg) -> str:
  if cfg is None:
    return args.planner if not args.server else f"{args.planner} (server)"
  if cfg.method == "gd":
    warm = (f" +{cfg.gd.cem_iterations} CEM {cfg.samples}" if cfg.gd.cem_iterations else "")
    return f"gd {cfg.gd.samples}x{cfg.gd.steps}{warm} h{cfg.horizon}"
  return f"{args.planner} {cfg.samples}x{cfg.iterations} h{cfg.horizon}"


def sibling_reports(out_dir: str, task: str) -> list[dict]:
  """Summaries of this run and of other runs of `task` in sibling folders of `out_dir`."""
  parent = os.path.dirname(os.path.abspath(out_dir))
  reports = []
  for name in sorted(os.listdir(parent)):
    path = os.path.join(parent, name, REPORT)
    if os.path.isfile(path):
      with open(path) as f:
        summary = json.load(f)["summary"]
      if summary["task"] == task:
        reports.append(summary)
  return reports


def evaluate(args: argparse.Namespace) -> dict:
  recorded = recorded_sim_config(args.workdir) if args.workdir else None
  base = env_lib.SimConfig.from_dict(recorded) if recorded else None
  sim_cfg = collect_lib.sim_config(args, base)
  os.makedirs(os.path.join(args.out, "filmstrips"), exist_ok=True)
  with env_lib.FrankaSim(sim_cfg) as sim:
    policy, model = make_policy(args, sim)
    planner_cfg = model[0].plan_function.cfg if model else None
    results = []
    for i in range(args.episodes):
      seed = args.seed + i
      if model and i < args.landscapes:
        from vjepa_jax.sim import landscape
        sim.reset(seed)
        enc = landscape.encoder_landscape(sim, model[0])
        pred = landscape.predictor_landscape(sim, model[0], model[1])
        os.makedirs(os.path.join(args.out, "landscapes"), exist_ok=True)
        landscape.plot(os.path.join(args.out, "landscapes", f"episode_{i:03d}.png"), enc, pred,
                       f"{args.task} seed {seed}")
        landscape_rho = {"encoder_rho": enc["rho"], "predictor_rho": pred["rho"]}
      else:
        landscape_rho = {}
      r = run_episode(sim, policy, seed)
      r.update(landscape_rho)
      outcome = (f"success in {r['steps_to_success']} steps" if r["success"] else
                 f"failed after {r['steps']} steps")
      plots.filmstrip(os.path.join(args.out, "filmstrips", f"episode_{i:03d}.png"), r["goal"],
                      r["frames"], r["actions"],
                      f"{args.task}, {args.planner}, seed {seed}: {outcome}, final distance "
                      f"{100 * r['final_distance']:.1f} cm")
      for key in ("goal", "frames"):
        r.pop(key)
      r["actions"] = [a.round(5).tolist() for a in r["actions"]]
      r["plan_s"] = [round(s, 4) for s in r["plan_s"]]
      results.append(r)
      print(f"episode {i + 1}/{args.episodes} seed {seed}: {outcome}, final distance "
            f"{100 * r['final_distance']:.1f} cm, {np.median(r['plan_s'] or [0]):.3f} s/step",
            flush=True)
  summary = summarise(args, results, policy.flops_per_step)
  summary["label"] = _label(args, planner_cfg)
  report = {"summary": summary, "sim": sim_cfg.to_dict(),
            "planner_config": planner_cfg.to_dict() if planner_cfg is not None else None,
            "model": {"workdir": args.workdir, "converted": args.converted,
                      "server": args.server},
            "episodes": results}
  with open(os.path.join(args.out, REPORT), "w") as f:
    json.dump(report, f, indent=1, default=float)
  plots.success_vs_compute(os.path.join(args.out, "success_vs_compute.png"),
                           sibling_reports(args.out, args.task))
  return summary


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  collect_lib.add_sim_flags(p)
  p.add_argument("--episodes", type=int, default=50)
  p.add_argument("--planner", required=True, choices=PLANNERS)
  p.add_argument("--workdir", default=None, help="training run to plan with")
  p.add_argument("--converted", default=None, help="converted checkpoint to plan with")
  p.add_argument("--server", default=None, help="plan through a planner server, ws://HOST:PORT")
  p.add_argument("--token", default=None, help="planner server token")
  p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="episode i uses seed + i")
  p.add_argument("--out", required=True, help="output folder")
  p.add_argument("--preset", default="paper", help="planner preset (planning.default_config)")
  planning_config.add_search_flags(p)
  p.add_argument("--landscapes", type=int, default=0,
                 help="energy-landscape PNGs of the first K episodes (model planners)")
  args = p.parse_args(sys.argv[1:] if argv is None else argv)
  if args.episodes < 1:
    p.error(f"--episodes must be >= 1, got {args.episodes}")
  weights = [f for f in ("workdir", "converted", "server") if getattr(args, f)]
  if args.server and args.planner in ("random", "oracle"):
    p.error(f"--server plans with the server's model; --planner {args.planner} needs none")
  if args.planner in MODEL_PLANNERS and len(weights) != 1:
    p.error(f"--planner {args.planner} needs exactly one of --workdir RUN, --converted DIR or "
            f"--server URL (got {weights or 'none'})")
  if args.planner in ("random", "oracle") and weights:
    p.error(f"--planner {args.planner} uses no model; drop --{weights[0]}")
  return args


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  try:
    summary = evaluate(args)
  except (ValueError, ImportError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps(summary), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
