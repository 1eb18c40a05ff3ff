"""RLDS/TFDS robot datasets (DROID and any dataset a spec describes) -> V-JEPA 2-AC training
clips, built natively in tf.data.

Contract:

  from vjepa_jax.data import droid
  cfg = droid.default_config()
  cfg.path = "gs://gresearch/robotics/droid/1.0.1"     # a TFDS version directory
  ds = droid.make_clip_dataset(cfg)                    # unbatched tf.data.Dataset of dicts:
    video       uint8   [T, S, S, 3]   frames of one camera, cropped and resized
    states      float32 [T, A]         the spec's states (DROID: cartesian_position (6) ++
                                       gripper_position (1))
    actions     float32 [T-1, A]       pose deltas (poses.poses_to_diffs) or s_{t+1} - s_t
    episode_id  string  []             the spec's episode id (DROID: episode_metadata/file_path)
    step_index  int32   [T]            raw step index of each frame within its episode
  for batch in droid.batch_iterator(ds, global_batch // jax.process_count()): ...

`cfg.spec` names the dataset spec (`vjepa_jax.data.specs`; "droid" here, "" guesses it from the
features). Pipeline (all inside the tf.data graph): shard files of this process's part of the
split (`tfds.even_splits` at episode granularity) -> interleaved TFRecord reads with a
record-count check per shard -> parse only the needed keys (state keys, episode id, encoded
frames of the chosen cameras) -> episode filters (held-out split by a stable hash of the episode
id, success, non-finite states, broken images, idle trimming, too short for one clip), counted ->
shuffle of encoded episodes -> repeat -> windows (`"random"`: one per episode visit by default;
`"sliding"`: every window) with states, actions and step indices -> shuffle of encoded windows ->
[skip] -> decode of the sampled frames of the drawn camera -> crop/resize. In deterministic mode
the stream is a pure function of (cfg, process_index, process_count): every random draw is
stateless and keyed by the position of the episode visit in the stream.
"""
from collections.abc import Iterator, Sequence
import os

from absl import logging
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from vjepa_jax.data import config as config_lib
from vjepa_jax.data import poses
from vjepa_jax.data import specs as specs_lib
from vjepa_jax.data import transforms

OBS = "steps/observation/"
CARTESIAN_KEY = OBS + "cartesian_position"
GRIPPER_KEY = OBS + "gripper_position"
FILE_PATH_KEY = "episode_metadata/file_path"
SAMPLINGS = config_lib.SAMPLINGS
WINDOW_RULES = config_lib.WINDOW_RULES
SPLITS = config_lib.SPLITS
# Outcome of an episode, in the order the filters are applied; each read episode gets one.
FILTERS = ("other_split", "not_success", "malformed", "nonfinite_state", "bad_jpeg", "too_short")
COUNTERS = ("episodes_read", *FILTERS, "episodes_kept", "steps_read", "steps_kept",
            "idle_steps_trimmed")
_HASH_BUCKETS = 1_000_000
_EPISODE = "episode_metadata/"


DEFAULT_PATH = "gs://gresearch/robotics/droid/1.0.1"


def default_config(preset: str = "ac") -> ml_collections.ConfigDict:
  """The DROID data config: `config.default_config(preset)` with the DROID spec, camera
  `exterior_image_1_left` and the 15 Hz frame step set explicitly. Presets: `"ac"` (the official
  recipe at the physical rate, frame_step 4), `"official_timing"` (frame_step 15, the official
  loader's MP4-clock timing), `"sliding16"` (16-frame sliding clips with the hub crop)."""
  c = config_lib.default_config(preset)
  c.format = "rlds"
  c.spec = "droid"
  c.camera = "exterior_image_1_left"
  if not c.frame_step:
    c.frame_step = 4  # Raw 15 Hz steps between sampled frames (3.75 Hz, the official rate).
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


configured_cameras = config_lib.configured_cameras
camera_names = config_lib.camera_names
empty_split_hint = config_lib.empty_split_hint
validate = config_lib.validate
min_episode_steps = config_lib.min_episode_steps
frame_step_for = config_lib.frame_step_for


def _process(cfg: ml_collections.ConfigDict) -> tuple[int, int]:
  return config_lib.process_layout(cfg)


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


