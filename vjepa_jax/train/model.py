"""The trained world model: frozen encoder + AC predictor, and which parameters train.

`trainable_filter` is the one place that decides frozen vs trainable for every mode.
"""
from __future__ import annotations


import jax
import ml_collections
import numpy as np
from flax import nnx

from vjepa_jax.models import ACPredictor
from vjepa_jax.models import EncoderConfig
from vjepa_jax.models import PredictorConfig
from vjepa_jax.models import VisionTransformer
from vjepa_jax.train import lora as lora_lib

MODES = ("full", "lora", "lora_encoder")


class WorldModel(nnx.Module):
  """Encoder (always frozen base weights) and AC predictor under one parameter tree."""

  def __init__(self, encoder: VisionTransformer, predictor: ACPredictor):
    self.encoder = encoder
    self.predictor = predictor


def trainable_filter(mode: str):
  """NNX filter of the parameters that receive gradients and optimizer state in `mode`.

  full: every predictor parameter (the official recipe). lora: predictor adapters only.
  lora_encoder: adapters of the predictor and of the encoder. Encoder base weights never train.
  """
  if mode == "full":
    return nnx.All(nnx.Param, nnx.PathContains("predictor"))
  if mode == "lora":
    return nnx.All(nnx.LoRAParam, nnx.PathContains("predictor"))
  if mode == "lora_encoder":
    return nnx.LoRAParam
  raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def attach_adapters(model: WorldModel, mode: str, cfg: ml_collections.ConfigDict) -> list[str]:
  """Adds the LoRA adapters the mode asks for; returns the adapted layer paths."""
  if mode == "full":
    return []
  adapted = lora_lib.add_lora(model.predictor, tuple(cfg.targets), rank=cfg.rank,
                              alpha=cfg.alpha, dropout=cfg.dropout, seed=cfg.seed)
  adapted = ["predictor." + p for p in adapted]
  if mode == "lora_encoder":
    adapted += ["encoder." + p for p in lora_lib.add_lora(
        model.encoder, tuple(cfg.encoder_targets), rank=cfg.rank, alpha=cfg.alpha,
        dropout=cfg.dropout, seed=cfg.seed + 7)]
  return adapted


def split(model: WorldModel, mode: str):
  """(graphdef, trainable, frozen, rest): `rest` holds non-parameter state (dropout RNGs)."""
  return nnx.split(model, trainable_filter(mode), nnx.Param, ...)


def audit(model: WorldModel, mode: str) -> dict[str, dict[str, int]]:
  """Trainable vs frozen parameter counts and bytes per group (encoder, predictor, adapters)."""
  _, trainable, frozen, _ = split(model, mode)
  rows: dict[str, dict[str, int]] = {}
  for status, state in (("trainable", trainable), ("frozen", frozen)):
    for path, var in nnx.to_flat_state(state):
      group = path[0] + (".lora" if "lora" in path else "")
      row = rows.setdefault(group, {"trainable": 0, "frozen": 0, "trainable_bytes": 0,
                                    "frozen_bytes": 0})
      v = var.get_value()
      row[status] += int(np.prod(v.shape))
      row[status + "_bytes"] += int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize
  return rows


def format_audit(rows: dict[str, dict[str, int]]) -> str:
  lines = [f"{'group':<20}{'trainable':>14}{'frozen':>14}{'trainable MB':>14}{'frozen MB':>12}"]
  tot = {"trainable": 0, "frozen": 0, "trainable_bytes": 0, "frozen_bytes": 0}
  for group in sorted(rows):
    r = rows[group]
    for k in tot:
      tot[k] += r[k]
    lines.append(f"{group:<20}{r['trainable']:>14,}{r['frozen']:>14,}"
                 f"{r['trainable_bytes'] / 2**20:>14.2f}{r['frozen_bytes'] / 2**20:>12.2f}")
  lines.append(f"{'total':<20}{tot['trainable']:>14,}{tot['frozen']:>14,}"
               f"{tot['trainable_bytes'] / 2**20:>14.2f}{tot['frozen_bytes'] / 2**20:>12.2f}")
  return "\n".join(lines)


def random_init(enc_cfg: EncoderConfig, pred_cfg: PredictorConfig, seed: int) -> WorldModel:
  rngs = nnx.Rngs(seed)
  return WorldModel(VisionTransformer(enc_cfg, rngs=rngs), ACPredictor(pred_cfg, rngs=rngs))


def log_audit(model: WorldModel, mode: str) -> None:
  if jax.process_index() == 0:
    print(f"parameter audit (mode={mode}):\n{format_audit(audit(model, mode))}", flush=True)
