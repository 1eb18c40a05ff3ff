"""Official V-JEPA 2 / V-JEPA 2-AC `.pt` checkpoints as ready-to-call vjepa-jax models."""
from __future__ import annotations

from vjepa_jax.models import params
from vjepa_jax.models import pretrained


def load_official_checkpoint(path: str, encoder_num_heads: int | None = None,
                             predictor_num_heads: int | None = None, img_size: int = 256,
                             num_frames: int | None = None, encoder_key: str | None = None,
                             allow_nonfinite: bool = False) -> dict[str, pretrained.Loaded]:
  """Loads an official `.pt` checkpoint as ready-to-call vjepa-jax models.

  Args:
    path: `vitl.pt`, `vith.pt`, `vitg.pt`, `vitg-384.pt`, `vjepa2-ac-vitg.pt` or a training
      checkpoint of the official code.
    encoder_num_heads / predictor_num_heads: required only for sizes that were not released.
    img_size: resolution the AC predictor runs at (it fixes the predictor's patch grid).
    num_frames: accepted for parity with the official constructors; RoPE models need no
      frame count (any clip length works), so it has no effect.
    encoder_key: which encoder copy to load (default: see `params.pick_encoder_key`).
    allow_nonfinite: load tensors holding NaN or Inf instead of failing on them.

  Returns:
    `{"encoder": Loaded, ["predictor": Loaded]}`; `models["encoder"](video [B, T, H, W, 3])`
    -> `[B, N, D]`, `models["predictor"](tokens, actions, states, extrinsics=None)` ->
    `[B, N, D]`. Each `Loaded` exposes `.module`, `.params` and `.config`. For plain NNX modules
    use `vjepa_jax.models.load(path)`.
  """
  del num_frames
  ckpt = params.load_torch_file(path)
  converted = params.convert_checkpoint(ckpt, encoder_num_heads, predictor_num_heads, img_size,
                                        encoder_key, allow_nonfinite)
  return {kind: pretrained.Loaded(pretrained.build_model(kind, cfg, flat))
          for kind, (cfg, flat) in converted.items()}