def _camera_encoding(builder: tfds.core.DatasetBuilder, cameras: Sequence[str]) -> str:
  obs = builder.info.features["steps"]["observation"]
  encodings = {("jpeg" if obs[c].encoding_format == "jpeg" else "png") for c in cameras}
  if len(encodings) > 1:
    raise ValueError(f"cameras {list(cameras)} mix JPEG and PNG frames; draw from one kind")
  return encodings.pop()


def feature_keys(builder: tfds.core.DatasetBuilder) -> dict[str, tfds.features.TensorInfo]:
  """Serialized features by spec key: step keys relative to `steps/`, episode-level keys as
  `episode_metadata/...` (other episode-level keys keep their full name)."""
  flat = _flat_info(builder.info.features.get_serialized_info())
  return {(k[len("steps/"):] if k.startswith("steps/") else k): v for k, v in flat.items()}


def _serialized_key(key: str) -> str:
  return key if key.startswith(_EPISODE) else "steps/" + key


def _is_episode_level(key: str) -> bool:
  return key.startswith(_EPISODE)


def _width(info) -> int:
  shape = tuple(info.shape)
  return int(np.prod(shape[1:])) if len(shape) > 1 else 1


def resolve_spec(cfg: ml_collections.ConfigDict,
                 builder: tfds.core.DatasetBuilder) -> specs_lib.Spec:
  """The config's spec (guessed from the features when `cfg.spec` is empty), checked against
  the dataset and filled in (`specs.with_defaults`)."""
  features = feature_keys(builder)
  if cfg.spec:
    spec = specs_lib.load(cfg.spec)
  else:
    spec = specs_lib.guess("rlds", list(features), builder.info.name, where=cfg.path)
  if spec.format != "rlds":
    raise ValueError(f"spec {spec.name!r} describes a {spec.format} dataset; {cfg.path} is an "
                     "RLDS/TFDS directory")
  spec = specs_lib.drop_absent_language(spec, features)
  missing = [_serialized_key(k) for k in spec.referenced_keys() if k not in features]
  if missing:
    present = sorted(_serialized_key(k) for k in features)
    raise ValueError(f"dataset at {cfg.path} lacks needed features: {missing}; it has: {present}")
  widths = {k: _width(v) for k, v in features.items()}
  for _, key in spec.state_parts() + [(None, k) for k in spec.action_keys()]:
    width = key.width(widths[key.name])
    full = widths[key.name]
    stop = key.stop if key.stop is not None else full
    if not width or (key.stop is not None and key.stop > full) or stop > full:
      raise ValueError(f"feature {_serialized_key(key.name)} has {full} values per step; the "
                       f"spec reads {key}")
  spec = specs_lib.with_defaults(spec, widths)
  if spec.stored_actions:
    stored = sum(k.width(widths[k.name]) for k in spec.action_keys())
    if stored != spec.action_dim:
      raise ValueError(f"spec {spec.name!r}: stored actions have {stored} values, the state "
                       f"{spec.action_dim}; the predictor takes one width for both")
  return spec


def resolve(cfg: ml_collections.ConfigDict) -> tuple[ml_collections.ConfigDict,
                                                     specs_lib.Spec,
                                                     tfds.core.DatasetBuilder]:
  """A copy of `cfg` with spec, camera and frame step filled in, the spec and the builder."""
  validate(cfg)
  if tf.io.gfile.exists(os.path.join(cfg.path, "meta", "info.json")):
    raise ValueError(f"{cfg.path} is a LeRobot dataset, but this config reads RLDS (format "
                     f"{cfg.format!r}, spec {cfg.spec!r}): start from data.default_config() "
                     "(format 'auto', spec guessed) or data.config_for(path)")
  builder = open_builder(cfg.path)
  spec = resolve_spec(cfg, builder)
  out = ml_collections.ConfigDict(cfg.to_dict())
  out.format = "rlds"
  from_preset = (not cfg.spec or cfg.spec in specs_lib.PRESETS) and spec.name in specs_lib.PRESETS
  out.spec = spec.name if from_preset else spec.to_json()
  if not configured_cameras(cfg):
    cams = list(spec.cameras) or available_cameras(builder)[:1]
    if not cams:
      raise ValueError(f"dataset at {cfg.path} has no image feature under steps/observation")
    out.camera = ",".join(cams)
  if not cfg.frame_step:
    out.frame_step = frame_step_for(spec.control_hz, cfg.clip_fps, cfg.path)
  validate(out)
  return out, spec, builder


