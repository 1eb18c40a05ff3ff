"""Converts an official V-JEPA 2 / V-JEPA 2-AC `.pt` checkpoint into a vjepa-jax checkpoint.

  python -m weights_conversion.convert --checkpoint vjepa2-ac-vitg.pt --output DIR

DIR (local or gs://) receives one folder of orbax items per model (`encoder`, `predictor`) and
`architecture.json` with the inferred architecture, the source file and a sha256 of the converted
parameters (training checkpoints record it and refuse to resume on different base weights).
`architecture.json` is written last and removed first, so it exists only after a complete
conversion.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time

import numpy as np
from etils import epath

from vjepa_jax.models import pretrained
from weights_conversion import mapping
from weights_conversion import official
from weights_conversion import torch_io


def _hash_tensor(h, kind: str, path: tuple, value) -> None:
  h.update(".".join(map(str, (kind,) + path)).encode())
  h.update(np.ascontiguousarray(value).tobytes())


def params_digest(converted) -> str:
  """sha256 over every converted tensor, models and paths in sorted order."""
  h = hashlib.sha256()
  for kind in sorted(converted):
    flat = converted[kind][1]
    for path in sorted(flat, key=mapping.path_key):
      _hash_tensor(h, kind, path, flat[path])
  return h.hexdigest()


def _hashed(h, kind: str, pairs):
  """Passes `(path, array)` pairs through, adding each to the digest (pairs come in digest
  order, so the result equals `params_digest` of the whole conversion)."""
  for path, value in pairs:
    _hash_tensor(h, kind, path, value)
    yield path, value


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
  # Every name and shape is checked above. Now each tensor is converted, hashed and handed to
  # the writer, which holds one part (`pretrained.PART_BYTES`) at a time; the tensor's pages of
  # the memory-mapped source are dropped as soon as it is converted.
  arch_file = epath.Path(args.output) / pretrained.ARCH_FILE
  if arch_file.exists():
    arch_file.unlink()
  release = torch_io.page_releaser(args.checkpoint)
  h = hashlib.sha256()
  for job in sorted(jobs, key=lambda j: j.kind):
    pairs = mapping.iter_materialize(job.state_dict, job.plan, release)
    pretrained.save_item(args.output, job.kind, _hashed(h, job.kind, pairs))
    shapes = pretrained.param_shapes(job.kind, job.config).values()
    n = sum(int(np.prod(shape)) for shape in shapes)
    print(f"{job.kind}: {n:,} parameters, {job.config}")
  source = {"checkpoint": os.path.abspath(args.checkpoint),
            "checkpoint_bytes": os.path.getsize(args.checkpoint),
            "encoder_key": encoder_key, "num_frames": args.num_frames,
            "params_sha256": h.hexdigest()}
  pretrained.write_architecture(args.output, {j.kind: j.config for j in jobs}, source)
  print(f"wrote {args.output} in {time.time() - t0:.1f}s (params sha256 {h.hexdigest()[:16]}...)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
