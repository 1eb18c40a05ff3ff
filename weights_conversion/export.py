"""Exports a fine-tuned vjepa-jax run as an official V-JEPA 2-AC `.pt` checkpoint.

  python -m weights_conversion.export --workdir WORKDIR --output model.pt [--step N]

The file has the layout of `vjepa2-ac-vitg.pt`: `encoder`, `target_encoder` (the same weights) and
`predictor` state dicts with `module.`-prefixed official tensor names and shapes (float32), plus
`epoch`, `loss`, `batch_size`, `world_size` and `lr` entries, so the official PyTorch code loads
the predictor with `strict=True`. LoRA adapters are merged into the base weights first. Before
writing, the state dicts are converted back with the importer's strict rules and compared to the
trained parameters, so a file that would not round-trip is never written.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Mapping

import numpy as np

from vjepa_jax.models import pretrained
from weights_conversion import mapping

_PREFIX = "module."


def _official_name(path: tuple) -> tuple[str, Any]:
  """(official tensor name without prefix, tensor transform) of a vjepa-jax parameter path."""
  *parents, leaf = (str(p) for p in path)
  if parents == ["patch_embed"]:
    parents = ["patch_embed", "proj"]
  if leaf == "kernel":
    return ".".join(parents + ["weight"]), "kernel"
  if leaf == "scale":
    return ".".join(parents + ["weight"]), None
  if leaf == "bias":
    return ".".join(parents + ["bias"]), None
  raise ValueError(f"parameter {'.'.join(map(str, path))} has no official counterpart")


def to_state_dict(flat: Mapping[tuple, Any]) -> dict[str, np.ndarray]:
  """{param path: array} -> {official name: float32 array} (kernels transposed back).

  Dense kernels [in, out] become weights [out, in]; the tubelet conv kernel [t, h, w, I, O]
  becomes [O, I, t, h, w]; LayerNorm scales become weights.
  """
  out = {}
  for path, value in flat.items():
    name, kind = _official_name(path)
    w = np.asarray(value, dtype=np.float32)
    if kind == "kernel":
      w = np.transpose(w, (4, 3, 0, 1, 2)) if w.ndim == 5 else w.T
    out[name] = np.array(w, dtype=np.float32, order="C")
  return out


def _check_round_trip(sd: Mapping[str, np.ndarray], flat: Mapping[tuple, Any], kind: str,
                      cfg) -> None:
  rules = mapping.ENCODER_RULES if kind == "encoder" else mapping.PREDICTOR_RULES
  back = mapping.convert(sd, pretrained.param_shapes(kind, cfg), rules, f"exported {kind}")
  for path, value in flat.items():
    if not np.array_equal(back[path], np.asarray(value, np.float32)):
      raise AssertionError(f"exported {kind} tensor {'.'.join(map(str, path))} does not "
                           "convert back to the trained value")


def export_models(encoder, predictor) -> dict[str, Any]:
  """The official checkpoint dict (torch tensors) for NNX `encoder` and `predictor` modules
  without adapters (merge them first)."""
  import torch
  dicts = {}
  for kind, module in (("encoder", encoder), ("predictor", predictor)):
    flat = {p: np.asarray(v) for p, v in pretrained.flat_params(module).items()}
    sd = to_state_dict(flat)
    _check_round_trip(sd, flat, kind, module.cfg)
    dicts[kind] = {_PREFIX + k: torch.from_numpy(v) for k, v in sd.items()}
  return {"encoder": dicts["encoder"], "predictor": dicts["predictor"],
          "target_encoder": {k: v.clone() for k, v in dicts["encoder"].items()},
          "epoch": 0, "loss": 0.0, "batch_size": 0, "world_size": 1, "lr": 0.0}


def parse_args(argv):
  p = argparse.ArgumentParser(prog="python -m weights_conversion.export", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", required=True, help="training run directory (local or gs://)")
  p.add_argument("--output", required=True, help="output .pt file")
  p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  return p.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  import torch
  from vjepa_jax.train import checkpoint as ckpt_lib
  try:
    encoder, predictor = ckpt_lib.load_models(args.workdir, step=args.step, merge=True)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  torch.save(export_models(encoder, predictor), args.output)
  n = {k: sum(int(np.prod(v.shape)) for v in pretrained.flat_params(m).values())
       for k, m in (("encoder", encoder), ("predictor", predictor))}
  print(f"wrote {args.output}: encoder {n['encoder']:,} and predictor {n['predictor']:,} "
        "parameters (LoRA merged)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