def _parse_feature(info, episode_level: bool):
  dtype = info.tf_dtype
  if dtype == tf.string:
    kind = tf.string
  elif dtype.is_floating:
    kind = tf.float32  # TFDS stores float64 tensors as float_list (float32).
  else:
    kind = tf.int64  # ints and bools are int64_list
  inner = [int(d) for d in tuple(info.shape)[1 if not episode_level else 0:]]
  if episode_level:
    return tf.io.FixedLenFeature(inner, kind)
  return tf.io.FixedLenSequenceFeature(inner, kind, allow_missing=True)


def parse_spec(builder: tfds.core.DatasetBuilder, cameras: Sequence[str],
               spec: specs_lib.Spec | None = None) -> dict:
  """tf.io parse spec for the keys a clip needs; ValueError naming missing or bad keys."""
  available = available_cameras(builder)
  unknown = [c for c in cameras if c not in available]
  if unknown:
    raise ValueError(f"unknown camera(s) {unknown}; available cameras: {available}")
  if spec is None:
    spec = specs_lib.preset("droid")
  features = feature_keys(builder)
  needed = spec.referenced_keys()
  if spec.language in needed:
    needed.remove(spec.language)  # Kept in the spec for later; clips do not carry it.
  missing = sorted(_serialized_key(k) for k in needed if k not in features)
  if missing:
    present = sorted(_serialized_key(k) for k in features)
    raise ValueError(f"dataset at {builder.data_dir} lacks needed features: {missing}; it has: "
                     f"{present}")
  if spec.name == "droid":
    for key, size in ((CARTESIAN_KEY, 6), (GRIPPER_KEY, 1)):
      info = features[key[len("steps/"):]]
      if tuple(info.shape[1:]) != (size,):
        raise ValueError(f"feature {key} has per-step shape {tuple(info.shape[1:])}, "
                         f"expected ({size},)")
  out = {}
  for key in needed:
    out[_serialized_key(key)] = _parse_feature(features[key], _is_episode_level(key))
  for c in cameras:
    out[OBS + c] = tf.io.FixedLenSequenceFeature([], tf.string, allow_missing=True)
  return out


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
  """`(record, filename, index)` of records `[skip, skip + take)` of one shard; fails naming
  the file if it yields fewer.

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
      return count + 1, (tf.identity(record), is_end, skip + count)

  checked = marked.scan(tf.constant(0, tf.int64), check)
  return checked.filter(lambda r, is_end, i: tf.logical_not(is_end)).map(
      lambda r, is_end, i: (r, filename, i))


def _image_ok(images: tf.Tensor, encoding: str) -> tf.Tensor:
  """True where a string starts and ends with its format's markers (JPEG SOI/EOI, PNG
  signature/IEND): not truncated."""
  length = tf.strings.length(images)
  if encoding == "png":
    head_ref, tail_ref = b"\x89PNG", b"\xaeB`\x82"
  else:
    head_ref, tail_ref = b"\xff\xd8", b"\xff\xd9"
  n_head, n_tail = len(head_ref), len(tail_ref)
  head = tf.strings.substr(images, tf.zeros_like(length), tf.fill(tf.shape(length), n_head))
  tail = tf.strings.substr(images, tf.maximum(length - n_tail, 0),
                           tf.fill(tf.shape(length), n_tail))
  return (length >= n_head + n_tail) & tf.equal(head, head_ref) & tf.equal(tail, tail_ref)


def _step_change(states: tf.Tensor, spec: specs_lib.Spec) -> tf.Tensor:
  """Largest |action| per raw step `[n-1]` (float64 states)."""
  if spec.is_pose:
    return tf.reduce_max(tf.abs(poses.poses_to_diffs(states)), axis=-1)
  return tf.reduce_max(tf.abs(states[1:] - states[:-1]), axis=-1)


def _active_range(states: tf.Tensor, trim: bool, threshold: float,
                  spec: specs_lib.Spec) -> tuple[tf.Tensor, tf.Tensor]:
  """First and last step `[lo, hi]` of the episode after trimming idle ends (hi < lo if idle)."""
  n = tf.shape(states)[0]
  if not trim:
    return tf.constant(0), n - 1
  step_change = _step_change(states, spec)
  moving = tf.cast(tf.where(step_change > threshold)[:, 0], tf.int32)
  # The last idle frame before the first move is kept: it shows the start of the motion.
  lo = tf.cond(tf.size(moving) > 0, lambda: moving[0], lambda: tf.constant(0))
  hi = tf.cond(tf.size(moving) > 0, lambda: moving[-1] + 1, lambda: tf.constant(-1))
  return lo, hi


def _as_rows(x: tf.Tensor, episode_level: bool) -> tf.Tensor:
  """A parsed feature as float32 `[n, D]` (per-step) rows."""
  x = tf.cast(x, tf.float32)
  if episode_level:
    x = x[None]
  if x.shape.rank == 1:
    x = x[:, None]
  if x.shape.rank > 2:
    x = tf.reshape(x, [-1, int(np.prod(x.shape[1:]))])
  return x


def _select(ex: dict, key: specs_lib.KeyRef) -> tf.Tensor:
  x = _as_rows(ex[_serialized_key(key.name)], _is_episode_level(key.name))
  return x[:, key.start:key.stop] if key.sliced else x


def _states(ex: dict, spec: specs_lib.Spec, n: tf.Tensor) -> tf.Tensor:
  """The spec's states `[n, A]` float32 from parsed features (first n steps)."""
  if not spec.is_pose:
    return tf.concat([_select(ex, k)[:n] for _, k in spec.state_parts()], axis=-1)
  parts = dict(spec.state_parts())
  out = [_select(ex, parts["position"])[:n],
         poses.orientation_to_euler(_select(ex, parts["orientation"])[:n],
                                    spec.orientation_format)]
  if "gripper" in parts:
    grip = _select(ex, parts["gripper"])[:n]
    open_, closed = spec.gripper_range
    if (open_, closed) != (0.0, 1.0):
      grip = (grip - open_) / (closed - open_)
    out.append(grip)
  return tf.concat(out, axis=-1)


