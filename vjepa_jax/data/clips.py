"""LeRobot datasets -> V-JEPA 2-AC clips on grain: a random-access source over (episode, window).

  source = clips.ClipSource(cfg, spec)     # reads meta/ and the parquet columns once, checks them
  elems = clips.elements(cfg, spec, source=source)     # element k -> clip, a pure function of k
  ds = clips.clip_dataset(elems, start=0)  # grain.MapDataset of clips (unbatched NumPy dicts)
  it = iter(clips.iter_dataset(ds, cfg))   # worker processes decode (cfg.num_workers)

Elements follow the data contract: `video` uint8 `[T, S, S, 3]` (or the "ac" window's native size
without host resize), `states` f32 `[T, A]`, `actions` f32 `[T-1, A]`, `step_index` int32 `[T]`
(frame index in the episode), `episode_id` bytes.

The source holds one unit per episode visit (`"random"`: `clips_per_visit` units per kept episode,
each drawing its own window) or per window (`"sliding"`). Element k of a process is the unit at
global position `process_index + k * process_count` of the unit sequence, shuffled by a fresh
permutation every epoch (a global shuffle), drawn (window start, camera, crop) with a generator
seeded by (seed, position): processes take disjoint elements, any worker can compute any
element, and a resumed run that starts at the k clips it consumed sees exactly the clips an
uninterrupted one would, with any worker count. Batches are consecutive elements, decoded by
the workers straight into shared memory.

Episodes are checked once, when the source is built, and skipped with a count (`counts`):
parquet rows != the episode index's length or the video's (`length_mismatch`), timestamps off the
`frame_index / fps` grid beyond `timestamp_tolerance_s` (`off_grid`), non-finite states or stored
actions (`nonfinite_state`), a video that does not open (`bad_video`), too short for one clip
(`too_short`), plus the split and success filters. A frame that cannot be decoded at clip time
(a truncated file) raises `video.VideoError` naming the file.
"""
import concurrent.futures
import functools
import hashlib
import threading

from absl import flags
from absl import logging
import grain
import ml_collections
import numpy as np

from vjepa_jax import poses
from vjepa_jax.data import config as config_lib
from vjepa_jax.data import layout
from vjepa_jax.data import lerobot
from vjepa_jax.data import np_transforms
from vjepa_jax.data import specs as specs_lib
from vjepa_jax.data import video as video_lib

FILTERS = ("other_split", "not_success", "length_mismatch", "off_grid", "nonfinite_state",
           "bad_video", "too_short")
COUNTERS = ("episodes_read", *FILTERS, "episodes_kept", "steps_read", "steps_kept",
            "idle_steps_trimmed")
_HASH_BUCKETS = 1_000_000
_TASK_KEY = "task"  # a spec's language "task": the episode's task string via task_index


def in_val_split(episode_id: str, val_fraction: float) -> bool:
  """Stable held-out assignment by a hash of the episode id."""
  bucket = int.from_bytes(hashlib.sha256(episode_id.encode()).digest()[:8], "little")
  return bucket % _HASH_BUCKETS < int(round(val_fraction * _HASH_BUCKETS))


def check_spec(spec: specs_lib.Spec, meta: lerobot.Meta, cameras) -> None:
  """ValueError naming every key the spec reads that the dataset lacks (and the keys it has)."""
  keys = [k for k in spec.referenced_keys() if k != _TASK_KEY or spec.language != _TASK_KEY]
  missing = [k for k in keys if k not in meta.features]
  if missing:
    raise ValueError(f"LeRobot dataset {meta.root} lacks {missing} (read by spec "
                     f"{spec.name!r}); its features: {sorted(meta.features)}")
  for cam in cameras:
    if cam in meta.image_features:
      raise ValueError(f"camera {cam!r} of {meta.root} is stored as images in the parquet files; "
                       "only video features are read: re-encode it as a video feature")
    if cam not in meta.cameras:
      raise ValueError(f"unknown camera(s) [{cam!r}]; available cameras: {meta.cameras}")


