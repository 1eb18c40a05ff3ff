"""Frames of an mp4 at given timestamps, decoded with PyAV (LeRobot's tolerance semantics).

`Decoder.frames(path, times)` returns uint8 `[T, H, W, 3]` RGB frames whose presentation times
are nearest to `times` (seconds, increasing); a frame farther than `tolerance_s` from its query,
or a file that does not decode, raises `VideoError` naming the file and the time. Open
containers are kept per process (a small LRU), so a worker decoding many clips of the same v3.0
file parses its index once. Between queries the decoder keeps decoding forward when the next
frame is at most one keyframe interval (`gop`, else 1 s) away, and seeks to the keyframe
before it otherwise.
"""
import collections
from collections.abc import Sequence
import os

import numpy as np


class VideoError(ValueError):
  """An mp4 that cannot give the requested frames (missing, truncated, corrupt, off-grid)."""


def probe(path: str) -> dict:
  """{"frames", "duration", "fps", "height", "width", "codec"} from the container header;
  VideoError if it does not open or has no video stream."""
  import av
  try:
    with _open(path) as container:
      if not container.streams.video:
        raise VideoError(f"{path} has no video stream")
      s = container.streams.video[0]
      duration = float(s.duration * s.time_base) if s.duration else (
          container.duration / 1e6 if container.duration else 0.0)
      return {"frames": int(s.frames or 0), "duration": duration,
              "fps": float(s.average_rate or 0), "height": s.codec_context.height,
              "width": s.codec_context.width, "codec": s.codec_context.name}
  except av.FFmpegError as e:
    raise VideoError(f"{path} does not open as a video: {e}") from e


def _open(path: str):
  import av
  if "://" in path:
    from etils import epath
    return av.open(epath.Path(path).open("rb"))
  return av.open(path)


class _Open:
  """An open container and the decoder position in it."""

  def __init__(self, path: str, threads: int):
    self.container = _open(path)
    if not self.container.streams.video:
      raise VideoError(f"{path} has no video stream")
    self.stream = self.container.streams.video[0]
    self.stream.thread_count = threads
    self.time_base = float(self.stream.time_base)
    self.frames = None   # the forward decode iterator after the last seek
    self.last = None     # time of the last decoded frame
    self.last_rgb = None  # that frame as RGB, for a query that asks for it again

  def close(self):
    self.container.close()


class Decoder:
  """Per-process frame decoder with an LRU of open containers."""

  def __init__(self, tolerance_s: float = 1e-4, gop: int | None = None, threads: int = 1,
               max_open: int = 8):
    self.tolerance_s = tolerance_s
    self.gop = gop
    self.threads = threads
    self.max_open = max_open
    self._open: collections.OrderedDict[str, _Open] = collections.OrderedDict()
    self._pid = os.getpid()

  def _get(self, path: str) -> _Open:
    if os.getpid() != self._pid:  # A forked worker must not share the parent's decoders.
      self._open.clear()
      self._pid = os.getpid()
    if path in self._open:
      self._open.move_to_end(path)
      return self._open[path]
    import av
    try:
      handle = _Open(path, self.threads)
    except (av.FFmpegError, OSError) as e:
      raise VideoError(f"{path} does not open as a video: {e}") from e
    self._open[path] = handle
    while len(self._open) > self.max_open:
      self._open.popitem(last=False)[1].close()
    return handle

  def frames(self, path: str, times: Sequence[float], fps: float,
             window: Sequence[int] | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 `[T, H, W, 3]` frames nearest to `times` (increasing seconds) in `path`; with
    `window` = (top, left, h, w) only that window of each frame, `[T, h, w, 3]`; written into
    `out` when given."""
    import av
    handle = self._get(path)
    try:
      for i, t in enumerate(times):
        rgb = self._frame(handle, float(t), fps)
        if window is not None:
          top, left, h, w = window
          rgb = rgb[top:top + h, left:left + w]
        if out is None:  # Frames go straight into the clip array: no list, no stack.
          out = np.empty((len(times), *rgb.shape), np.uint8)
        out[i] = rgb
    except av.FFmpegError as e:
      self._drop(path)
      raise VideoError(f"{path}: cannot decode the frame at {t:.4f} s (truncated or corrupt "
                       f"mp4): {e}") from e
    except VideoError:
      self._drop(path)
      raise
    return out

  def _drop(self, path: str) -> None:
    handle = self._open.pop(path, None)
    if handle is not None:
      handle.close()

  def _frame(self, h: _Open, t: float, fps: float) -> np.ndarray:
    tol = self.tolerance_s
    if h.last is not None and abs(t - h.last) < tol and h.last_rgb is not None:
      return h.last_rgb
    # Decoding forward beats a seek while the next frame is within one keyframe interval; with
    # the interval unknown, a second of video.
    forward_limit = self.gop / fps if self.gop else 1.0
    if h.frames is None or h.last is None or t < h.last - tol or t - h.last > forward_limit + tol:
      h.container.seek(max(int(round(t / h.time_base)), 0), stream=h.stream, backward=True,
                       any_frame=False)
      h.frames = h.container.decode(h.stream)
      h.last = h.last_rgb = None
    best = None
    for frame in h.frames:
      if frame.pts is None:
        continue
      ft = frame.pts * h.time_base
      h.last, h.last_rgb = ft, None
      if ft >= t - tol:
        best = (ft, frame)
        break
    if best is None:
      raise VideoError(f"{h.container.name}: no frame at {t:.4f} s (the video ends at "
                       f"{h.last if h.last is not None else 'its start'}; truncated or shorter "
                       "than the episode)")
    ft, frame = best
    if abs(ft - t) >= tol:
      raise VideoError(f"{h.container.name}: the frame nearest to {t:.4f} s is at {ft:.4f} s, "
                       f"outside the tolerance {tol} s (timestamps off the frame grid)")
    h.last_rgb = frame.to_ndarray(format="rgb24")
    return h.last_rgb