def _text_or_number(ex: dict, key: str) -> tf.Tensor:
  """An episode-level value as a scalar (a per-step value: its first step)."""
  x = ex[_serialized_key(key)]
  if not _is_episode_level(key):
    x = tf.cond(tf.size(x) > 0, lambda: x[0], lambda: tf.zeros_like(x[:1])[0]) \
        if x.shape.rank == 1 else x[0]
  return x


def _episode_id(ex: dict, spec: specs_lib.Spec, filename: tf.Tensor,
                index: tf.Tensor) -> tf.Tensor:
  if not spec.episode_id:
    # No id in the data: the record's place (shard file name, position) is stable and unique.
    base = tf.strings.regex_replace(filename, r".*/", "")
    return tf.strings.join([base, ":", tf.strings.as_string(index)])
  value = _text_or_number(ex, spec.episode_id)
  if value.dtype != tf.string:
    value = tf.strings.as_string(tf.reshape(value, [-1])[0])
  return tf.reshape(value, [])


def _success(ex: dict, spec: specs_lib.Spec) -> tf.Tensor:
  rule = spec.success
  if not rule:
    return tf.constant(True)
  x = ex[_serialized_key(rule["key"])]
  if rule.get("regex"):
    text = _text_or_number(ex, rule["key"])
    return tf.strings.regex_full_match(tf.reshape(text, []), rule["regex"])
  return tf.reduce_any(tf.cast(x, tf.float32) > 0)


