"""Exports a vjepa-jax model as an official V-JEPA 2-AC `.pt` checkpoint.

  python -m weights_conversion.export --workdir WORKDIR --output model.pt [--step N]
  python -m weights_conversion.export --converted DIR --output model.pt

The file has the layout of `vjepa2-ac-vitg.pt`: `encoder`, `target_encoder` (the same weights) and
`predictor` state dicts with `module.`-prefixed official tensor names and shapes (float32), plus
`epoch`, `loss`, `batch_size`, `world_size` and `lr` entries, so the official PyTorch code loads
the predictor with `strict=True`. LoRA adapters of a training run are merged into the base
weights first. Before writing, the state dicts are converted back with the importer's strict
rules and compared to the trained parameters, so a file that would not round-trip is never
written.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Mapping

import numpy as np

from vjepa_jax import models
from vjepa_jax.models import lora as lora_lib
from vjepa_jax.models import params
from vjepa_jax.models import pretrained

_PREFIX = "module."


def _check_round_trip(sd: Mapping[str, np.ndarray], flat: Mapping[tuple, Any], kind: str,
                      cfg) -> None:
  rules = params.ENCODER_RULES if kind == "encoder" else params.PREDICTOR_RULES
  back = params.convert(sd, pretrained.param_shapes(kind, cfg), rules, f"exported {kind}",
                        allow_nonfinite=True)
  for path, value in flat.items():
    if not np.array_equal(back[path], np.asarray(value, np.float32), equal_nan=True):
      raise AssertionError(f"exported {kind} tensor {'.'.join(map(str, path))} does not "
                           "convert back to the trained value")


def export_models(encoder, predictor) -> dict[str, Any]:
  """The official checkpoint dict (torch tensors) for NNX `encoder` and `predictor` modules
  without adapters (merge them first)."""
  import torch
  dicts = {}
  for kind, module in (("encoder", encoder), ("predictor", predictor)):
    flat = {p: np.asarray(v) for p, v in pretrained.flat_params(module).items()}
    sd = params.to_state_dict(kind, flat)
    _check_round_trip(sd, flat, kind, module.cfg)
    dicts[kind] = {_PREFIX + k: torch.from_numpy(v) for k, v in sd.items()}
  return {"encoder": dicts["encoder"], "predictor": dicts["predictor"],
          "target_encoder": {k: v.clone() for k, v in dicts["encoder"].items()},
          "epoch": 0, "loss": 0.0, "batch_size": 0, "world_size": 1, "lr": 0.0}


def parse_args(argv):
  p = argparse.ArgumentParser(prog="python -m weights_conversion.export", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", help="training run directory (local or gs://)")
  p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  p.add_argument("--converted", help="converted checkpoint directory")
  p.add_argument("--output", required=True, help="output .pt file")
  args = p.parse_args(argv)
  errors = []
  if bool(args.workdir) == bool(args.converted):
    errors.append("give exactly one of --workdir and --converted")
  if args.step is not None and not args.workdir:
    errors.append("--step applies to --workdir")
  if errors:
    p.error("; ".join(errors))
  return args


def main(argv=None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  import torch
  source = args.workdir or args.converted
  try:
    if args.workdir:
      encoder, predictor = models.load(args.workdir, step=args.step)
    else:
      encoder, predictor = models.load(args.converted)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if predictor is None:
    print(f"error: {source} has no AC predictor to export (a pre-training encoder only)",
          file=sys.stderr)
    return 2
  merged = lora_lib.has_lora(encoder) or lora_lib.has_lora(predictor)
  for module in (encoder, predictor):
    lora_lib.merge_lora(module)
  torch.save(export_models(encoder, predictor), args.output)
  n = {k: sum(int(np.prod(v.shape)) for v in pretrained.flat_params(m).values())
       for k, m in (("encoder", encoder), ("predictor", predictor))}
  print(f"wrote {args.output}: encoder {n['encoder']:,} and predictor {n['predictor']:,} "
        f"parameters{' (LoRA merged)' if merged else ''}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