class _Episode:
  __slots__ = ("id", "index", "states", "stored", "timestamps", "videos", "lo", "hi")

  def __init__(self, **kw):
    for k, v in kw.items():
      setattr(self, k, v)


class ClipSource:
  """The kept episodes of a LeRobot dataset and the units (visits or windows) drawn from them.

  Args:
    cfg: a resolved data config (`data.resolve`): camera, frame_step set.
    spec: the resolved LeRobot spec.
  """

  def __init__(self, cfg: ml_collections.ConfigDict, spec: specs_lib.Spec):
    self.cfg = ml_collections.FrozenConfigDict(cfg)
    self.spec = spec
    meta = lerobot.open_dataset(cfg.path)
    self.fps = meta.fps
    self.cameras = [c.strip() for c in cfg.camera.split(",") if c.strip()]
    check_spec(spec, meta, self.cameras)
    # Frame sizes from info.json: the crop window is known before anything is decoded.
    self.frame_hw = {c: tuple(int(x) for x in meta.features[c]["shape"][:2])
                     for c in self.cameras}
    gops = {int((meta.features[c].get("info") or {}).get("video.g") or 0) for c in self.cameras}
    self.gop = max(gops) or None
    self.counts = dict.fromkeys(COUNTERS, 0)
    self.episodes = self._index(meta)
    self.units = self._units()
    self._local = threading.local()
    logging.info("LeRobot %s (spec %s, %s): %d of %d episodes kept, %d units; filter counts %s",
                 cfg.path, spec.name, meta.version, len(self.episodes),
                 self.counts["episodes_read"], len(self.units), self.counts)

  def __getstate__(self):
    state = dict(self.__dict__)
    state.pop("_local")
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._local = threading.local()

  # -- index --------------------------------------------------------------------------------
  def _index(self, meta: lerobot.Meta) -> list[_Episode]:
    cfg, spec = self.cfg, self.spec
    wanted = lerobot.split_range(meta, cfg.source_split)
    episodes = [ep for ep in meta.episodes if ep.index in wanted]
    columns = ["timestamp"] + [k for k in spec.referenced_keys() if k in meta.features]
    arrays = meta.read_columns(columns, episodes)
    durations = self._probe_videos(meta, episodes)
    name = meta.root.rstrip("/").split("/")[-1]
    tol = cfg.timestamp_tolerance_s
    min_steps = config_lib.min_episode_steps(cfg)
    kept = []
    for ep in episodes:
      a = arrays[ep.index]
      n = len(a["timestamp"])
      self.counts["episodes_read"] += 1
      self.counts["steps_read"] += n
      if spec.episode_id:
        value = a[spec.episode_id][0] if n else ""
        ep_id = value.decode() if isinstance(value, bytes) else str(value)
      else:
        ep_id = f"{name}/episode_{ep.index:06d}"
      if cfg.split != "all" and in_val_split(ep_id, cfg.val_fraction) != (cfg.split == "val"):
        self.counts["other_split"] += 1
        continue
      if cfg.success_only and not self._success(a):
        self.counts["not_success"] += 1
        continue
      if any(durations[ep.videos[c][0]] is None for c in self.cameras):
        self.counts["bad_video"] += 1
        continue
      video_frames = min(self._video_frames(ep.videos[c], durations, meta.fps)
                         for c in self.cameras)
      if n != ep.length or video_frames < n:
        self._skip("length_mismatch", ep, f"{n} parquet rows, episode index length {ep.length}, "
                   f"{video_frames} video frames")
        continue
      grid = a["frame_index"] / meta.fps
      if np.any(np.abs(a["timestamp"].astype(np.float64) - grid) > tol) or np.any(
          a["frame_index"] != np.arange(n)):
        self._skip("off_grid", ep, f"timestamps differ from frame_index / fps = "
                   f"{1 / meta.fps:.5f} s steps by more than {tol} s")
        continue
      states = layout.assemble_states(spec, a)
      stored = layout.stored_actions(spec, a)
      if not np.isfinite(states).all() or (stored is not None and not np.isfinite(stored).all()):
        self._skip("nonfinite_state", ep, "NaN or inf in states or actions")
        continue
      lo, hi = _active_range(states, spec, cfg.trim_idle, cfg.idle_threshold)
      if hi - lo + 1 < min_steps:
        self.counts["too_short"] += 1
        continue
      self.counts["episodes_kept"] += 1
      self.counts["steps_kept"] += hi - lo + 1
      self.counts["idle_steps_trimmed"] += n - (hi - lo + 1)
      videos = {c: (str(meta.path(ep.videos[c][0])), ep.videos[c][1]) for c in self.cameras}
      kept.append(_Episode(id=ep_id, index=ep.index, states=states, stored=stored,
                           timestamps=a["timestamp"].astype(np.float64), videos=videos,
                           lo=lo, hi=hi))
    return kept

  @staticmethod
  def _video_frames(ref, durations: dict, fps: float) -> int:
    """Frames the episode's part of a video holds (v3.0: from/to timestamps inside the file,
    which must not pass its end; v2.1: the whole file)."""
    file, start, end = ref
    duration = durations[file]
    if end is None:
      end = duration
    elif end > duration + 0.5 / fps:
      return int(round((duration - start) * fps))
    return int(round((end - start) * fps))

  def _skip(self, reason: str, ep: lerobot.Episode, why: str) -> None:
    self.counts[reason] += 1
    logging.warning("LeRobot %s: skipping episode %d (%s): %s", self.cfg.path, ep.index, reason,
                    why)

  def _success(self, a: dict) -> bool:
    rule = self.spec.success
    if not rule:
      return True
    values = a[rule["key"]]
    if rule.get("regex"):
      import re
      text = values[0].decode() if isinstance(values[0], bytes) else str(values[0])
      return re.fullmatch(rule["regex"], text) is not None
    return bool(np.any(np.asarray(values, np.float64) > 0))

  def _probe_videos(self, meta: lerobot.Meta, episodes) -> dict:
    """Duration (s) of every video file the cameras use; None where it does not open."""
    files = sorted({ep.videos[c][0] for ep in episodes for c in self.cameras})

    def duration(rel):
      try:
        return video_lib.probe(str(meta.path(rel)))["duration"]
      except video_lib.VideoError as e:
        logging.warning("LeRobot %s: %s", meta.root, e)
        return None

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
      return dict(zip(files, pool.map(duration, files)))

  def _units(self) -> np.ndarray:
    """`[U, 2]` (episode position, window start or -1 for a random window)."""
    cfg = self.cfg
    units = []
    for pos, ep in enumerate(self.episodes):
      if cfg.sampling == "sliding":
        last = _last_start(ep.hi, cfg)
        units.extend((pos, s) for s in range(ep.lo, last + 1, cfg.clip_stride * cfg.frame_step))
      else:
        units.extend([(pos, -1)] * cfg.clips_per_visit)
    return np.asarray(units, np.int64).reshape(-1, 2)

  def __len__(self) -> int:
    return len(self.units)

  def stats(self) -> dict:
    """Filter counts, clips per pass and per-dimension state / action statistics (actions
    between steps `frame_step` apart in the kept ranges), as `droid.dataset_stats` gives."""
    cfg = self.cfg
    states, actions = [], []
    for ep in self.episodes:
      states.append(ep.states[ep.lo:ep.hi + 1])
      first = np.arange(ep.lo, ep.hi + 1 - cfg.frame_step)
      for s in first:
        actions.append(layout.clip_actions(self.spec, ep.states, np.array([s, s + cfg.frame_step]),
                                           ep.stored)[0])
    sliding = sum(max((_last_start(ep.hi, cfg) - ep.lo) // (cfg.clip_stride * cfg.frame_step)
                      + 1, 0) for ep in self.episodes)
    out = {"counts": dict(self.counts),
           "clips_per_pass": {"random": self.counts["episodes_kept"] * cfg.clips_per_visit,
                              "sliding": sliding},
           "spec": self.spec.name, "dim_names": list(self.spec.dim_names)}
    for key, values in (("state", states), ("action", actions)):
      if values:
        x = np.concatenate(values) if key == "state" else np.stack(values)
        x = x.astype(np.float64)
        out[key] = {"count": len(x), "mean": x.mean(0).tolist(), "std": x.std(0).tolist(),
                    "min": x.min(0).tolist(), "max": x.max(0).tolist()}
    return out

  # -- clips --------------------------------------------------------------------------------
  def _decoder(self) -> video_lib.Decoder:
    decoder = getattr(self._local, "decoder", None)
    if decoder is None:
      decoder = video_lib.Decoder(self.cfg.timestamp_tolerance_s, self.gop)
      self._local.decoder = decoder
    return decoder

  def clip(self, unit: int, rng: np.random.Generator, out: dict | None = None) -> dict:
    """The clip of unit `unit` with the draws of `rng` (window, camera, crop); with `out`
    (arrays of the clip's shapes) the clip is written there."""
    cfg, spec = self.cfg, self.spec
    pos, start = (int(x) for x in self.units[unit])
    ep = self.episodes[pos]
    if start < 0:
      start = int(rng.integers(ep.lo, _last_start(ep.hi, cfg) + 1))
    steps = start + np.arange(cfg.frames_per_clip) * cfg.frame_step
    camera = self.cameras[int(rng.integers(len(self.cameras)))]
    path, offset = ep.videos[camera]
    random_crop = (tuple(cfg.rrc_scale), tuple(cfg.rrc_ratio)) if cfg.random_resized_crop \
        else None
    window = np_transforms.clip_window(*self.frame_hw[camera], cfg.crop, random_crop, rng)
    size = cfg.image_size if cfg.resize_on_host else None
    # Without a resize the frames are final as decoded: they go straight into `out`.
    direct = out["video"] if out is not None and size is None and window is not None else None
    frames = self._decoder().frames(path, offset + ep.timestamps[steps], self.fps, window,
                                    out=direct)
    clip = {"video": frames if direct is not None else np_transforms.finish_clip(
                frames, size, cfg.crop, random_crop),
            "states": ep.states[steps],
            "actions": layout.clip_actions(spec, ep.states, steps, ep.stored),
            "step_index": steps.astype(np.int32), "episode_id": ep.id.encode()}
    if out is not None:
      for key, value in clip.items():
        if key != "episode_id" and value is not out[key]:
          out[key][...] = value
    return clip


