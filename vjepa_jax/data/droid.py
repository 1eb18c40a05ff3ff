"""DROID RLDS/TFDS -> V-JEPA 2-AC training clips, built natively in tf.data.

Contract:

  from vjepa_jax.data import droid
  cfg = droid.default_config()
  cfg.path = "gs://gresearch/robotics/droid/1.0.1"     # a TFDS version directory
  ds = droid.make_clip_dataset(cfg)                    # unbatched tf.data.Dataset of dicts:
    video       uint8   [T, S, S, 3]   frames of one camera, cropped and resized
    states      float32 [T, 7]         cartesian_position (6) ++ gripper_position (1)
    actions     float32 [T-1, 7]       poses.poses_to_diffs(states)
    episode_id  string  []             the episode's episode_metadata/file_path
    step_index  int32   [T]            raw step index of each frame within its episode
  for batch in droid.batch_iterator(ds, global_batch // jax.process_count()): ...

Pipeline (all inside the tf.data graph): shard files of this process's part of the split
(`tfds.even_splits` at episode granularity) -> interleaved TFRecord reads with a record-count check
per shard -> parse only the needed keys (states, file path, JPEG strings of the chosen cameras)
-> episode filters (held-out split by a stable hash of the file path, success, non-finite states,
broken JPEGs, idle trimming, too short for one clip), counted -> shuffle of encoded episodes ->
repeat -> windows (`"random"`: one per episode visit by default; `"sliding"`: every window) with
states, actions and step indices -> shuffle of encoded windows -> [skip] -> JPEG decode of the
sampled frames of the drawn camera -> crop/resize. In deterministic mode the stream is a pure
function of (cfg, process_index, process_count): every random draw is stateless and keyed by the
position of the episode visit in the stream.
"""
from collections.abc import Iterator, Sequence

from absl import logging
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from vjepa_jax.data import poses
from vjepa_jax.data import transforms

OBS = "steps/observation/"
CARTESIAN_KEY = OBS + "cartesian_position"
GRIPPER_KEY = OBS + "gripper_position"
FILE_PATH_KEY = "episode_metadata/file_path"
SAMPLINGS = ("random", "sliding")
WINDOW_RULES = ("span", "official")
SPLITS = ("train", "val", "all")
# Outcome of an episode, in the order the filters are applied; each read episode gets one.
FILTERS = ("other_split", "not_success", "malformed", "nonfinite_state", "bad_jpeg", "too_short")
COUNTERS = ("episodes_read", *FILTERS, "episodes_kept", "steps_read", "steps_kept",
            "idle_steps_trimmed")
_HASH_BUCKETS = 1_000_000


