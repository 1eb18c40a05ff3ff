"""Planner server overhead: what serving adds over an in-process `Planner.plan` on loopback.

  PYTHONPATH=. python benchmarks/serve_overhead.py --requests 300

Writes a random-init tiny model as a converted checkpoint, starts
`python -m vjepa_jax.serve` on it in its own process (as on a GPU machine serving a robot), and
from this process alternates an in-process `Planner.plan` with a `PlannerClient.plan` of the
same 256x256 frame, pose and goal. Per served request, the overhead is the client's round trip
minus the server's own planning time for it (`plan_ms`: frame encoding, the compiled plan, the
transfer of the result to the host, i.e. what `Planner.plan` does); it is message packing and
unpacking on both sides, the websocket transport, the hand-off to the planner thread and the
reply. Prints ONE JSON line: median and p99 of the overhead, the server's decode / queue /
encode medians, and the medians of both plan timings.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

from vjepa_jax import planning
from vjepa_jax.models import pretrained
from vjepa_jax.planning import __main__ as planning_cli
from vjepa_jax.serve import server as server_lib
from vjepa_jax.serve.client import PlannerClient


def _stats(values) -> dict:
  v = np.asarray(values)
  return {"median": round(float(np.median(v)), 3), "p99": round(float(np.percentile(v, 99)), 3)}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--requests", type=int, default=300)
  p.add_argument("--warmup", type=int, default=10)
  p.add_argument("--size", type=int, default=256, help="camera frame size (square)")
  p.add_argument("--model-size", type=int, default=64,
                 help="model resolution the frame is resized to; the overhead does not depend "
                      "on it, a small one keeps the plans short")
  p.add_argument("--samples", type=int, default=16)
  p.add_argument("--iterations", type=int, default=2)
  p.add_argument("--gap-ms", type=float, default=20.0,
                 help="pause between the two timings, so that the threads of one computation "
                      "are idle before the next is timed")
  args = p.parse_args(argv)
  overrides = dict(samples=args.samples, iterations=args.iterations, topk=4)
  encoder, predictor = planning_cli.random_tiny_models(seed=0, img_size=args.model_size)
  rng = np.random.default_rng(0)
  frame, goal = (rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
                 for _ in range(2))
  pose = np.array([0.5, 0.0, 0.3, 3.1, 0.0, 0.0, 1.0], np.float32)
  with tempfile.TemporaryDirectory() as tmp:
    pretrained.save_converted(tmp, {k: (m.cfg, pretrained.flat_params(m)) for k, m in
                                    (("encoder", encoder), ("predictor", predictor))},
                              {"kind": "benchmark"})
    cmd = [sys.executable, "-m", "vjepa_jax.serve", "--converted", tmp, "--port", "0",
           "--frame-size", f"{args.size}x{args.size}",
           "--samples", str(args.samples), "--iterations", str(args.iterations), "--topk", "4"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
      line = proc.stdout.readline()
      match = re.fullmatch(r"listening on ws://127\.0\.0\.1:(\d+)\n", line)
      if not match:
        raise RuntimeError(f"server did not start: {line!r}")
      planner = planning.Planner(encoder, predictor, server_lib.planner_config(**overrides))
      client = PlannerClient("127.0.0.1", int(match.group(1)))
      client.set_goal(goal)
      local, served, server_plan, overhead = [], [], [], []
      for i in range(args.warmup + args.requests):
        start = time.perf_counter()
        planner.plan(frame, pose, goal)
        local_ms = (time.perf_counter() - start) * 1e3
        time.sleep(args.gap_ms / 1e3)
        client.plan(frame, pose)
        reply = client.last_result
        time.sleep(args.gap_ms / 1e3)
        if i >= args.warmup:
          local.append(local_ms)
          served.append(reply.roundtrip_ms)
          server_plan.append(reply.plan_ms)
          overhead.append(reply.roundtrip_ms - reply.plan_ms)
      phases = client.metadata()["latency_ms"]["plan"]
      client.close()
    finally:
      proc.terminate()
      proc.wait()
  print(json.dumps({
      "frame": [args.size, args.size, 3], "model_size": args.model_size,
      "requests": args.requests,
      "overhead_ms": _stats(overhead),
      "server_decode_ms": round(phases["decode"]["p50"], 3),
      "server_queue_ms": round(phases["queue"]["p50"], 3),
      "server_encode_ms": round(phases["encode"]["p50"], 3),
      "client_roundtrip_ms": _stats(served), "server_plan_ms": _stats(server_plan),
      "in_process_plan_ms": _stats(local),
      "median_difference_ms": round(float(np.median(served) - np.median(local)), 3)}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
