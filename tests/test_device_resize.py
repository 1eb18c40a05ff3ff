"""Clips left at their crop size by the pipeline (`resize_on_host=False`) and resized on the
device equal the host-resized clips to uint8 rounding (the two paths are interchangeable)."""
import pathlib

import jax.numpy as jnp
import numpy as np

from vjepa_jax.data import droid
from vjepa_jax import preprocess

DATA = pathlib.Path(__file__).parent / "fixtures" / "droid_tiny" / "droid" / "1.0.0"


def test_device_resize_matches_host_resize():
  cfg = droid.default_config()
  cfg.update(path=str(DATA), deterministic=True, shuffle=False, num_epochs=1, val_fraction=0.0,
             image_size=64, frames_per_clip=4)
  host = next(iter(droid.make_clip_dataset(cfg)))
  cfg.resize_on_host = False
  raw = next(iter(droid.make_clip_dataset(cfg)))
  assert raw["video"].shape[1:3] != (64, 64)
  np.testing.assert_array_equal(raw["step_index"], host["step_index"])
  resized = np.asarray(preprocess.resize(jnp.asarray(raw["video"].numpy(), jnp.float32), 64))
  diff = np.abs(resized - host["video"].numpy().astype(np.float32))
  assert diff.max() <= 0.5 + 1e-3 and diff.mean() < 0.1