def default_config(preset: str = "ac") -> ml_collections.ConfigDict:
  """Pipeline config. `preset="ac"`: the official V-JEPA 2-AC recipe; `"sliding16"`: 16-frame
  clips at every 8th sampled frame with the hub crop."""
  c = ml_collections.ConfigDict()
  c.path = ""  # TFDS version directory (local or gs://), e.g. .../droid/1.0.1.
  c.source_split = "train"  # TFDS split to read (DROID only has "train").
  c.camera = "exterior_image_1_left"  # Name under steps/observation; "a,b" draws one per clip.
  c.frames_per_clip = 8
  c.frame_step = 4  # Raw 15 Hz steps between sampled frames (3.75 Hz, the official rate).
  c.sampling = "random"  # "random": clips_per_visit windows per episode visit; "sliding": all.
  c.clip_stride = 2  # "sliding": sampled frames between consecutive window starts.
  # "random": windows drawn (independently) per episode visit. 1 is the official sampler; more
  # amortises reading an episode (all its JPEG bytes) over several clips.
  c.clips_per_visit = 1
  # "span": a window may start wherever its (T-1)*frame_step+1 steps fit (T >= 29 by default);
  # "official": the official sampler, start in [0, L - T*frame_step - 1] (L >= 33).
  c.window_rule = "span"
  c.image_size = 256
  # False: "ac" frames leave at the crop's native size ([T, H, round(1.35 H), 3], 180x243 on
  # DROID RLDS) for a bilinear resize on the accelerator; the host resize is ~half the CPU cost
  # of a clip.
  c.resize_on_host = True
  c.crop = "ac"  # "ac" (training/eval/planning) or "hub" (short side 292, centre crop 256).
  c.random_resized_crop = False  # Augmentation: a random window per clip instead of `crop`.
  c.rrc_scale = (0.3, 1.0)
  c.rrc_ratio = (0.75, 1.35)
  c.split = "train"  # "train" | "val" | "all" (held-out by a stable hash of the file path).
  c.val_fraction = 0.05
  c.success_only = False  # Keep only episodes whose file path holds "/success/".
  c.trim_idle = False  # Drop leading/trailing steps whose pose change is below idle_threshold.
  c.idle_threshold = 1e-3  # Max |action| per raw step (m, rad, gripper units) counted as idle.
  c.shuffle = True
  c.seed = 0
  c.deterministic = False  # True: reproducible order (needed to resume with `skip`).
  c.shuffle_buffer = 4096  # Encoded windows (~8 JPEGs each).
  c.episode_shuffle_buffer = 16  # Encoded episodes (all chosen-camera JPEGs of each).
  c.num_epochs = ml_collections.config_dict.placeholder(int)  # None: repeat forever.
  c.num_parallel_reads = 2  # Shard files read at once; raise (8-16) for gs:// on big hosts.
  c.num_parallel_calls = -1  # Parallel parse/decode calls; -1 = tf.data.AUTOTUNE.
  c.read_buffer_bytes = 256 << 10  # TFRecord read buffer; larger helps on gs://.
  c.process_index = ml_collections.config_dict.placeholder(int)  # None: jax.process_index().
  c.process_count = ml_collections.config_dict.placeholder(int)  # None: jax.process_count().
  if preset == "sliding16":
    c.frames_per_clip = 16
    c.sampling = "sliding"
    c.clip_stride = 8
    c.crop = "hub"
  elif preset != "ac":
    raise ValueError(f"unknown preset {preset!r}; expected 'ac' or 'sliding16'")
  return c


class FilterCounters:
  """Episode and step counts by filter outcome (names in `COUNTERS`), updated in the graph.

  The filters run on every pass over the data, so with `num_epochs > 1` counts are per visit.
  """

  def __init__(self):
    self._counts = tf.Variable(tf.zeros([len(COUNTERS)], tf.int64), trainable=False)

  def add(self, increments: tf.Tensor) -> tf.Operation:
    return self._counts.assign_add(increments)

  def as_dict(self) -> dict[str, int]:
    return dict(zip(COUNTERS, (int(v) for v in self._counts.numpy())))


def camera_names(cfg: ml_collections.ConfigDict) -> list[str]:
  """The configured camera names (a string, comma-separated string, or sequence)."""
  cams = cfg.camera.split(",") if isinstance(cfg.camera, str) else list(cfg.camera)
  cams = [c.strip() for c in cams if c.strip()]
  if not cams:
    raise ValueError("cfg.camera names no camera")
  return cams


