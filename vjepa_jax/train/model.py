"""The trained world model: frozen encoder + AC predictor, and which parameters train.

`trainable_filter` is the one place that decides frozen vs trainable for every mode.
"""
from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from vjepa_jax.models import ACPredictor
from vjepa_jax.models import EncoderConfig
from vjepa_jax.models import PredictorConfig
from vjepa_jax.models import VisionTransformer
from vjepa_jax.models import lora as lora_lib

MODES = lora_lib.MODES
# Layers that receive no input in training: the step feeds no extrinsics, so the extrinsics
# encoder would only be decayed towards zero. They stay frozen at their base values.
UNUSED = ("extrinsics_encoder",)


class WorldModel(nnx.Module):
  """Encoder (always frozen base weights) and AC predictor under one parameter tree."""

  def __init__(self, encoder: VisionTransformer, predictor: ACPredictor):
    self.encoder = encoder
    self.predictor = predictor


def _unused():
  return nnx.Any(*(nnx.PathContains(name) for name in UNUSED))


def trainable_filter(mode: str):
  """NNX filter of the parameters that receive gradients and optimizer state in `mode`.

  full: every predictor parameter that receives input (the official recipe). lora: predictor
  adapters only. lora_encoder: adapters of the predictor and of the encoder. Encoder base weights
  never train; neither do layers in `UNUSED`.
  """
  if mode == "full":
    return nnx.All(nnx.Param, nnx.PathContains("predictor"), nnx.Not(_unused()))
  if mode == "lora":
    return nnx.All(nnx.LoRAParam, nnx.PathContains("predictor"), nnx.Not(_unused()))
  if mode == "lora_encoder":
    return nnx.All(nnx.LoRAParam, nnx.Not(_unused()))
  raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def split(model: WorldModel, mode: str):
  """(graphdef, trainable, frozen, rest): `rest` holds non-parameter state (dropout RNGs)."""
  return nnx.split(model, trainable_filter(mode), nnx.Param, ...)


def _group(path: tuple) -> str:
  unused = next((p for p in path if p in UNUSED), None)
  if unused:
    return f"{path[0]}.{unused} (no input)"
  return path[0] + (".lora" if "lora" in path else "")


def audit(model: WorldModel, mode: str) -> dict[str, dict[str, int]]:
  """Trainable vs frozen parameter counts and bytes per group (encoder, predictor, adapters,
  and the layers that receive no input, frozen)."""
  _, trainable, frozen, _ = split(model, mode)
  rows: dict[str, dict[str, int]] = {}
  for status, state in (("trainable", trainable), ("frozen", frozen)):
    for path, var in nnx.to_flat_state(state):
      row = rows.setdefault(_group(tuple(path)), {"trainable": 0, "frozen": 0,
                                                   "trainable_bytes": 0, "frozen_bytes": 0})
      v = var.get_value()
      row[status] += int(np.prod(v.shape))
      row[status + "_bytes"] += int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize
  return rows


def format_audit(rows: dict[str, dict[str, int]]) -> str:
  width = max([20] + [len(g) + 2 for g in rows])
  lines = [f"{'group':<{width}}{'trainable':>14}{'frozen':>14}{'trainable MB':>14}"
           f"{'frozen MB':>12}"]
  tot = {"trainable": 0, "frozen": 0, "trainable_bytes": 0, "frozen_bytes": 0}
  for group in sorted(rows):
    r = rows[group]
    for k in tot:
      tot[k] += r[k]
    lines.append(f"{group:<{width}}{r['trainable']:>14,}{r['frozen']:>14,}"
                 f"{r['trainable_bytes'] / 2**20:>14.2f}{r['frozen_bytes'] / 2**20:>12.2f}")
  lines.append(f"{'total':<{width}}{tot['trainable']:>14,}{tot['frozen']:>14,}"
               f"{tot['trainable_bytes'] / 2**20:>14.2f}{tot['frozen_bytes'] / 2**20:>12.2f}")
  if any("(no input)" in g for g in rows):
    lines.append("(no input): layers nothing feeds in training (no extrinsics are given); frozen "
                 "at their base values")
  return "\n".join(lines)


def log_audit(model: WorldModel, mode: str) -> None:
  if jax.process_index() == 0:
    print(f"parameter audit (mode={mode}):\n{format_audit(audit(model, mode))}", flush=True)


# Fields of the training config's `model.encoder` / `model.predictor` blocks (architecture only;
# the numerics are set once for both models in `model.*`, and the predictor's input width, patch
# and tubelet are the encoder's).
ENCODER_FIELDS = ("embed_dim", "depth", "num_heads", "mlp_hidden", "patch_size", "tubelet_size",
                  "in_chans", "norm_eps")
PREDICTOR_FIELDS = ("predictor_embed_dim", "depth", "num_heads", "mlp_hidden", "img_size",
                    "norm_eps", "action_dim", "is_frame_causal")
NUMERICS = ("dtype", "attention_impl", "remat", "rope_mode")


def architecture(cfg, fields) -> dict:
  """The `fields` of a model config (a dataclass or a mapping) as a plain dict."""
  get = cfg.get if hasattr(cfg, "get") else lambda f: getattr(cfg, f)
  return {f: get(f) for f in fields}


def model_configs(model_cfg) -> tuple[EncoderConfig, PredictorConfig]:
  """(EncoderConfig, PredictorConfig) of a training config's `model` block."""
  numerics = {k: model_cfg[k] for k in NUMERICS}
  pred = architecture(model_cfg.predictor, PREDICTOR_FIELDS)
  enc = EncoderConfig(**architecture(model_cfg.encoder, ENCODER_FIELDS),
                      img_size=pred["img_size"], **numerics)
  return enc, PredictorConfig(**pred, embed_dim=enc.embed_dim, patch_size=enc.patch_size,
                              tubelet_size=enc.tubelet_size, **numerics)
