"""Official V-JEPA 2 / V-JEPA 2-AC checkpoints -> vjepa-jax models."""
from __future__ import annotations

import logging
from typing import Any, Mapping, NamedTuple

from vjepa_jax.models import pretrained
from weights_conversion import mapping
from weights_conversion import torch_io

AC_KEYS = ("encoder", "predictor")
PRETRAIN_KEYS = ("encoder", "target_encoder")


def pick_encoder_key(ckpt: Mapping[str, Any], encoder_key: str | None) -> str:
  """Which encoder copy to convert.

  AC checkpoints hold two identical copies; pre-training checkpoints hold the gradient-trained
  `encoder` and its EMA `target_encoder`. The AC recipe starts from `target_encoder`, so that is
  the default for pre-training files.
  """
  if encoder_key is not None:
    if encoder_key not in ckpt:
      raise ValueError(f"checkpoint has no {encoder_key!r} entry; top-level keys: {sorted(ckpt)}")
    return encoder_key
  if "target_encoder" in ckpt and not _has_ac_predictor(ckpt):
    return "target_encoder"
  if "encoder" in ckpt:
    return "encoder"
  if "target_encoder" in ckpt:
    return "target_encoder"
  raise ValueError(
      "not a V-JEPA 2 checkpoint: expected top-level 'encoder'/'target_encoder' (pre-training) or "
      f"'encoder'/'predictor' (V-JEPA 2-AC) state dicts, found keys {sorted(ckpt)[:20]}")


def _has_ac_predictor(ckpt: Mapping[str, Any]) -> bool:
  pred = ckpt.get("predictor")
  return isinstance(pred, Mapping) and mapping.is_ac_predictor(mapping.strip_prefixes(pred))


class Job(NamedTuple):
  """One model to convert: its config, stripped state dict and checked tensor plan."""
  kind: str
  config: Any
  state_dict: Mapping[str, Any]
  plan: dict


def plan_checkpoint(ckpt: Mapping[str, Any], encoder_num_heads: int | None = None,
                    predictor_num_heads: int | None = None, img_size: int = 256,
                    encoder_key: str | None = None) -> list[Job]:
  """Infers the architectures and checks every tensor's name and shape, reading no tensor data.

  Raises (before anything is converted or written) on any mismatch.
  """
  if not isinstance(ckpt, Mapping):
    raise ValueError(f"not a V-JEPA 2 checkpoint: top level is a {type(ckpt).__name__}, "
                     "expected a dict of state dicts")
  key = pick_encoder_key(ckpt, encoder_key)
  enc_sd = ckpt[key]
  if not isinstance(enc_sd, Mapping):
    raise ValueError(f"not a V-JEPA 2 checkpoint: {key!r} is not a state dict")
  enc_sd = mapping.strip_prefixes(enc_sd)
  enc_cfg = mapping.infer_encoder_config(enc_sd, encoder_num_heads, img_size)
  jobs = [Job("encoder", enc_cfg, enc_sd, mapping.plan(
      enc_sd, pretrained.param_shapes("encoder", enc_cfg), mapping.ENCODER_RULES,
      f"encoder ({key})"))]
  pred = ckpt.get("predictor")
  if isinstance(pred, Mapping):
    pred_sd = mapping.strip_prefixes(pred)
    if mapping.is_ac_predictor(pred_sd):
      pred_cfg = mapping.infer_predictor_config(
          pred_sd, predictor_num_heads, img_size, enc_cfg.patch_size, enc_cfg.tubelet_size)
      if pred_cfg.embed_dim != enc_cfg.embed_dim:
        raise mapping.ConversionError(
            "predictor", misshaped=[("predictor_embed.weight", pred_cfg.embed_dim,
                                     f"encoder width {enc_cfg.embed_dim}")])
      jobs.append(Job("predictor", pred_cfg, pred_sd, mapping.plan(
          pred_sd, pretrained.param_shapes("predictor", pred_cfg), mapping.PREDICTOR_RULES,
          "AC predictor")))
    else:
      logging.info("skipping the checkpoint's mask-token (pre-training) predictor: only the "
                   "encoder of pre-training checkpoints is converted")
  return jobs


def convert_checkpoint(ckpt: Mapping[str, Any], encoder_num_heads: int | None = None,
                       predictor_num_heads: int | None = None, img_size: int = 256,
                       encoder_key: str | None = None) -> dict[str, tuple[Any, dict]]:
  """Converts an in-memory (or memory-mapped) official checkpoint dict.

  Returns:
    `{"encoder": (EncoderConfig, flat params), ["predictor": (PredictorConfig, flat params)]}`.
  """
  jobs = plan_checkpoint(ckpt, encoder_num_heads, predictor_num_heads, img_size, encoder_key)
  return {job.kind: (job.config, mapping.materialize(job.state_dict, job.plan)) for job in jobs}


def load_official_checkpoint(path: str, encoder_num_heads: int | None = None,
                             predictor_num_heads: int | None = None, img_size: int = 256,
                             num_frames: int | None = None,
                             encoder_key: str | None = None) -> dict[str, pretrained.Loaded]:
  """Loads an official `.pt` checkpoint as ready-to-call vjepa-jax models.

  Args:
    path: `vitl.pt`, `vith.pt`, `vitg.pt`, `vitg-384.pt`, `vjepa2-ac-vitg.pt` or a training
      checkpoint of the official code.
    encoder_num_heads / predictor_num_heads: required only for sizes that were not released.
    img_size: resolution the AC predictor runs at (it fixes the predictor's patch grid).
    num_frames: accepted for parity with the official constructors; RoPE models need no
      frame count (any clip length works), so it has no effect.
    encoder_key: which encoder copy to load (default: see `pick_encoder_key`).

  Returns:
    `{"encoder": Loaded, ["predictor": Loaded]}`; `models["encoder"](video [B, T, H, W, 3])`
    -> `[B, N, D]`, `models["predictor"](tokens, actions, states, extrinsics=None)` ->
    `[B, N, D]`. Each `Loaded` exposes `.module`, `.params` and `.config`.
  """
  del num_frames
  ckpt = torch_io.load_torch_checkpoint(path)
  converted = convert_checkpoint(ckpt, encoder_num_heads, predictor_num_heads, img_size,
                                 encoder_key)
  return {kind: pretrained.Loaded(pretrained.build_model(kind, cfg, flat))
          for kind, (cfg, flat) in converted.items()}