def _validate(cfg: ml_collections.ConfigDict) -> None:
  if not cfg.path:
    raise ValueError("cfg.path is empty; set it to a TFDS version directory (.../droid/1.0.1)")
  if cfg.sampling not in SAMPLINGS:
    raise ValueError(f"cfg.sampling must be one of {SAMPLINGS}, got {cfg.sampling!r}")
  if cfg.window_rule not in WINDOW_RULES:
    raise ValueError(f"cfg.window_rule must be one of {WINDOW_RULES}, got {cfg.window_rule!r}")
  if cfg.split not in SPLITS:
    raise ValueError(f"cfg.split must be one of {SPLITS}, got {cfg.split!r}")
  if cfg.crop not in transforms.CROPS:
    raise ValueError(f"cfg.crop must be one of {transforms.CROPS}, got {cfg.crop!r}")
  if not cfg.resize_on_host and (cfg.crop != "ac" or cfg.random_resized_crop):
    raise ValueError("resize_on_host=False needs crop='ac' and random_resized_crop=False")
  if (cfg.frames_per_clip < 2 or cfg.frame_step < 1 or cfg.clip_stride < 1
      or cfg.clips_per_visit < 1):
    raise ValueError("need frames_per_clip >= 2, frame_step, clip_stride, clips_per_visit >= 1")
  if not 0.0 <= cfg.val_fraction <= 1.0:
    raise ValueError(f"cfg.val_fraction must be in [0, 1], got {cfg.val_fraction}")
  if cfg.split == "val" and cfg.val_fraction == 0.0:
    raise ValueError("empty split: split='val' with val_fraction=0 selects no episode")
  if cfg.split == "train" and cfg.val_fraction == 1.0:
    raise ValueError("empty split: split='train' with val_fraction=1 selects no episode")


def min_episode_steps(cfg: ml_collections.ConfigDict) -> int:
  """Fewest (trimmed) steps an episode needs to give one clip under `cfg.window_rule`."""
  if cfg.window_rule == "official":
    return cfg.frames_per_clip * cfg.frame_step + 1
  return (cfg.frames_per_clip - 1) * cfg.frame_step + 1


def _process(cfg: ml_collections.ConfigDict) -> tuple[int, int]:
  index, count = cfg.process_index, cfg.process_count
  if index is None or count is None:
    import jax  # Only needed when the config leaves the process layout to JAX.
    index = jax.process_index() if index is None else index
    count = jax.process_count() if count is None else count
  if not 0 <= index < count:
    raise ValueError(f"process_index {index} not in [0, process_count={count})")
  return index, count


def _flat_info(info, prefix: str = "") -> dict:
  out = {}
  for key, value in info.items():
    if isinstance(value, dict):
      out.update(_flat_info(value, f"{prefix}{key}/"))
    else:
      out[prefix + key] = value
  return out


def open_builder(path: str) -> tfds.core.DatasetBuilder:
  """Opens a TFDS version directory; ValueError if it is not one."""
  try:
    return tfds.builder_from_directory(path)
  except Exception as e:  # TFDS raises several unrelated types for a bad directory.
    raise ValueError(
        f"{path} is not a TFDS dataset directory (a version folder such as .../droid/1.0.1 "
        f"holding dataset_info.json, features.json and TFRecord shards): {e}") from e


def available_cameras(builder: tfds.core.DatasetBuilder) -> list[str]:
  """Names of the image features under steps/observation."""
  try:
    obs = builder.info.features["steps"]["observation"]
  except (KeyError, TypeError):
    return []
  return sorted(k for k, f in obs.items() if isinstance(f, tfds.features.Image))


def parse_spec(builder: tfds.core.DatasetBuilder, cameras: Sequence[str]) -> dict:
  """tf.io parse spec for the keys a clip needs; ValueError naming missing or bad keys."""
  available = available_cameras(builder)
  unknown = [c for c in cameras if c not in available]
  if unknown:
    raise ValueError(f"unknown camera(s) {unknown}; available cameras: {available}")
  info = _flat_info(builder.info.features.get_serialized_info())
  needed = {CARTESIAN_KEY: 6, GRIPPER_KEY: 1, FILE_PATH_KEY: None}
  needed.update({OBS + c: None for c in cameras})
  missing = sorted(k for k in needed if k not in info)
  if missing:
    raise ValueError(f"dataset at {builder.data_dir} lacks needed features: {missing}")
  for key in (CARTESIAN_KEY, GRIPPER_KEY):
    if tuple(info[key].shape[1:]) != (needed[key],):
      raise ValueError(f"feature {key} has per-step shape {tuple(info[key].shape[1:])}, "
                       f"expected ({needed[key]},)")
  spec = {FILE_PATH_KEY: tf.io.FixedLenFeature([], tf.string)}
  for key in (CARTESIAN_KEY, GRIPPER_KEY):
    # TFDS stores float64 tensors as float_list (float32).
    spec[key] = tf.io.FixedLenSequenceFeature([needed[key]], tf.float32, allow_missing=True)
  for c in cameras:
    spec[OBS + c] = tf.io.FixedLenSequenceFeature([], tf.string, allow_missing=True)
  return spec