def _parse_episode(record: tf.Tensor, filename: tf.Tensor, index: tf.Tensor, parse: dict,
                   cameras: Sequence[str], cfg: ml_collections.ConfigDict,
                   spec: specs_lib.Spec, encoding: str) -> dict:
  """Serialized episode -> needed tensors plus its filter outcome (`reason`, 0 = kept).

  The episode id (and success key) is parsed first: episodes of the other split (or failures
  with success_only) are not parsed further.
  """
  head_keys = [k for k in (spec.episode_id, (spec.success or {}).get("key", "")) if k]
  head = tf.io.parse_single_example(
      record, {_serialized_key(k): parse[_serialized_key(k)] for k in head_keys}) \
      if head_keys else {}
  file_path = _episode_id(head, spec, filename, index)
  if cfg.split == "all":
    in_split = tf.constant(True)
  else:
    bucket = tf.strings.to_hash_bucket_fast(file_path, _HASH_BUCKETS)
    is_val = bucket < int(round(cfg.val_fraction * _HASH_BUCKETS))
    in_split = is_val if cfg.split == "val" else tf.logical_not(is_val)
  success = _success(head, spec)
  wanted = tf.logical_and(in_split, success) if cfg.success_only else in_split

  def full():
    return tf.io.parse_single_example(record, parse)

  def skip():
    return {k: tf.zeros([0, *v.shape], v.dtype) if isinstance(v, tf.io.FixedLenSequenceFeature)
            else tf.zeros(v.shape, v.dtype) for k, v in parse.items()}

  ex = tf.cond(wanted, full, skip)
  state_like = [_serialized_key(k.name) for _, k in spec.state_parts()] + [
      _serialized_key(k.name) for k in spec.action_keys()]
  state_like = [k for k in dict.fromkeys(state_like) if k.startswith("steps/")]
  lengths = tf.stack([tf.shape(ex[k])[0] for k in state_like]
                     + [tf.shape(ex[OBS + c])[0] for c in cameras])
  n = tf.reduce_min(lengths)
  malformed = tf.reduce_any(tf.not_equal(lengths, n))
  states = _states(ex, spec, n)  # [n, A] float32 (as stored)
  if spec.stored_actions:
    stored = tf.concat([_select(ex, k)[:n] for k in spec.action_keys()], axis=-1)
  else:
    stored = tf.zeros([n, 0], tf.float32)
  jpegs = (tf.stack([ex[OBS + c][:n] for c in cameras]) if len(cameras) > 1
           else ex[OBS + cameras[0]][None, :n])  # [C, n]
  finite = tf.reduce_all(tf.math.is_finite(states)) & tf.reduce_all(tf.math.is_finite(stored))
  jpeg_ok = tf.reduce_all(_image_ok(jpegs, encoding))
  safe_states = tf.where(tf.math.is_finite(states), states, tf.zeros_like(states))
  lo, hi = _active_range(tf.cast(safe_states, tf.float64), cfg.trim_idle, cfg.idle_threshold,
                         spec)
  long_enough = hi - lo + 1 >= min_episode_steps(cfg)

  failed = tf.stack([tf.logical_not(in_split),
                     tf.logical_not(success) if cfg.success_only else tf.constant(False),
                     malformed, tf.logical_not(finite), tf.logical_not(jpeg_ok),
                     tf.logical_not(long_enough)])
  reason = tf.cond(tf.reduce_any(failed),
                   lambda: tf.argmax(tf.cast(failed, tf.int32), output_type=tf.int32) + 1,
                   lambda: tf.constant(0))
  return {"file_path": file_path, "states": states, "stored": stored, "jpegs": jpegs, "lo": lo,
          "hi": hi, "reason": reason, "num_steps": n}


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


def _plan(cfg: ml_collections.ConfigDict):
  """(resolved cfg, spec, builder, cameras, frame encoding) of one pipeline."""
  cfg, spec, builder = resolve(cfg)
  cameras = camera_names(cfg)
  available = available_cameras(builder)
  unknown = [c for c in cameras if c not in available]
  if unknown:
    raise ValueError(f"unknown camera(s) {unknown}; available cameras: {available}")
  if cfg.success_only and not spec.success:
    raise ValueError(f"success_only=True but spec {spec.name!r} has no success rule; set "
                     "data.success_only=False or give the spec a 'success' key")
  return cfg, spec, builder, cameras, _camera_encoding(builder, cameras)


def _episodes(plan, counters: FilterCounters | None, shuffle: bool) -> tf.data.Dataset:
  """Kept episodes of this process, one pass (filter outcomes counted in `counters`)."""
  cfg, spec, builder, cameras, encoding = plan
  parse = parse_spec(builder, cameras, spec)
  index, count = _process(cfg)
  files = host_file_instructions(builder, cfg.source_split, index, count)
  assigned = sum(t for _, _, t in files)
  if not assigned:
    total = builder.info.splits[cfg.source_split].num_examples
    raise ValueError(f"empty split: process {index} of {count} got no episodes of "
                     f"{cfg.source_split!r} ({total} episodes) in {cfg.path}; use at most "
                     f"{total} processes or a dataset with more episodes")
  logging.info("RLDS %s (spec %s): process %d/%d reads %d episodes from %d shard slices",
               cfg.path, spec.name, index, count, assigned, len(files))
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
  ds = ds.map(lambda r, f, i: _parse_episode(r, f, i, parse, cameras, cfg, spec, encoding),
              num_parallel_calls=parallel, deterministic=cfg.deterministic)
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


