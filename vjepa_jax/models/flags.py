"""Command-line options that name models, spelled the same by every command line.

`--converted DIR`, `--checkpoint FILE.pt` (with the converter's `--encoder-num-heads`,
`--predictor-num-heads`, `--img-size`, `--encoder-key`, `--allow-nonfinite`) and
`--workdir DIR [--step N]`; each is read with `vjepa_jax.models.load`.
"""
from __future__ import annotations

import argparse
from typing import Any

from vjepa_jax.models import loading

SOURCES = ("workdir", "converted", "checkpoint")


def add_checkpoint_options(p: argparse.ArgumentParser) -> None:
  """How to read an official `.pt` file (the converter's options)."""
  p.add_argument("--encoder-num-heads", type=int, default=None,
                 help="only needed for encoder widths that were not released")
  p.add_argument("--predictor-num-heads", type=int, default=None,
                 help="only needed for predictor widths that were not released")
  p.add_argument("--img-size", type=int, default=None,
                 help="resolution the AC predictor runs at, which fixes its patch grid "
                      "(default: 256 for .pt files, else the one recorded with the weights)")
  p.add_argument("--encoder-key", default=None,
                 help="encoder copy of a .pt file: encoder | target_encoder (default: "
                      "target_encoder for pre-training files, encoder for V-JEPA 2-AC files)")
  p.add_argument("--allow-nonfinite", action="store_true",
                 help="accept tensors holding NaN or Inf instead of refusing them")


def add_model_options(p: argparse.ArgumentParser) -> None:
  """--workdir / --step, --converted, --checkpoint and the `.pt` options."""
  p.add_argument("--workdir", help="vjepa-jax training run (local or gs://)")
  p.add_argument("--step", type=int, default=None,
                 help="checkpoint step of --workdir (default: the latest)")
  p.add_argument("--converted", help="converted vjepa-jax checkpoint directory "
                 "(python -m weights_conversion.convert output)")
  p.add_argument("--checkpoint", help="official V-JEPA 2-AC .pt file (needs the convert extra)")
  add_checkpoint_options(p)


def given_sources(args: argparse.Namespace) -> list[str]:
  return [s for s in SOURCES if getattr(args, s, None)]


def option_errors(args: argparse.Namespace) -> list[str]:
  """Problems with the model options (all of them, for one message)."""
  errors = []
  if args.step is not None and not args.workdir:
    errors.append("--step applies to --workdir")
  pt = [f"--{k.replace('_', '-')}" for k in ("encoder_num_heads", "predictor_num_heads",
                                              "encoder_key") if getattr(args, k) is not None]
  if args.allow_nonfinite:
    pt.append("--allow-nonfinite")
  if pt and not args.checkpoint:
    errors.append(f"{', '.join(pt)} apply to --checkpoint (.pt files)")
  return errors


def load(args: argparse.Namespace, source: str, **overrides) -> tuple[Any, Any]:
  """(encoder, predictor) named by option `source` ("workdir", "converted" or "checkpoint")."""
  if args.img_size is not None:
    overrides.setdefault("img_size", args.img_size)
  if source == "workdir":
    return loading.load(args.workdir, step=args.step, merge_lora=True, **overrides)
  if source == "checkpoint":
    return loading.load(args.checkpoint, encoder_num_heads=args.encoder_num_heads,
                        predictor_num_heads=args.predictor_num_heads,
                        encoder_key=args.encoder_key, allow_nonfinite=args.allow_nonfinite,
                        **overrides)
  return loading.load(args.converted, **overrides)