def host_file_instructions(builder: tfds.core.DatasetBuilder, source_split: str,
                           process_index: int, process_count: int) -> list[tuple[str, int, int]]:
  """`(filename, skip, take)` of this process's disjoint, contiguous part of the split."""
  if source_split not in builder.info.splits:
    raise ValueError(f"split {source_split!r} not in {list(builder.info.splits.keys())}")
  sub = tfds.even_splits(source_split, n=process_count)[process_index]
  out = []
  for fi in builder.info.splits[sub].file_instructions:
    take = fi.take if fi.take >= 0 else fi.examples_in_shard - fi.skip
    if take > 0:
      out.append((str(fi.filename), int(fi.skip), int(take)))
  return out


def _read_shard(filename: tf.Tensor, skip: tf.Tensor, take: tf.Tensor,
                buffer_bytes: int) -> tf.data.Dataset:
  """Records `[skip, skip + take)` of one shard; fails naming the file if it yields fewer.

  A truncated or corrupt shard makes the TFRecord reader stop with a DataLossError that does not
  name the file; the reader error is dropped (and logged) so the count check can name it.
  """
  records = tf.data.TFRecordDataset(filename, buffer_size=buffer_bytes)
  records = records.ignore_errors(log_warning=True).skip(skip).take(take)
  marked = records.map(lambda r: (r, False)).concatenate(
      tf.data.Dataset.from_tensors((tf.constant(b""), True)))

  def check(count, item):
    record, is_end = item
    ok = tf.logical_or(tf.logical_not(is_end), tf.equal(count, take))
    assert_op = tf.debugging.Assert(
        ok, ["Corrupt or truncated TFRecord shard:", filename, "gave", count,
             "readable records, expected", take, "after skipping", skip])
    with tf.control_dependencies([assert_op]):
      return count + 1, (tf.identity(record), is_end)

  checked = marked.scan(tf.constant(0, tf.int64), check)
  return checked.filter(lambda r, is_end: tf.logical_not(is_end)).map(lambda r, is_end: r)


def _jpeg_ok(jpegs: tf.Tensor) -> tf.Tensor:
  """True where a string starts with the JPEG SOI and ends with the EOI marker (not truncated)."""
  length = tf.strings.length(jpegs)
  head = tf.strings.substr(jpegs, tf.zeros_like(length), tf.fill(tf.shape(length), 2))
  tail = tf.strings.substr(jpegs, tf.maximum(length - 2, 0), tf.fill(tf.shape(length), 2))
  return (length >= 4) & tf.equal(head, b"\xff\xd8") & tf.equal(tail, b"\xff\xd9")


def _active_range(states: tf.Tensor, trim: bool, threshold: float) -> tuple[tf.Tensor, tf.Tensor]:
  """First and last step `[lo, hi]` of the episode after trimming idle ends (hi < lo if idle)."""
  n = tf.shape(states)[0]
  if not trim:
    return tf.constant(0), n - 1
  step_change = tf.reduce_max(tf.abs(poses.poses_to_diffs(states)), axis=-1)
  moving = tf.cast(tf.where(step_change > threshold)[:, 0], tf.int32)
  # The last idle frame before the first move is kept: it shows the start of the motion.
  lo = tf.cond(tf.size(moving) > 0, lambda: moving[0], lambda: tf.constant(0))
  hi = tf.cond(tf.size(moving) > 0, lambda: moving[-1] + 1, lambda: tf.constant(-1))
  return lo, hi