def _clip_actions(states: tf.Tensor, stored: tf.Tensor, steps: tf.Tensor,
                  spec: specs_lib.Spec) -> tf.Tensor:
  """Actions `[W, T-1, A]` float32 of windows at `steps` `[W, T]` (states `[W, T, A]` float32,
  the episode's stored per-step actions `[n, A]`)."""
  if spec.stored_actions:
    if spec.aggregate == "last":
      return tf.gather(stored, steps[:, 1:] - 1)
    csum = tf.concat([tf.zeros_like(stored[:1], tf.float64),
                      tf.cumsum(tf.cast(stored, tf.float64), axis=0)], axis=0)
    return tf.cast(tf.gather(csum, steps[:, 1:]) - tf.gather(csum, steps[:, :-1]), tf.float32)
  if spec.is_pose:
    return tf.cast(poses.poses_to_diffs(tf.cast(states, tf.float64)), tf.float32)
  return states[:, 1:] - states[:, :-1]


def _windows(visit: tf.Tensor, ep: dict, base_seed: tf.Tensor,
             cfg: ml_collections.ConfigDict, num_cameras: int, spec: specs_lib.Spec) -> dict:
  """All windows of one episode visit as `[W, ...]` tensors (frames still encoded)."""
  seed = tf.random.experimental.stateless_fold_in(base_seed, visit)
  start_seed, cam_seed, crop_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
  starts = _window_starts(ep["lo"], ep["hi"], start_seed, cfg)
  num = tf.shape(starts)[0]
  steps = starts[:, None] + tf.range(cfg.frames_per_clip, dtype=tf.int32) * cfg.frame_step
  states = tf.gather(ep["states"], steps)  # [W, T, A] float32 (as stored)
  actions = _clip_actions(states, ep["stored"], steps, spec)
  cams = tf.random.stateless_uniform([num], seed=cam_seed, minval=0, maxval=num_cameras,
                                    dtype=tf.int32)
  cam_idx = tf.broadcast_to(cams[:, None], tf.shape(steps))
  jpegs = tf.gather_nd(ep["jpegs"], tf.stack([cam_idx, steps], axis=-1))  # [W, T]
  crop_seeds = tf.random.stateless_uniform([num, 2], seed=crop_seed, minval=None, maxval=None,
                                          dtype=tf.int64)
  return {"jpegs": jpegs, "states": states, "actions": actions,
          "episode_id": tf.fill([num], ep["file_path"]), "step_index": steps,
          "crop_seed": crop_seeds}


def _options(cfg: ml_collections.ConfigDict) -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = bool(cfg.deterministic)
  return options


def _encoded(plan, counters: FilterCounters | None) -> tf.data.Dataset:
  cfg, spec = plan[0], plan[1]
  episodes = _episodes(plan, counters, shuffle=cfg.shuffle)
  index, _ = _process(cfg)
  if cfg.shuffle and cfg.episode_shuffle_buffer > 1:
    episodes = episodes.shuffle(cfg.episode_shuffle_buffer, seed=cfg.seed + 2000 + index,
                                reshuffle_each_iteration=True)
  # repeat() stops instead of spinning when a pass yields nothing (every episode filtered).
  episodes = episodes.repeat(cfg.num_epochs)
  base_seed = tf.constant([cfg.seed, index], tf.int64)
  num_cameras = len(plan[3])
  windows = episodes.enumerate().map(
      lambda visit, ep: _windows(visit, ep, base_seed, cfg, num_cameras, spec),
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=cfg.deterministic)
  clips = windows.flat_map(tf.data.Dataset.from_tensor_slices)
  if cfg.shuffle and cfg.shuffle_buffer > 1:
    clips = clips.shuffle(cfg.shuffle_buffer, seed=cfg.seed + 3000 + index,
                          reshuffle_each_iteration=True)
  return clips.with_options(_options(cfg))


def encoded_clip_dataset(cfg: ml_collections.ConfigDict,
                         counters: FilterCounters | None = None) -> tf.data.Dataset:
  """Clips before decoding: like `make_clip_dataset` but `jpegs` `[T]` instead of `video`."""
  return _encoded(_plan(cfg), counters)


