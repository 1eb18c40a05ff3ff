"""Keeping host memory low while converting a memory-mapped `.pt` file (opened with
`vjepa_jax.models.params.load_torch_file`)."""
from __future__ import annotations

import os
from typing import Any, Callable


_MADV_DONTNEED = 4  # Linux value on every architecture vjepa-jax runs on.


def _file_mappings(path: str) -> list[tuple[int, int]]:
  """[start, end) address ranges of this process's memory maps of `path` (Linux only)."""
  target = os.path.realpath(path)
  ranges = []
  try:
    with open("/proc/self/maps") as f:
      for line in f:
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].strip() == target:
          start, end = fields[0].split("-")
          ranges.append((int(start, 16), int(end, 16)))
  except OSError:
    return []
  return ranges


def page_releaser(path: str) -> Callable[[Any], None]:
  """A function that drops a converted tensor's pages of the memory-mapped checkpoint `path`.

  Pages of a memory-mapped file that were read count in the process's resident memory until the
  mapping goes away; dropping each tensor's pages once it is converted keeps resident memory at
  about one tensor instead of every tensor read so far. Only whole pages inside a mapping of the
  (never written) checkpoint file are dropped, so a later read simply faults them in from the file
  again; anything else (anonymous memory, other platforms) is left alone.
  """
  ranges = _file_mappings(path)
  if not ranges:
    return lambda tensor: None
  import ctypes
  libc = ctypes.CDLL(None, use_errno=True)
  libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
  page = os.sysconf("SC_PAGE_SIZE")

  def release(tensor) -> None:
    if not hasattr(tensor, "untyped_storage"):
      return
    storage = tensor.untyped_storage()
    lo, hi = storage.data_ptr(), storage.data_ptr() + storage.nbytes()
    start, end = -(-lo // page) * page, hi // page * page
    if end > start and any(a <= start and end <= b for a, b in ranges):
      libc.madvise(start, end - start, _MADV_DONTNEED)

  return release