def _parse_episode(record: tf.Tensor, spec: dict, cameras: Sequence[str],
                   cfg: ml_collections.ConfigDict) -> dict:
  """Serialized episode -> needed tensors plus its filter outcome (`reason`, 0 = kept).

  The file path is parsed first: episodes of the other split (or failures with success_only) are
  not parsed further.
  """
  file_path = tf.io.parse_single_example(record, {FILE_PATH_KEY: spec[FILE_PATH_KEY]})[
      FILE_PATH_KEY]
  if cfg.split == "all":
    in_split = tf.constant(True)
  else:
    bucket = tf.strings.to_hash_bucket_fast(file_path, _HASH_BUCKETS)
    is_val = bucket < int(round(cfg.val_fraction * _HASH_BUCKETS))
    in_split = is_val if cfg.split == "val" else tf.logical_not(is_val)
  success = tf.strings.regex_full_match(file_path, ".*/success/.*")
  wanted = tf.logical_and(in_split, success) if cfg.success_only else in_split

  def parse():
    return tf.io.parse_single_example(record, spec)

  def skip():
    return {k: tf.zeros([0, *v.shape], v.dtype) if isinstance(v, tf.io.FixedLenSequenceFeature)
            else tf.zeros(v.shape, v.dtype) for k, v in spec.items()}

  ex = tf.cond(wanted, parse, skip)
  lengths = tf.stack([tf.shape(ex[CARTESIAN_KEY])[0], tf.shape(ex[GRIPPER_KEY])[0]]
                     + [tf.shape(ex[OBS + c])[0] for c in cameras])
  n = tf.reduce_min(lengths)
  malformed = tf.reduce_any(tf.not_equal(lengths, n))
  states = tf.concat([ex[CARTESIAN_KEY][:n], ex[GRIPPER_KEY][:n]], axis=-1)  # [n, 7] float32
  jpegs = (tf.stack([ex[OBS + c][:n] for c in cameras]) if len(cameras) > 1
           else ex[OBS + cameras[0]][None, :n])  # [C, n]
  finite = tf.reduce_all(tf.math.is_finite(states))
  jpeg_ok = tf.reduce_all(_jpeg_ok(jpegs))
  safe_states = tf.where(tf.math.is_finite(states), states, tf.zeros_like(states))
  lo, hi = _active_range(tf.cast(safe_states, tf.float64), cfg.trim_idle, cfg.idle_threshold)
  long_enough = hi - lo + 1 >= min_episode_steps(cfg)

  failed = tf.stack([tf.logical_not(in_split),
                     tf.logical_not(success) if cfg.success_only else tf.constant(False),
                     malformed, tf.logical_not(finite), tf.logical_not(jpeg_ok),
                     tf.logical_not(long_enough)])
  reason = tf.cond(tf.reduce_any(failed),
                   lambda: tf.argmax(tf.cast(failed, tf.int32), output_type=tf.int32) + 1,
                   lambda: tf.constant(0))
  return {"file_path": file_path, "states": states, "jpegs": jpegs, "lo": lo, "hi": hi,
          "reason": reason, "num_steps": n}


def _keep_and_count(ep: dict, counters: FilterCounters | None) -> tf.Tensor:
  keep = tf.equal(ep["reason"], 0)
  if counters is None:
    return keep
  kept_steps = tf.cast(ep["hi"] - ep["lo"] + 1, tf.int64)
  n = tf.cast(ep["num_steps"], tf.int64)
  increments = tf.concat([
      tf.ones([1], tf.int64),
      tf.one_hot(ep["reason"], len(FILTERS) + 1, dtype=tf.int64)[1:],
      tf.cast(keep, tf.int64)[None],
      n[None],
      tf.where(keep, kept_steps, tf.zeros_like(n))[None],
      tf.where(keep, n - kept_steps, tf.zeros_like(n))[None],
  ], axis=0)
  with tf.control_dependencies([counters.add(increments)]):
    return tf.identity(keep)