def _last_start(hi: int, cfg) -> int:
  if cfg.window_rule == "official":
    return hi - cfg.frames_per_clip * cfg.frame_step
  return hi - (cfg.frames_per_clip - 1) * cfg.frame_step


def _active_range(states: np.ndarray, spec: specs_lib.Spec, trim: bool,
                  threshold: float) -> tuple[int, int]:
  n = len(states)
  if not trim:
    return 0, n - 1
  # Idle is judged on the states (as the RLDS reader does), also when actions are stored.
  if n < 2:
    change = np.zeros(0)
  elif spec.is_pose:
    change = np.abs(poses.poses_to_diffs(states.astype(np.float64))).max(-1)
  else:
    change = np.abs(np.diff(states, axis=0)).max(-1)
  moving = np.nonzero(change > threshold)[0]
  if not len(moving):
    return 0, -1
  return int(moving[0]), int(moving[-1]) + 1


_FOREVER = 2**62  # elements of a stream that repeats forever


class Elements:
  """Element k of this process's stream: the unit at global position `process_index + k *
  process_count` of the epoch-wise shuffled, repeated unit sequence, drawn with a generator
  seeded by (seed, that position). A pure function of (cfg, k): any worker may compute any
  element, and a stream started at k continues an interrupted one exactly."""

  def __init__(self, source: ClipSource, process_index: int = 0, process_count: int = 1):
    self.source = source
    self.index, self.count = process_index, process_count
    cfg = source.cfg
    self.seed, self.shuffle = int(cfg.seed), bool(cfg.shuffle)
    units = len(source)
    total = _FOREVER if cfg.num_epochs is None else units * int(cfg.num_epochs)
    self.length = max(0, (total - process_index + process_count - 1) // process_count)
    self._epoch, self._order = None, None

  def __len__(self) -> int:
    return self.length

  def unit(self, k: int) -> tuple[int, int]:
    """(unit index, global position) of element k."""
    position = self.index + k * self.count
    epoch, offset = divmod(position, len(self.source))
    if not self.shuffle:
      return offset, position
    if epoch != self._epoch:  # a fresh permutation every epoch: a global shuffle
      self._order = np.random.default_rng([self.seed, epoch]).permutation(len(self.source))
      self._epoch = epoch
    return int(self._order[offset]), position

  def clip(self, k: int, out: dict | None = None) -> dict:
    unit, position = self.unit(int(k))
    rng = np.random.default_rng([self.seed, 1, position])
    return self.source.clip(unit, rng, out)

  def batch(self, b: int, size: int, start: int, shared: bool) -> dict:
    """Elements `start + b*size ...` stacked; frames decode straight into the batch arrays (in
    shared memory when `shared`, so grain hands them to the main process without a copy)."""
    first = self.clip(start + b * size)
    alloc = grain.multiprocessing.SharedMemoryArray if shared else np.empty
    out = {k: alloc((size, *np.shape(v)), dtype=np.asarray(v).dtype)
           for k, v in first.items() if k != "episode_id"}
    ids = [first["episode_id"]]
    for key, value in first.items():
      if key != "episode_id":
        out[key][0] = value
    for j in range(1, size):
      clip = self.clip(start + b * size + j, {k: v[j] for k, v in out.items()})
      ids.append(clip["episode_id"])
    out["episode_id"] = np.asarray(ids, dtype=np.bytes_)
    return out


def elements(cfg: ml_collections.ConfigDict, spec: specs_lib.Spec, process_index: int = 0,
             process_count: int = 1, source: ClipSource | None = None) -> Elements:
  """This process's element function (see `Elements`); ValueError for an empty split."""
  source = source or ClipSource(cfg, spec)
  if not len(source):
    raise ValueError(f"empty split: no clip from {cfg.path} (split {cfg.split!r}, filter counts "
                     f"{source.counts}); set data.split='all' or data.val_fraction > 0 for a "
                     "held-out split, or lower frames_per_clip / frame_step for short episodes")
  return Elements(source, process_index, process_count)


def clip_dataset(elems: Elements, start: int = 0) -> grain.MapDataset:
  """Elements `start, start + 1, ...` as a random-access `grain.MapDataset` of clips."""
  return grain.MapDataset.range(start, len(elems)).map(elems.clip)


def batch_dataset(elems: Elements, batch_size: int, start: int = 0,
                  shared: bool = False) -> grain.MapDataset:
  """Batches of consecutive elements from `start` (incomplete last batch dropped)."""
  num = (len(elems) - start) // batch_size
  return grain.MapDataset.range(num).map(
      functools.partial(elems.batch, size=batch_size, start=start, shared=shared))
def iter_dataset(ds: grain.MapDataset, cfg: ml_collections.ConfigDict) -> grain.IterDataset:
  """`ds` as an iterable dataset decoded by `cfg.num_workers` processes (0: this process)."""
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
  if cfg.num_workers > 0:
    if not flags.FLAGS.is_parsed():
      # grain's worker processes read its absl flags; outside an absl app nobody parsed them.
      flags.FLAGS.mark_as_parsed()
    it = it.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=cfg.num_workers, per_worker_buffer_size=cfg.worker_buffer))
  return it
