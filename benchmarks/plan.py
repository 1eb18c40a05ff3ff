"""Planning benchmark: seconds and predictor FLOPs per planned action, per search method.

  python benchmarks/plan.py --preset bench-cpu
  python benchmarks/plan.py --preset bench-cpu --official-src VJEPA2_DIR --official-iterations 2
  python benchmarks/plan.py --preset bench-cpu --method mppi --samples 200
  python benchmarks/plan.py --preset bench-cpu --method gd --gd-samples 16 --gd-steps 20
  python benchmarks/plan.py --preset vitg-gpu

Times `Planner.plan(frame, pose, goal_frame)` end to end (observation encoding, the whole search
in one compiled call, transfer of the action back to the host; the goal latent is cached as in
closed-loop use). The default is CEM at the paper's settings: 800 samples, 10 iterations, top-10,
horizon 1; `--method mppi|gd` times the other planners (MPPI with the same sample/iteration
flags, the gradient planner with the `--gd-*` flags). Models are random-init (timing does not
depend on the weights). Prints ONE JSON line on stdout: the median seconds per action over the
timed plans after a warm-up plan, FLOPs per action (analytic `planning.plan_flops`, the official
CEM algorithm's analytic count at the same CEM settings, and XLA's count of the compiled plan),
the achieved FLOP/s, and with `--official-src` the official PyTorch planner (`WorldModel` +
`cem` of facebookresearch/vjepa2, same architecture, random init) timed in the same process,
so both numbers see the same machine load.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import numpy as np

from vjepa_jax.models import EncoderConfig
from vjepa_jax.models import PredictorConfig
from vjepa_jax.models import configs as model_configs
from vjepa_jax.models import pretrained
from vjepa_jax.planning import Planner
from vjepa_jax.planning import default_config
from vjepa_jax.planning import flops
from vjepa_jax.planning import plan_flops
from vjepa_jax.planning import plan_function

PRESETS = {
    # The train-step benchmark's bench-cpu model: ViT-S-like encoder, small predictor, 128 px.
    "bench-cpu": (EncoderConfig(embed_dim=384, depth=12, num_heads=6, mlp_hidden=1536,
                                img_size=128, patch_size=16, tubelet_size=2),
                  PredictorConfig(embed_dim=384, predictor_embed_dim=256, depth=6, num_heads=4,
                                  mlp_hidden=1024, img_size=128, patch_size=16)),
    # The released V-JEPA 2-AC: ViT-g/16 encoder and the 300M AC predictor at 256 px, bf16.
    "vitg-gpu": (model_configs.encoder_preset("vit_giant", dtype="bfloat16"),
                 model_configs.predictor_preset("vit_ac_predictor_giant", dtype="bfloat16")),
    "tiny": (EncoderConfig(embed_dim=48, depth=2, num_heads=3, mlp_hidden=192, img_size=32),
             PredictorConfig(embed_dim=48, predictor_embed_dim=64, depth=2, num_heads=4,
                             mlp_hidden=256, img_size=32)),
}


def random_model(kind: str, cfg, seed: int):
  """Random-init model built from NumPy draws (no per-parameter compilation)."""
  rng = np.random.default_rng(seed)
  flat = {}
  for path, shape in pretrained.param_shapes(kind, cfg).items():
    if path[-1] == "kernel":
      flat[path] = rng.normal(0.0, 0.02, shape).astype(np.float32)
    elif path[-1] == "scale":
      flat[path] = np.ones(shape, np.float32)
    else:
      flat[path] = np.zeros(shape, np.float32)
  return pretrained.build_model(kind, cfg, flat)


def official_flops(cfg: PredictorConfig, samples: int, iterations: int, horizon: int) -> int:
  """FLOPs per action of the official CEM: at rollout step h the predictor reruns all h+1 steps
  for every sample (dense attention, conditioning tokens through every block)."""
  hw, p, m, d = cfg.grid[0] * cfg.grid[1], cfg.predictor_embed_dim, cfg.mlp_hidden, cfg.embed_dim
  total = 0
  for h in range(horizon):
    t = h + 1
    n = t * (flops.NUM_COND + hw)
    total += (2 * t * hw * d * p + 2 * t * hw * p * d
              + cfg.depth * flops.block_cost(n, n, n, p, m).forward)
  return total * samples * iterations


def xla_flops(predictor, cfg, pose: np.ndarray) -> float:
  """XLA's FLOPs for the plan `cfg`. XLA counts a loop body once, so a plan with two iterations
  (gradient: two warm-up iterations and two steps) is costed and scaled by the analytic ratio of
  the full plan to a one-iteration plan."""
  two, one = cfg.copy_and_resolve_references(), cfg.copy_and_resolve_references()
  two.update(dict(iterations=2, sample_chunk=0))
  one.update(dict(iterations=1, sample_chunk=0))
  two.gd.update(dict(steps=2, cem_iterations=2 if cfg.gd.cem_iterations else 0))
  one.gd.update(dict(steps=1, cem_iterations=1 if cfg.gd.cem_iterations else 0))
  fn = plan_function.PlanFunction(predictor, two)
  hw, d = predictor.tokens_per_frame, predictor.cfg.embed_dim
  lowered = fn.lower(fn.params, *fn.place(
      np.zeros((1, hw, d), np.float32), pose[None, None], None, np.zeros((hw, d), np.float32),
      jax.random.key(0)))
  cost = lowered.compile().cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  return (float(cost.get("flops", 0.0)) * plan_flops(cfg, predictor.cfg)
          / plan_flops(one, predictor.cfg))


def _frames(size: int, seed: int) -> list[np.ndarray]:
  rng = np.random.default_rng(seed)
  return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(2)]


def time_official(src: str, pred_cfg: PredictorConfig, cfg, iterations: int) -> float:
  """Seconds per action of the official PyTorch planner (`iterations` CEM steps, scaled)."""
  sys.path.insert(0, src)
  import logging
  import torch
  from notebooks.utils.world_model_wrapper import WorldModel
  from src.models.ac_predictor import vit_ac_predictor
  predictor = vit_ac_predictor(
      img_size=(pred_cfg.img_size, pred_cfg.img_size), patch_size=pred_cfg.patch_size,
      num_frames=64, tubelet_size=pred_cfg.tubelet_size, embed_dim=pred_cfg.embed_dim,
      predictor_embed_dim=pred_cfg.predictor_embed_dim, depth=pred_cfg.depth,
      num_heads=pred_cfg.num_heads, use_rope=True, is_frame_causal=True).eval()
  hw = pred_cfg.grid[0] * pred_cfg.grid[1]
  mpc = dict(rollout=cfg.horizon, samples=cfg.samples, topk=cfg.topk, cem_steps=iterations,
             momentum_mean=cfg.momentum_mean, momentum_std=cfg.momentum_std,
             momentum_mean_gripper=cfg.momentum_mean_gripper,
             momentum_std_gripper=cfg.momentum_std_gripper, maxnorm=cfg.maxnorm, verbose=False)
  logging.getLogger("notebooks.utils.mpc_utils").setLevel(logging.WARNING)
  wm = WorldModel(encoder=None, predictor=predictor, tokens_per_frame=hw, transform=None,
                  mpc_args=mpc, device="cpu")
  rep = torch.nn.functional.layer_norm(torch.randn(1, 1, hw, pred_cfg.embed_dim),
                                       (pred_cfg.embed_dim,))
  goal = torch.nn.functional.layer_norm(torch.randn(1, 1, hw, pred_cfg.embed_dim),
                                        (pred_cfg.embed_dim,))
  pose = torch.zeros(1, 1, 7)
  with torch.no_grad():
    t0 = time.perf_counter()
    wm.infer_next_action(rep, pose, goal)
    seconds = time.perf_counter() - t0
  return seconds * cfg.iterations / iterations


def run(args: argparse.Namespace) -> dict:
  enc_cfg, pred_cfg = PRESETS[args.preset]
  cfg = default_config("paper")
  cfg.update(dict(method=args.method, samples=args.samples, iterations=args.iterations,
                  topk=args.topk, horizon=args.horizon, sample_chunk=args.sample_chunk,
                  reuse_context=not args.no_reuse_context))
  cfg.mppi.temperature = args.temperature
  cfg.gd.update(dict(samples=args.gd_samples, steps=args.gd_steps, learning_rate=args.gd_lr,
                     cem_iterations=args.gd_cem_iterations))
  encoder = random_model("encoder", enc_cfg, 0)
  predictor = random_model("predictor", pred_cfg, 1)
  planner = Planner(encoder, predictor, cfg)
  frame, goal = _frames(enc_cfg.img_size, 0)
  pose = np.array([0.5, 0.0, 0.3, 3.1, 0.0, 0.0, 0.5], np.float32)
  t0 = time.perf_counter()
  planner.plan(frame, pose, goal)
  first_s = time.perf_counter() - t0
  times = []
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    planner.plan(frame, pose, goal)
    times.append(time.perf_counter() - t0)
  median = float(np.median(times))
  ours = planner.last_result.flops
  out = {
      "preset": args.preset, "method": cfg.method, "median_s_per_action": round(median, 3),
      "min_s_per_action": round(min(times), 3), "times_s": [round(t, 3) for t in times],
      "first_plan_s_incl_compile": round(first_s, 1), "samples": cfg.samples,
      "iterations": cfg.iterations, "topk": cfg.topk, "horizon": cfg.horizon,
      "reuse_context": cfg.reuse_context, "sample_chunk": planner.plan_function.cfg.sample_chunk,
      "flops_per_action": float(ours),
      "flops_per_action_official": float(official_flops(pred_cfg, cfg.samples, cfg.iterations,
                                                        cfg.horizon)),
      "flops_per_action_xla": xla_flops(predictor, cfg, pose),
      "achieved_flops_per_s": round(ours / median, 1),
      "device": jax.devices()[0].device_kind, "dtype": pred_cfg.dtype,
  }
  if cfg.method == "mppi":
    out["temperature"] = cfg.mppi.temperature
  if cfg.method == "gd":
    out["gd"] = cfg.gd.to_dict()
  if args.official_src:
    official = time_official(args.official_src, pred_cfg, cfg, args.official_iterations)
    out["official_s_per_action"] = round(official, 2)
    out["official_iterations_timed"] = args.official_iterations
    out["speedup_vs_official"] = round(official / median, 2)
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--preset", default="bench-cpu", choices=sorted(PRESETS))
  p.add_argument("--samples", type=int, default=800)
  p.add_argument("--iterations", type=int, default=10)
  p.add_argument("--topk", type=int, default=10)
  p.add_argument("--horizon", type=int, default=1)
  p.add_argument("--method", default="cem", choices=("cem", "mppi", "gd"),
                 help="search method (the CEM flags also size MPPI and the gradient warm start)")
  p.add_argument("--temperature", type=float, default=0.5, help="MPPI temperature")
  p.add_argument("--gd-samples", type=int, default=16, help="gradient planner: parallel starts")
  p.add_argument("--gd-steps", type=int, default=20, help="gradient planner: Adam steps")
  p.add_argument("--gd-lr", type=float, default=0.1,
                 help="gradient planner: Adam step size in units of each dimension's bound")
  p.add_argument("--gd-cem-iterations", type=int, default=0,
                 help="gradient planner: CEM warm-up iterations (with --samples/--topk)")
  p.add_argument("--sample-chunk", type=int, default=-1,
                 help="samples rolled out at once (-1 = automatic, 0 = all)")
  p.add_argument("--no-reuse-context", action="store_true",
                 help="recompute the context step per sample (to measure what sharing saves)")
  p.add_argument("--repeats", type=int, default=3, help="timed plans after one warm-up plan")
  p.add_argument("--official-src", default="",
                 help="facebookresearch/vjepa2 checkout: also time the official CEM planner "
                      "(with the CEM flags, whatever --method)")
  p.add_argument("--official-iterations", type=int, default=10,
                 help="CEM iterations of the official timing (scaled to --iterations)")
  args = p.parse_args(sys.argv[1:] if argv is None else argv)
  print(json.dumps(run(args)), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