def _episodes(cfg: ml_collections.ConfigDict, counters: FilterCounters | None,
              shuffle: bool) -> tf.data.Dataset:
  """Kept episodes of this process, one pass (filter outcomes counted in `counters`)."""
  _validate(cfg)
  cameras = camera_names(cfg)
  builder = open_builder(cfg.path)
  spec = parse_spec(builder, cameras)
  index, count = _process(cfg)
  files = host_file_instructions(builder, cfg.source_split, index, count)
  assigned = sum(t for _, _, t in files)
  if not assigned:
    total = builder.info.splits[cfg.source_split].num_examples
    raise ValueError(f"empty split: process {index} of {count} got no episodes of "
                     f"{cfg.source_split!r} ({total} episodes) in {cfg.path}")
  logging.info("DROID %s: process %d/%d reads %d episodes from %d shard slices", cfg.path,
               index, count, assigned, len(files))
  names, skips, takes = zip(*files)
  ds = tf.data.Dataset.from_tensor_slices(
      (list(names), np.array(skips, np.int64), np.array(takes, np.int64)))
  if shuffle:
    ds = ds.shuffle(len(files), seed=cfg.seed + 1000 * index, reshuffle_each_iteration=True)
  parallel = tf.data.AUTOTUNE if cfg.num_parallel_calls < 0 else cfg.num_parallel_calls
  ds = ds.interleave(lambda f, s, t: _read_shard(f, s, t, cfg.read_buffer_bytes),
                     cycle_length=min(cfg.num_parallel_reads, len(files)),
                     num_parallel_calls=min(cfg.num_parallel_reads, len(files)),
                     deterministic=cfg.deterministic)
  ds = ds.map(lambda r: _parse_episode(r, spec, cameras, cfg), num_parallel_calls=parallel,
              deterministic=cfg.deterministic)
  return ds.filter(lambda ep: _keep_and_count(ep, counters))


def _last_start(hi: tf.Tensor, cfg: ml_collections.ConfigDict) -> tf.Tensor:
  """Latest allowed window start for an active range ending at step `hi`."""
  if cfg.window_rule == "official":
    return hi - cfg.frames_per_clip * cfg.frame_step
  return hi - (cfg.frames_per_clip - 1) * cfg.frame_step


def _window_starts(lo: tf.Tensor, hi: tf.Tensor, seed: tf.Tensor,
                   cfg: ml_collections.ConfigDict) -> tf.Tensor:
  """Start steps `[W]` of the windows of one episode visit."""
  last = _last_start(hi, cfg)
  if cfg.sampling == "sliding":
    return tf.range(lo, last + 1, cfg.clip_stride * cfg.frame_step)
  return tf.random.stateless_uniform([cfg.clips_per_visit], seed=seed, minval=lo, maxval=last + 1,
                                    dtype=tf.int32)


def _windows(visit: tf.Tensor, ep: dict, base_seed: tf.Tensor,
             cfg: ml_collections.ConfigDict, num_cameras: int) -> dict:
  """All windows of one episode visit as `[W, ...]` tensors (JPEGs still encoded)."""
  seed = tf.random.experimental.stateless_fold_in(base_seed, visit)
  start_seed, cam_seed, crop_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
  starts = _window_starts(ep["lo"], ep["hi"], start_seed, cfg)
  num = tf.shape(starts)[0]
  steps = starts[:, None] + tf.range(cfg.frames_per_clip, dtype=tf.int32) * cfg.frame_step
  states = tf.gather(ep["states"], steps)  # [W, T, 7] float32 (as stored)
  actions = poses.poses_to_diffs(tf.cast(states, tf.float64))
  cams = tf.random.stateless_uniform([num], seed=cam_seed, minval=0, maxval=num_cameras,
                                    dtype=tf.int32)
  cam_idx = tf.broadcast_to(cams[:, None], tf.shape(steps))
  jpegs = tf.gather_nd(ep["jpegs"], tf.stack([cam_idx, steps], axis=-1))  # [W, T]
  crop_seeds = tf.random.stateless_uniform([num, 2], seed=crop_seed, minval=None, maxval=None,
                                          dtype=tf.int64)
  return {"jpegs": jpegs, "states": states, "actions": tf.cast(actions, tf.float32),
          "episode_id": tf.fill([num], ep["file_path"]), "step_index": steps,
          "crop_seed": crop_seeds}


