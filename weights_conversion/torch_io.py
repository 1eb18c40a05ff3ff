"""Reading official `.pt` checkpoints lazily (memory-mapped)."""
from __future__ import annotations

import os
import zipfile
from typing import Any, Mapping


def load_torch_checkpoint(path: str) -> Mapping[str, Any]:
  """Opens an official checkpoint memory-mapped; tensors are read only when converted.

  Raises:
    ValueError: the file is missing, truncated or not a torch checkpoint.
  """
  try:
    import torch
  except ImportError as e:
    raise ImportError("reading .pt checkpoints needs PyTorch: pip install 'vjepa-jax[convert]'"
                      ) from e
  if not os.path.isfile(path):
    raise ValueError(f"checkpoint file not found: {path}")
  if not zipfile.is_zipfile(path):
    raise ValueError(f"{path} is not a readable PyTorch checkpoint (not a torch zip archive; "
                     "truncated or corrupt download?)")
  try:
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
  except Exception as e:  # torch raises several unrelated types for damaged archives
    raise ValueError(f"{path} could not be read as a PyTorch checkpoint (truncated or corrupt "
                     f"file?): {type(e).__name__}: {e}") from e

