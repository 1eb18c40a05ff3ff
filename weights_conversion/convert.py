"""Converts an official V-JEPA 2 / V-JEPA 2-AC `.pt` checkpoint into a vjepa-jax checkpoint.

  python -m weights_conversion.convert --checkpoint vjepa2-ac-vitg.pt --output DIR

DIR (local or gs://) receives one folder of orbax items per model (`encoder`, `predictor`) and
`architecture.json` with the inferred architecture, the source file and a sha256 of the converted
parameters (training runs record it and refuse to resume on different base weights).
`architecture.json` is written last and removed first, so it exists only after a complete
conversion. The file's CRC-32 checksums are verified first (a flipped byte is an error), and a
tensor holding NaN or Inf is an error naming it unless `--allow-nonfinite`.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time

import numpy as np
from etils import epath

from vjepa_jax.models import flags
from vjepa_jax.models import params
from vjepa_jax.models import pretrained
from weights_conversion import torch_io


def parse_args(argv):
  p = argparse.ArgumentParser(prog="python -m weights_conversion.convert", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", required=True, help="official .pt file")
  p.add_argument("--output", required=True, help="output directory (local or gs://)")
  flags.add_checkpoint_options(p)
  p.add_argument("--num-frames", type=int, default=None,
                 help="recorded in architecture.json; RoPE models accept any clip length")
  return p.parse_args(argv)


def _hashed(h, kind: str, pairs, nonfinite: list):
  """Passes `(path, array)` pairs through, adding each to the digest (pairs come in digest
  order, so the result equals `params.params_digest` of the whole conversion) and noting the
  source name of any tensor with NaN or Inf values."""
  for name, path, value in pairs:
    if not np.isfinite(value).all():
      nonfinite.append(f"{kind}: {name}")
    params.hash_tensor(h, kind, path, value)
    yield path, value


def main(argv=None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  t0 = time.time()
  try:
    ckpt = params.load_torch_file(args.checkpoint)
    encoder_key = params.pick_encoder_key(ckpt, args.encoder_key)
    jobs = params.plan_checkpoint(ckpt, args.encoder_num_heads, args.predictor_num_heads,
                                  args.img_size or 256, encoder_key)
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
  nonfinite: list[str] = []
  for job in sorted(jobs, key=lambda j: j.kind):
    pairs = params.iter_materialize(job.state_dict, job.plan, release)
    pretrained.save_item(args.output, job.kind, _hashed(h, job.kind, pairs, nonfinite))
    shapes = pretrained.param_shapes(job.kind, job.config).values()
    n = sum(int(np.prod(shape)) for shape in shapes)
    print(f"{job.kind}: {n:,} parameters, {job.config}")
  if nonfinite and not args.allow_nonfinite:
    # Without architecture.json the output directory is never loaded as a checkpoint.
    print(f"error: {args.checkpoint} holds NaN or Inf values in {len(nonfinite)} tensors: "
          f"{', '.join(nonfinite[:20])}; nothing usable was written (pass --allow-nonfinite to "
          "convert them anyway)", file=sys.stderr)
    return 2
  if nonfinite:
    print(f"warning: converted {len(nonfinite)} tensors holding NaN or Inf values: "
          f"{', '.join(nonfinite[:20])}", file=sys.stderr)
  local = "://" not in args.checkpoint
  source = {"checkpoint": os.path.abspath(args.checkpoint) if local else args.checkpoint,
            "checkpoint_bytes": epath.Path(args.checkpoint).stat().length,
            "encoder_key": encoder_key, "num_frames": args.num_frames,
            "params_sha256": h.hexdigest()}
  pretrained.write_architecture(args.output, {j.kind: j.config for j in jobs}, source)
  print(f"wrote {args.output} in {time.time() - t0:.1f}s (params sha256 {h.hexdigest()[:16]}...)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
