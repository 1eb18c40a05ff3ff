"""Shared access to the tiny official-model goldens in tests/fixtures/vjepa2_tiny.

Architecture numbers (heads, image size, ...) are read from the fixture's meta.json, never
hard-coded, so the tests run unchanged on fixture sets with other shapes.
"""
import functools
import json
import pathlib

import numpy as np

DIR = pathlib.Path(__file__).parent / "fixtures" / "vjepa2_tiny"
CHECKPOINT = DIR / "checkpoint.pt"


@functools.lru_cache(None)
def meta() -> dict:
  return json.loads((DIR / "meta.json").read_text())


@functools.lru_cache(None)
def goldens() -> dict:
  return dict(np.load(DIR / "fixtures.npz"))


@functools.lru_cache(None)
def goldens_f64() -> dict:
  return dict(np.load(DIR / "fixtures_f64.npz"))


def load_kwargs() -> dict:
  m = meta()
  img = m["predictor"]["img_size"]
  return dict(encoder_num_heads=m["encoder"]["num_heads"],
              predictor_num_heads=m["predictor"]["num_heads"],
              img_size=img[0] if isinstance(img, list) else img)


def to_bthwc(x: np.ndarray) -> np.ndarray:
  """Official [B, C, T, H, W] -> channels-last [B, T, H, W, C]."""
  return np.ascontiguousarray(np.transpose(x, (0, 2, 3, 4, 1)))