def _options(cfg: ml_collections.ConfigDict) -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = bool(cfg.deterministic)
  return options


def encoded_clip_dataset(cfg: ml_collections.ConfigDict,
                         counters: FilterCounters | None = None) -> tf.data.Dataset:
  """Clips before decoding: like `make_clip_dataset` but `jpegs` `[T]` instead of `video`."""
  episodes = _episodes(cfg, counters, shuffle=cfg.shuffle)
  index, _ = _process(cfg)
  if cfg.shuffle and cfg.episode_shuffle_buffer > 1:
    episodes = episodes.shuffle(cfg.episode_shuffle_buffer, seed=cfg.seed + 2000 + index,
                                reshuffle_each_iteration=True)
  # repeat() stops instead of spinning when a pass yields nothing (every episode filtered).
  episodes = episodes.repeat(cfg.num_epochs)
  base_seed = tf.constant([cfg.seed, index], tf.int64)
  num_cameras = len(camera_names(cfg))
  windows = episodes.enumerate().map(
      lambda visit, ep: _windows(visit, ep, base_seed, cfg, num_cameras),
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=cfg.deterministic)
  clips = windows.flat_map(tf.data.Dataset.from_tensor_slices)
  if cfg.shuffle and cfg.shuffle_buffer > 1:
    clips = clips.shuffle(cfg.shuffle_buffer, seed=cfg.seed + 3000 + index,
                          reshuffle_each_iteration=True)
  return clips.with_options(_options(cfg))


def _decode(clip: dict, cfg: ml_collections.ConfigDict) -> dict:
  random_crop = (tuple(cfg.rrc_scale), tuple(cfg.rrc_ratio)) if cfg.random_resized_crop else None
  size = cfg.image_size if cfg.resize_on_host else None
  video = transforms.preprocess_clip(clip["jpegs"], size, cfg.crop, random_crop=random_crop,
                                     seed=clip["crop_seed"])
  t = cfg.frames_per_clip
  return {"video": tf.ensure_shape(video, [t, size, size, 3]),
          "states": tf.ensure_shape(clip["states"], [t, 7]),
          "actions": tf.ensure_shape(clip["actions"], [t - 1, 7]),
          "episode_id": clip["episode_id"],
          "step_index": tf.ensure_shape(clip["step_index"], [t])}


def make_clip_dataset(cfg: ml_collections.ConfigDict, skip: int = 0,
                      counters: FilterCounters | None = None) -> tf.data.Dataset:
  """Unbatched dataset of clips for this JAX process (see the module docstring).

  Args:
    cfg: a `default_config()` ConfigDict.
    skip: drop the first `skip` clips of the stream before any JPEG is decoded. With
      `cfg.deterministic` the stream depends only on (cfg, process_index, process_count), so a
      run that consumed n clips per process resumes exactly with `skip=n`.
    counters: optional `FilterCounters` the pipeline updates as it reads episodes.
  """
  clips = encoded_clip_dataset(cfg, counters)
  if skip:
    clips = clips.skip(skip)
  parallel = tf.data.AUTOTUNE if cfg.num_parallel_calls < 0 else cfg.num_parallel_calls
  clips = clips.map(lambda c: _decode(c, cfg), num_parallel_calls=parallel,
                    deterministic=cfg.deterministic)
  return clips.with_options(_options(cfg))


