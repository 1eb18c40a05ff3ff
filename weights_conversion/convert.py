"""Converts an official V-JEPA 2 / V-JEPA 2-AC `.pt` checkpoint into a vjepa-jax checkpoint.

  python -m weights_conversion.convert --checkpoint vjepa2-ac-vitg.pt --output DIR

DIR (local or gs://) receives one orbax item per model (`encoder`, `predictor`) and
`architecture.json` with the inferred architecture, the source file and a sha256 of the converted
parameters (training checkpoints record it and refuse to resume on different base weights).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time

import numpy as np

from vjepa_jax.models import pretrained
from weights_conversion import mapping
from weights_conversion import official
from weights_conversion import torch_io


def _update_digest(h, kind: str, flat) -> None:
  for path in sorted(flat, key=lambda p: tuple(map(str, p))):
    h.update(".".join(map(str, (kind,) + path)).encode())
    h.update(np.ascontiguousarray(flat[path]).tobytes())


def params_digest(converted) -> str:
  """sha256 over every converted tensor, models and paths in sorted order."""
  h = hashlib.sha256()
  for kind in sorted(converted):
    _update_digest(h, kind, converted[kind][1])
  return h.hexdigest()


def parse_args(argv):
  p = argparse.ArgumentParser(prog="python -m weights_conversion.convert", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", required=True, help="official .pt file")
  p.add_argument("--output", required=True, help="output directory (local or gs://)")
  p.add_argument("--encoder-num-heads", type=int, default=None,
                 help="only needed for encoder widths that were not released")
  p.add_argument("--predictor-num-heads", type=int, default=None,
                 help="only needed for predictor widths that were not released")
  p.add_argument("--img-size", type=int, default=256,
                 help="resolution the AC predictor runs at (fixes its patch grid)")
  p.add_argument("--num-frames", type=int, default=None,
                 help="recorded in architecture.json; RoPE models accept any clip length")
  p.add_argument("--encoder-key", default=None,
                 help="encoder copy to convert: encoder | target_encoder (default: target_encoder "
                      "for pre-training files, encoder for V-JEPA 2-AC files)")
  return p.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  t0 = time.time()
  try:
    ckpt = torch_io.load_torch_checkpoint(args.checkpoint)
    encoder_key = official.pick_encoder_key(ckpt, args.encoder_key)
    jobs = official.plan_checkpoint(ckpt, args.encoder_num_heads, args.predictor_num_heads,
                                    args.img_size, encoder_key)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  # Every name and shape is checked above; now one model at a time is converted, hashed, written
  # and released, so peak memory is about one model's converted tensors.
  h = hashlib.sha256()
  for job in sorted(jobs, key=lambda j: j.kind):
    flat = mapping.materialize(job.state_dict, job.plan)
    _update_digest(h, job.kind, flat)
    pretrained.save_item(args.output, job.kind, flat)
    n = sum(int(np.prod(v.shape)) for v in flat.values())
    print(f"{job.kind}: {n:,} parameters, {job.config}")
    del flat
  source = {"checkpoint": os.path.abspath(args.checkpoint),
            "checkpoint_bytes": os.path.getsize(args.checkpoint),
            "encoder_key": encoder_key, "num_frames": args.num_frames,
            "params_sha256": h.hexdigest()}
  pretrained.write_architecture(args.output, {j.kind: j.config for j in jobs}, source)
  print(f"wrote {args.output} in {time.time() - t0:.1f}s (params sha256 {h.hexdigest()[:16]}...)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
