"""Serves the V-JEPA 2-AC planner over a websocket.

  python -m vjepa_jax.serve --converted converted/vitg-ac
  python -m vjepa_jax.serve --workdir runs/finetune --planner cem --host 0.0.0.0 --token SECRET

Loads the model once, compiles and runs a warm-up plan, then prints `listening on ws://HOST:PORT`
and answers `vjepa_jax.serve.client.PlannerClient` requests until interrupted (Ctrl-C or
SIGTERM). Bound to 127.0.0.1 unless --host says otherwise; with --token (or the
VJEPA_JAX_SERVE_TOKEN environment variable) clients must present the same token.
"""
from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import signal
import sys
from typing import Sequence

from vjepa_jax.planning import config as planning_config
from vjepa_jax.serve import protocol
from vjepa_jax.serve import server as server_lib

log = logging.getLogger("vjepa_jax.serve")


def load_models(converted: str | None = None, workdir: str | None = None):
  """(encoder, predictor, description) from a converted checkpoint or a training run."""
  from vjepa_jax import models
  source = converted or workdir
  encoder, predictor = (models.load(converted) if converted
                        else models.load(workdir, merge_lora=True))
  if predictor is None:
    raise ValueError(f"{source} has no AC predictor; planning needs V-JEPA 2-AC weights")
  kind = "converted" if converted else "training run"
  return encoder, predictor, f"{kind} {source}"


def _frame_size(text: str) -> tuple[int, int]:
  try:
    h, w = (int(v) for v in text.lower().split("x"))
  except ValueError as e:
    raise argparse.ArgumentTypeError(f"frame size must be HxW (e.g. 480x640), got {text!r}") from e
  if h < 1 or w < 1:
    raise argparse.ArgumentTypeError(f"frame size must be positive, got {text!r}")
  return h, w


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m vjepa_jax.serve", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  weights = p.add_mutually_exclusive_group(required=True)
  weights.add_argument("--converted", help="converted vjepa-jax checkpoint directory")
  weights.add_argument("--workdir", help="vjepa-jax training run directory (LoRA merged)")
  p.add_argument("--planner", choices=server_lib.METHODS, default="cem", help="search method")
  p.add_argument("--port", type=int, default=8000)
  p.add_argument("--host", default="127.0.0.1",
                 help="address to bind (0.0.0.0: every interface; set --token then)")
  p.add_argument("--token", default=None,
                 help=f"shared secret clients must send (default: ${protocol.TOKEN_ENV})")
  p.add_argument("--preset", default="paper", help="planner preset (planning.default_config)")
  planning_config.add_search_flags(p)
  p.add_argument("--seed", type=int, default=None, help="planner PRNG seed")
  p.add_argument("--max-queue", type=int, default=4,
                 help="requests that may wait behind the running plan; more are refused")
  p.add_argument("--max-message-mb", type=float, default=64.0,
                 help="largest accepted message (a goal schedule holds all its images)")
  p.add_argument("--frame-size", type=_frame_size, action="append", default=[],
                 help="HxW camera frame size to compile for at start-up (repeatable; default: "
                      "the model's square size)")
  return p.parse_args(argv)


def _is_loopback(host: str) -> bool:
  if host == "localhost":
    return True
  try:
    return ipaddress.ip_address(host).is_loopback
  except ValueError:
    return False


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  logging.basicConfig(level=logging.WARNING,
                      format="%(asctime)s %(name)s %(levelname)s %(message)s")
  log.setLevel(logging.INFO)
  token = args.token or os.environ.get(protocol.TOKEN_ENV) or None
  overrides = planning_config.search_overrides(args)
  if args.seed is not None:
    overrides["seed"] = args.seed
  try:
    cfg = server_lib.planner_config(args.planner, args.preset, **overrides)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if not _is_loopback(args.host) and token is None:
    log.warning("binding %s without a token: anyone who can reach this port can drive the "
                "planner; set --token or $%s", args.host, protocol.TOKEN_ENV)
  encoder, predictor, description = load_models(args.converted, args.workdir)
  server = server_lib.PlannerServer(encoder, predictor, cfg, description=description,
                                    token=token, max_queue=args.max_queue,
                                    max_message_bytes=int(args.max_message_mb * 2**20))
  server.warm_up(args.frame_size)

  def ready(port: int) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
      loop.add_signal_handler(sig, server.stop)
    print(f"listening on ws://{args.host}:{port}", flush=True)

  asyncio.run(server.serve(args.host, args.port, ready=ready))
  return 0


if __name__ == "__main__":
  sys.exit(main())
