"""Architecture configs and the official presets.

Presets carry the hyper-parameters of the released models (facebookresearch/vjepa2 builders
`vit_large`, `vit_huge`, `vit_giant_xformers`, `vit_ac_predictor`). `mlp_hidden` is explicit
because the official widths come from `int(E * mlp_ratio)` with non-integer ratios (ViT-g: 48/11).
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class _Transformer:
  """Fields shared by both models: block stack, tokenisation, numerics."""
  depth: int = 24
  num_heads: int = 16
  mlp_hidden: int = 4096
  patch_size: int = 16
  tubelet_size: int = 2
  img_size: int = 256
  norm_eps: float = 1e-6
  rope_mode: str = "official"
  dtype: str = "float32"
  attention_impl: str = "xla"
  remat: bool = False

  def replace(self, **kw):
    return dataclasses.replace(self, **kw)


@dataclasses.dataclass(frozen=True)
class EncoderConfig(_Transformer):
  """V-JEPA 2 video encoder. `img_size` is informative: RoPE makes the weights size-agnostic."""
  embed_dim: int = 1024
  in_chans: int = 3

  @property
  def head_dim(self) -> int:
    return self.embed_dim // self.num_heads


@dataclasses.dataclass(frozen=True)
class PredictorConfig(_Transformer):
  """V-JEPA 2-AC action-conditioned predictor.

  `img_size` fixes the patch grid the predictor was built for (it only runs at that grid);
  `action_dim` is 7 for DROID (xyz, roll/pitch/yaw, gripper); extrinsics have `action_dim - 1`.
  """
  embed_dim: int = 1408
  predictor_embed_dim: int = 1024
  action_dim: int = 7
  is_frame_causal: bool = True

  @property
  def head_dim(self) -> int:
    return self.predictor_embed_dim // self.num_heads

  @property
  def grid(self) -> tuple[int, int]:
    return self.img_size // self.patch_size, self.img_size // self.patch_size


ENCODERS = {
    "vit_large": EncoderConfig(embed_dim=1024, depth=24, num_heads=16, mlp_hidden=4096),
    "vit_huge": EncoderConfig(embed_dim=1280, depth=32, num_heads=16, mlp_hidden=5120),
    "vit_giant": EncoderConfig(embed_dim=1408, depth=40, num_heads=22, mlp_hidden=6144),
}
ENCODERS["vit_large_256"] = ENCODERS["vit_large"]
ENCODERS["vit_huge_256"] = ENCODERS["vit_huge"]
ENCODERS["vit_giant_256"] = ENCODERS["vit_giant"]
ENCODERS["vit_large_384"] = ENCODERS["vit_large"].replace(img_size=384)
ENCODERS["vit_huge_384"] = ENCODERS["vit_huge"].replace(img_size=384)
ENCODERS["vit_giant_384"] = ENCODERS["vit_giant"].replace(img_size=384)

PREDICTORS = {
    "vit_ac_predictor_giant": PredictorConfig(
        embed_dim=1408, predictor_embed_dim=1024, depth=24, num_heads=16, mlp_hidden=4096),
}

# Parameter counts of the official PyTorch modules (state-dict tensors).
OFFICIAL_PARAM_COUNTS = {
    "vit_large": 303_885_312,
    "vit_huge": 631_648_000,
    "vit_giant": 1_012_173_952,
    "vit_ac_predictor_giant": 305_220_992,
}

# Head counts of the released checkpoints, keyed by width: the converter cannot infer heads
# from tensor shapes.
KNOWN_ENCODER_HEADS = {1024: 16, 1280: 16, 1408: 22}
KNOWN_PREDICTOR_HEADS = {1024: 16, 384: 12}


def encoder_preset(name: str, **overrides) -> EncoderConfig:
  if name not in ENCODERS:
    raise ValueError(f"unknown encoder preset {name!r}; known: {sorted(ENCODERS)}")
  return ENCODERS[name].replace(**overrides)


def predictor_preset(name: str, **overrides) -> PredictorConfig:
  if name not in PREDICTORS:
    raise ValueError(f"unknown predictor preset {name!r}; known: {sorted(PREDICTORS)}")
  return PREDICTORS[name].replace(**overrides)