def batch_iterator(ds: tf.data.Dataset, batch_size: int,
                   prefetch: int = tf.data.AUTOTUNE) -> Iterator[dict[str, np.ndarray]]:
  """Per-process batches of NumPy arrays: `video` uint8 `[B, T, S, S, 3]`, `states`, `actions`,
  `step_index`, and `episode_id` as a bytes array `[B]`. Incomplete last batches are dropped.

  Raises:
    ValueError: (on the first `next`) if the dataset does not fill a single batch.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  batches = ds.batch(batch_size, drop_remainder=True).prefetch(prefetch)
  produced = False
  for batch in batches.as_numpy_iterator():
    batch["episode_id"] = np.asarray(batch["episode_id"]).astype(np.bytes_)
    produced = True
    yield batch
  if not produced:
    raise ValueError(f"empty split: the dataset gave fewer than batch_size={batch_size} clips "
                     "(every episode filtered, or too few episodes for this process)")


def _summaries(ep: dict, cfg: ml_collections.ConfigDict) -> dict:
  """Per-episode sums for `dataset_stats`: window counts and state/action moments."""
  lo, hi = ep["lo"], ep["hi"]
  states = tf.cast(ep["states"][lo:hi + 1], tf.float64)
  # Every pair of steps frame_step apart in the active range: the actions clips can contain.
  actions = poses.poses_to_diffs(
      tf.stack([states[:-cfg.frame_step], states[cfg.frame_step:]], axis=1))[:, 0]
  stride = cfg.clip_stride * cfg.frame_step
  sliding = tf.maximum((_last_start(hi, cfg) - lo) // stride + 1, 0)

  def moments(x):
    return {"n": tf.shape(x)[0], "sum": tf.reduce_sum(x, 0), "sq": tf.reduce_sum(x * x, 0),
            "min": tf.reduce_min(x, 0), "max": tf.reduce_max(x, 0)}

  return {"steps": hi - lo + 1, "sliding": sliding, "state": moments(states),
          "action": moments(actions)}


def dataset_stats(cfg: ml_collections.ConfigDict) -> dict:
  """One pass over this process's episodes (no JPEG decode): filter counts, clip counts and
  per-dimension state/action statistics. Logged and returned as a dict."""
  counters = FilterCounters()
  episodes = _episodes(cfg, counters, shuffle=False)
  parallel = tf.data.AUTOTUNE if cfg.num_parallel_calls < 0 else cfg.num_parallel_calls
  summaries = episodes.map(lambda ep: _summaries(ep, cfg), num_parallel_calls=parallel)
  acc = {k: {"n": 0, "sum": 0.0, "sq": 0.0, "min": np.inf, "max": -np.inf}
         for k in ("state", "action")}
  sliding = 0
  for s in summaries.with_options(_options(cfg)).as_numpy_iterator():
    sliding += int(s["sliding"])
    for k in acc:
      m = s[k]
      if m["n"]:
        acc[k]["n"] += int(m["n"])
        acc[k]["sum"] = acc[k]["sum"] + m["sum"]
        acc[k]["sq"] = acc[k]["sq"] + m["sq"]
        acc[k]["min"] = np.minimum(acc[k]["min"], m["min"])
        acc[k]["max"] = np.maximum(acc[k]["max"], m["max"])
  counts = counters.as_dict()
  stats = {"counts": counts,
           "clips_per_pass": {"random": counts["episodes_kept"] * cfg.clips_per_visit,
                              "sliding": sliding}}
  for k, a in acc.items():
    if a["n"]:
      mean = a["sum"] / a["n"]
      std = np.sqrt(np.maximum(a["sq"] / a["n"] - mean * mean, 0.0))
      stats[k] = {"count": a["n"], "mean": mean.tolist(), "std": std.tolist(),
                  "min": np.asarray(a["min"]).tolist(), "max": np.asarray(a["max"]).tolist()}
  logging.info("DROID %s (%s split) filter counts: %s; clips per pass: %s", cfg.path, cfg.split,
               counts, stats["clips_per_pass"])
  return stats
