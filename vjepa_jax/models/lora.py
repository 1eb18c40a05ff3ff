"""LoRA adapters on named Linear layers, and merging them back into the base weights.

Adapters are `nnx.LoRAParam`s at `<layer>.lora.{lora_a,lora_b}`: base weights keep their paths, so
converted checkpoints load the same with LoRA on or off. A target is a regular expression that
must match a layer's whole dotted path (`predictor_blocks.3.attn.qkv`), not a part of it.
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import jax.numpy as jnp
from flax import nnx

from vjepa_jax.models import layers

# qkv, proj, fc1 and fc2 of every predictor block (the default LoRA recipe).
DEFAULT_PREDICTOR_TARGETS = (r"predictor_blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(fc1|fc2))",)
DEFAULT_ENCODER_TARGETS = (r"blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(fc1|fc2))",)
# Training modes: which models get adapters (see `attach`).
MODES = ("full", "lora", "lora_encoder")


def linear_layers(model: nnx.Module) -> dict[str, layers.Linear]:
  """{dotted path: Linear} of every dense layer in `model`."""
  return {".".join(map(str, path)): m for path, m in nnx.iter_graph(model)
          if isinstance(m, layers.Linear)}


def add_lora(model: nnx.Module, targets: Sequence[str], *, rank: int, alpha: float,
             dropout: float = 0.0, seed: int = 0) -> list[str]:
  """Attaches adapters to every Linear whose whole dotted path matches one of `targets`
  (`re.fullmatch`: the pattern `attn.qkv` alone matches no layer, `predictor_blocks.*attn.qkv`
  matches the qkv projection of every predictor block).

  Returns:
    the adapted paths.

  Raises:
    ValueError: a pattern that matches no layer (a typo would otherwise train nothing).
  """
  found = linear_layers(model)
  rngs = nnx.Rngs(params=seed, dropout=seed + 1)
  adapted = []
  for pattern in targets:
    rx = re.compile(pattern)
    hits = [p for p in found if rx.fullmatch(p)]
    if not hits:
      raise ValueError(f"LoRA target {pattern!r} matches no Linear layer (a target must match "
                       f"a whole layer path); some layer paths: {sorted(found)[:8]}")
    adapted += hits
  for path in sorted(set(adapted)):
    lin = found[path]
    lin.lora = layers.LoRA(lin.in_features, lin.out_features, rank=rank, alpha=alpha,
                           dropout=dropout, rngs=rngs)
  return sorted(set(adapted))


def merge_lora(model: nnx.Module) -> None:
  """Folds every adapter into its base kernel (`W += scale * A @ B`) and removes it, in place."""
  for lin in linear_layers(model).values():
    if lin.lora is not None:
      a, b = lin.lora.lora_a[...], lin.lora.lora_b[...]
      delta = (a @ b) * lin.lora.scale
      lin.kernel[...] = (lin.kernel[...] + delta).astype(lin.kernel[...].dtype)
      lin.lora = nnx.data(None)


def has_lora(model: nnx.Module) -> bool:
  return any(lin.lora is not None for lin in linear_layers(model).values())


def zeros_like_b(model: nnx.Module) -> bool:
  """True when every adapter's B is still zero (the model equals its base)."""
  return all(bool(jnp.all(lin.lora.lora_b[...] == 0)) for lin in linear_layers(model).values()
             if lin.lora is not None)


def attach(encoder: nnx.Module, predictor: nnx.Module, mode: str,
           cfg: Mapping[str, Any]) -> list[str]:
  """Adds the adapters training mode `mode` uses; returns the adapted layer paths.

  full: none. lora: predictor layers matching `cfg["targets"]`. lora_encoder: also encoder layers
  matching `cfg["encoder_targets"]`. `cfg` holds `rank`, `alpha`, `dropout`, `seed` and the
  target lists (the training config's `lora` block).
  """
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
  if mode == "full":
    return []
  adapted = ["predictor." + p for p in add_lora(
      predictor, tuple(cfg["targets"]), rank=cfg["rank"], alpha=cfg["alpha"],
      dropout=cfg["dropout"], seed=cfg["seed"])]
  if mode == "lora_encoder":
    adapted += ["encoder." + p for p in add_lora(
        encoder, tuple(cfg["encoder_targets"]), rank=cfg["rank"], alpha=cfg["alpha"],
        dropout=cfg["dropout"], seed=cfg["seed"] + 7)]
  return adapted
