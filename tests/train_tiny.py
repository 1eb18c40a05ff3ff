"""A tiny training config and synthetic DROID-format data shared by the trainer tests."""
import pathlib

import ml_collections

from configs import common
from vjepa_jax.data import synthetic


def make_dataset(root: pathlib.Path) -> str:
  out = root / "droid" / "1.0.0"
  if not (out / "dataset_info.json").exists():
    synthetic.main(["--out", str(out), "--episodes", "8", "--steps", "30", "40",
                    "--image-size", "45x80", "--seed", "3"])
  return str(out)


def tiny_config(data_path: str, steps: int = 8, **overrides) -> ml_collections.ConfigDict:
  """A 2-block model on 32 px clips of 4 frames, trained for `steps` steps; `overrides` are
  dotted config paths (`**{"optim.lr": 1e-2}`)."""
  c = common.base_config()
  c.model.dtype = "float32"
  c.matmul_precision = "highest"
  c.model.encoder.update(embed_dim=32, depth=1, num_heads=2, mlp_hidden=64)
  c.model.predictor.update(predictor_embed_dim=32, depth=2, num_heads=2, mlp_hidden=64,
                           img_size=32)
  c.init.predictor = "random"
  c.batch_size = 8
  c.log_every = 1
  c.optim.update(lr=1e-3, start_lr=1e-4, warmup_steps=min(2, steps // 2),
                 anneal_steps=min(2, steps // 2), total_steps=steps)
  c.data.path = data_path
  c.data.frames_per_clip = 4
  c.data.shuffle_buffer = 64
  c.data.episode_shuffle_buffer = 4
  c.data.deterministic = True
  c.data.val_fraction = 0.0
  c.checkpoint.every = 2
  c.checkpoint.keep = 10
  c.checkpoint.async_save = False
  c.lora.rank = 4
  c.lora.alpha = 8.0
  for k, v in overrides.items():
    node = c
    *parents, leaf = k.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = v
  return c


def fixed_batch(cfg: ml_collections.ConfigDict, seed: int = 0) -> dict:
  """A deterministic global batch with the pipeline's dtypes and shapes."""
  import numpy as np
  rng = np.random.default_rng(seed)
  b, t, s = cfg.batch_size, cfg.data.frames_per_clip, cfg.data.image_size
  return {"video": rng.integers(0, 256, (b, t, s, s, 3), dtype=np.uint8),
          "states": rng.normal(size=(b, t, 7)).astype(np.float32),
          "actions": (0.05 * rng.normal(size=(b, t - 1, 7))).astype(np.float32)}