def _decode(clip: dict, cfg: ml_collections.ConfigDict, spec: specs_lib.Spec,
            encoding: str) -> dict:
  random_crop = (tuple(cfg.rrc_scale), tuple(cfg.rrc_ratio)) if cfg.random_resized_crop else None
  size = cfg.image_size if cfg.resize_on_host else None
  video = transforms.preprocess_clip(clip["jpegs"], size, cfg.crop, random_crop=random_crop,
                                     seed=clip["crop_seed"], encoding=encoding)
  t, a = cfg.frames_per_clip, spec.action_dim
  return {"video": tf.ensure_shape(video, [t, size, size, 3]),
          "states": tf.ensure_shape(clip["states"], [t, a]),
          "actions": tf.ensure_shape(clip["actions"], [t - 1, a]),
          "episode_id": clip["episode_id"],
          "step_index": tf.ensure_shape(clip["step_index"], [t])}


def make_clip_dataset(cfg: ml_collections.ConfigDict, skip: int = 0,
                      counters: FilterCounters | None = None) -> tf.data.Dataset:
  """Unbatched dataset of clips for this JAX process (see the module docstring).

  Args:
    cfg: a `default_config()` ConfigDict (or a `data.config_for` one of an RLDS dataset).
    skip: drop the first `skip` clips of the stream before any frame is decoded. With
      `cfg.deterministic` the stream depends only on (cfg, process_index, process_count), so a
      run that consumed n clips per process resumes exactly with `skip=n`.
    counters: optional `FilterCounters` the pipeline updates as it reads episodes.
  """
  plan = _plan(cfg)
  cfg, spec, encoding = plan[0], plan[1], plan[4]
  clips = _encoded(plan, counters)
  if skip:
    clips = clips.skip(skip)
  parallel = tf.data.AUTOTUNE if cfg.num_parallel_calls < 0 else cfg.num_parallel_calls
  clips = clips.map(lambda c: _decode(c, cfg, spec, encoding), num_parallel_calls=parallel,
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
                     "(every episode filtered, or too few episodes for this process); set "
                     "data.split='all' or data.val_fraction > 0 for a held-out split, lower the "
                     "batch size, or see the filter counts of python -m vjepa_jax.data.inspect")


def _summaries(ep: dict, cfg: ml_collections.ConfigDict, spec: specs_lib.Spec) -> dict:
  """Per-episode sums for `dataset_stats`: window counts and state/action moments."""
  lo, hi = ep["lo"], ep["hi"]
  states = tf.cast(ep["states"][lo:hi + 1], tf.float64)
  # Every pair of steps frame_step apart in the active range: the actions clips can contain.
  first = tf.range(lo, hi + 1 - cfg.frame_step)
  pairs = tf.stack([first, first + cfg.frame_step], axis=1)
  actions = tf.cast(_clip_actions(tf.gather(ep["states"], pairs), ep["stored"], pairs, spec),
                    tf.float64)[:, 0]
  stride = cfg.clip_stride * cfg.frame_step
  sliding = tf.maximum((_last_start(hi, cfg) - lo) // stride + 1, 0)

  def moments(x):
    return {"n": tf.shape(x)[0], "sum": tf.reduce_sum(x, 0), "sq": tf.reduce_sum(x * x, 0),
            "min": tf.reduce_min(x, 0), "max": tf.reduce_max(x, 0)}

  return {"steps": hi - lo + 1, "sliding": sliding, "state": moments(states),
          "action": moments(actions)}


def dataset_stats(cfg: ml_collections.ConfigDict) -> dict:
  """One pass over this process's episodes (no frame decode): filter counts, clip counts and
  per-dimension state/action statistics. Logged and returned as a dict."""
  counters = FilterCounters()
  plan = _plan(cfg)
  cfg, spec = plan[0], plan[1]
  episodes = _episodes(plan, counters, shuffle=False)
  parallel = tf.data.AUTOTUNE if cfg.num_parallel_calls < 0 else cfg.num_parallel_calls
  summaries = episodes.map(lambda ep: _summaries(ep, cfg, spec), num_parallel_calls=parallel)
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
                              "sliding": sliding},
           "spec": spec.name, "dim_names": list(spec.dim_names)}
  for k, a in acc.items():
    if a["n"]:
      mean = a["sum"] / a["n"]
      std = np.sqrt(np.maximum(a["sq"] / a["n"] - mean * mean, 0.0))
      stats[k] = {"count": a["n"], "mean": mean.tolist(), "std": std.tolist(),
                  "min": np.asarray(a["min"]).tolist(), "max": np.asarray(a["max"]).tolist()}
  logging.info("RLDS %s (%s split) filter counts: %s; clips per pass: %s", cfg.path, cfg.split,
               counts, stats["clips_per_pass"])
  return stats
