"""One entry point for every format: configs from paths, clip streams, resumable batches.

  from vjepa_jax import data
  cfg = data.config_for("/data/my_lerobot_dataset")      # format detected, spec guessed
  for clip in data.clip_iterator(cfg): ...               # unbatched NumPy dicts
  it = data.batches(cfg, batch_size=8)                   # resumable batches
  batch = next(it); state = it.get_state()               # JSON-serialisable
  it = data.batches(cfg, batch_size=8, state=state)      # continues with the next clip

RLDS/TFDS directories go through `droid.make_clip_dataset` (tf.data), LeRobot roots through the
grain pipeline of `clips.py`; `mixture` draws from several configs by weight.
"""
from collections.abc import Iterator, Mapping, Sequence
import hashlib
import json

from absl import logging
import ml_collections
import numpy as np

from vjepa_jax.data import config as config_lib
from vjepa_jax.data import paths
from vjepa_jax.data import specs as specs_lib

_FINGERPRINT_FIELDS = ("path", "spec", "camera", "frames_per_clip", "frame_step", "sampling",
                       "clip_stride", "clips_per_visit", "window_rule", "split", "val_fraction",
                       "success_only", "trim_idle", "shuffle", "seed", "num_epochs",
                       "source_split", "image_size", "crop", "random_resized_crop")
_MIX_BLOCK = 4096


def default_config(preset: str = "ac") -> ml_collections.ConfigDict:
  return config_lib.default_config(preset)


def check_path(path: str) -> paths.DataPath:
  """The dataset at `path` (format and the directory to read) or a ValueError saying whether it
  does not exist, is empty, is the parent folder of dataset versions (naming them) or is not a
  dataset. Cheap: call it before building anything."""
  return paths.check_path(path)


def check_config(cfg: ml_collections.ConfigDict) -> None:
  """Checks a data config before anything is built: field values (ValueError naming the field
  and the fix, e.g. an empty split) and every dataset path (`check_path`; each component of a
  mixture). Reads no episode."""
  if is_mixture(cfg):
    for name in cfg.mixture:
      try:
        check_config(cfg.mixture[name].config)
      except ValueError as e:
        raise ValueError(f"mixture component {name!r}: {e}") from e
    return
  config_lib.validate(cfg)
  found = paths.check_path(cfg.path)
  if cfg.format not in ("auto", found.format):
    raise ValueError(f"data.format={cfg.format!r} but {cfg.path} is a {found.format} dataset; "
                     "set data.format='auto'")


def _format_of(cfg: ml_collections.ConfigDict) -> str:
  if cfg.format not in ("auto", *specs_lib.FORMATS):
    raise ValueError(f"data.format must be 'auto', 'rlds' or 'lerobot', got {cfg.format!r}")
  if cfg.format != "auto":
    return cfg.format
  return paths.check_path(cfg.path).format


def is_mixture(cfg: ml_collections.ConfigDict) -> bool:
  return bool(cfg.get("mixture")) and len(cfg.mixture) > 0


def resolve(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of `cfg` with format, spec, camera and frame step filled in from the dataset."""
  if is_mixture(cfg):
    out = ml_collections.ConfigDict(cfg.to_dict())
    for name in cfg.mixture:
      out.mixture[name].config = resolve(cfg.mixture[name].config)
    return out
  if cfg.format == "auto" and cfg.path:
    found = paths.check_path(cfg.path)
    cfg = ml_collections.ConfigDict(cfg.to_dict())
    cfg.path, cfg.format = found.path, found.format
  fmt = _format_of(cfg)
  if fmt == "rlds":
    from vjepa_jax.data import droid  # TensorFlow only for RLDS
    return droid.resolve(cfg)[0]
  return _resolve_lerobot(cfg)[0]


def _resolve_lerobot(cfg: ml_collections.ConfigDict):
  from vjepa_jax.data import clips
  from vjepa_jax.data import lerobot
  config_lib.validate(cfg)
  meta = lerobot.open_dataset(cfg.path)
  if cfg.spec:
    spec = specs_lib.load(cfg.spec)
  else:
    spec = specs_lib.guess("lerobot", list(meta.features), state_names=meta.state_names(),
                           where=cfg.path)
  if spec.format != "lerobot":
    raise ValueError(f"spec {spec.name!r} describes a {spec.format} dataset; {cfg.path} is a "
                     "LeRobot dataset")
  spec = specs_lib.drop_absent_language(spec, meta.features)
  widths = meta.widths()
  cameras = [_lerobot_camera(c, meta.cameras)
             for c in config_lib.configured_cameras(cfg) or list(spec.cameras)]
  cameras = cameras or meta.cameras[:1]
  if not cameras:
    raise ValueError(f"LeRobot dataset {cfg.path} has no video feature; features: "
                     f"{sorted(meta.features)}")
  clips.check_spec(spec, meta, cameras)
  spec = specs_lib.with_defaults(spec, widths)
  if spec.stored_actions:
    stored = sum(k.width(widths[k.name]) for k in spec.action_keys())
    if stored != spec.action_dim:
      raise ValueError(f"spec {spec.name!r}: stored actions have {stored} values, the state "
                       f"{spec.action_dim}; the predictor takes one width for both")
  out = ml_collections.ConfigDict(cfg.to_dict())
  out.format = "lerobot"
  from_preset = (not cfg.spec or cfg.spec in specs_lib.PRESETS) and spec.name in specs_lib.PRESETS
  out.spec = spec.name if from_preset else spec.to_json()
  out.camera = ",".join(cameras)
  if not cfg.frame_step:
    out.frame_step = config_lib.frame_step_for(spec.control_hz or meta.fps, cfg.clip_fps,
                                                 cfg.path)
  config_lib.validate(out)
  return out, spec


def _lerobot_camera(name: str, available: Sequence[str]) -> str:
  """LeRobot camera features are `observation.images.<name>`; `<name>` alone (as RLDS configs
  write it) means that feature."""
  full = "observation.images." + name
  return full if name not in available and full in available else name


def spec_of(cfg: ml_collections.ConfigDict) -> specs_lib.Spec:
  """The resolved spec of a data config: action width (`action_dim`), `controllable`
  dimensions, `action_low` / `action_high`, `integration` ("pose" | "additive")."""
  if is_mixture(cfg):
    found = {name: spec_of(cfg.mixture[name].config) for name in cfg.mixture}
    dims = {s.action_dim for s in found.values()}
    if len(dims) > 1:
      raise ValueError(f"mixture components have different action widths: "
                       f"{ {n: s.action_dim for n, s in found.items()} }")
    return next(iter(found.values()))
  cfg = resolve(cfg)
  if cfg.format == "rlds":
    from vjepa_jax.data import droid
    return droid.resolve(cfg)[1]
  return _resolve_lerobot(cfg)[1]


def dataset_stats(cfg: ml_collections.ConfigDict) -> dict:
  """One pass over the episodes without decoding frames: filter counts, clips per pass and
  per-dimension state / action statistics (`droid.dataset_stats` for RLDS)."""
  cfg = resolve(cfg)
  if cfg.format == "rlds":
    from vjepa_jax.data import droid
    return droid.dataset_stats(cfg)
  from vjepa_jax.data import clips
  cfg, spec = _resolve_lerobot(cfg)
  return clips.ClipSource(cfg, spec).stats()


def config_for(path: str, spec=None, **overrides) -> ml_collections.ConfigDict:
  """A data config for the dataset at `path`, format detected and spec resolved.

  Args:
    path: a TFDS version directory or a LeRobot root (local, gs://, or a Hugging Face hub cache
      folder); checked first (`check_path`).
    spec: None (guess the preset from the features; else an error listing the presets and the
      dataset's keys), a preset name, a spec dict, or a path to a spec `.py`.
    **overrides: data config fields to set before resolving (e.g. frames_per_clip=4).
  """
  found = paths.check_path(path)
  cfg = config_lib.default_config()
  cfg.path, cfg.format = found.path, found.format
  if spec is not None:
    cfg.spec = spec if isinstance(spec, str) else specs_lib.load(spec).to_json()
  cfg.update(overrides)
  return resolve(cfg)


def mixture(components, seed: int = 0) -> ml_collections.ConfigDict:
  """A config drawing clips from several data configs by weight, deterministic with `seed`.

  Args:
    components: `{name: (config, weight)}` or a sequence of `(config, weight)` (named c0, c1..).
      Every component must give clips of the same frame count, frame size and action width.
    seed: seed of the component draws.
  """
  if isinstance(components, Mapping):
    items = list(components.items())
  else:
    items = [(f"c{i}", c) for i, c in enumerate(components)]
  if not items:
    raise ValueError("a mixture needs at least one component")
  out = config_lib.default_config()
  out.seed = seed
  for name, (cfg, weight) in items:
    if not weight > 0:
      raise ValueError(f"mixture component {name!r} has weight {weight}; weights must be > 0")
    out.mixture[name] = ml_collections.ConfigDict({"weight": float(weight),
                                                   "config": cfg.to_dict()})
  frames = {n: out.mixture[n].config.frames_per_clip for n in out.mixture}
  if len(set(frames.values())) > 1:
    raise ValueError(f"mixture components differ in frames_per_clip: {frames}")
  return out


def _fingerprint(cfg: ml_collections.ConfigDict) -> str:
  fields = {k: cfg.get(k) for k in _FINGERPRINT_FIELDS}
  return hashlib.sha256(json.dumps(fields, sort_keys=True, default=list).encode()).hexdigest()[:16]


class ClipStream(Iterator):
  """Unbatched clips (NumPy dicts) of one config, with a JSON-serialisable position.

  `get_state()` -> {"format", "clips", "fingerprint", ...}; a stream built with that state
  continues with the next clip. RLDS streams are exact only with `deterministic=True` (else the
  same number of clips is skipped); LeRobot streams are always exact.
  """

  def get_state(self) -> dict:
    raise NotImplementedError

  def batches(self, batch_size: int) -> Iterator[dict]:
    """Batches of `batch_size` stacked clips (used by `BatchIterator`)."""
    while True:
      items = []
      for _ in range(batch_size):
        try:
          items.append(next(self))
        except StopIteration:
          return
      yield stack(items)

  def close(self) -> None:
    pass


def stack(items: Sequence[dict]) -> dict:
  """Stacks clips into a batch: arrays `[B, ...]`, `episode_id` as a bytes array `[B]`."""
  out = {}
  for key in items[0]:
    values = [it[key] for it in items]
    if key == "episode_id":
      out[key] = np.asarray(values, dtype=np.bytes_)
      continue
    shapes = {np.shape(v) for v in values}
    if len(shapes) > 1:
      raise ValueError(f"clips of one batch differ in {key} shape: {sorted(shapes)} (mixture "
                       "components must share frame size, frames_per_clip and action width)")
    out[key] = np.stack(values)
  return out


class _RLDSStream(ClipStream):

  def __init__(self, cfg: ml_collections.ConfigDict, clips: int = 0):
    from vjepa_jax.data import droid
    self.cfg, self.clips = cfg, int(clips)
    self._droid = droid
    self._ds = droid.make_clip_dataset(cfg, skip=self.clips)
    self._it = None

  def __next__(self) -> dict:
    if self._it is None:
      import tensorflow as tf
      self._it = self._ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()
    clip = next(self._it)
    self.clips += 1
    return clip

  def batches(self, batch_size: int) -> Iterator[dict]:
    for batch in self._droid.batch_iterator(self._ds, batch_size):
      self.clips += batch_size
      yield batch

  def get_state(self) -> dict:
    return {"format": "rlds", "clips": self.clips, "fingerprint": _fingerprint(self.cfg)}


class _LeRobotStream(ClipStream):

  def __init__(self, cfg: ml_collections.ConfigDict, clips: int = 0):
    from vjepa_jax.data import clips as clips_lib
    cfg, spec = _resolve_lerobot(cfg)
    index, count = config_lib.process_layout(cfg)
    self.cfg, self.clips = cfg, int(clips)
    self._clips_lib = clips_lib
    self.source = clips_lib.ClipSource(cfg, spec)
    self.elements = clips_lib.elements(cfg, spec, index, count, source=self.source)
    self.grain_iterator = None

  @property
  def counts(self) -> dict:
    return dict(self.source.counts)

  def __next__(self) -> dict:
    if self.grain_iterator is None:
      # Element k depends only on k: starting at the consumed count resumes exactly.
      ds = self._clips_lib.clip_dataset(self.elements, self.clips)
      self.grain_iterator = iter(self._clips_lib.iter_dataset(ds, self.cfg))
    clip = next(self.grain_iterator)
    self.clips += 1
    return clip

  def batches(self, batch_size: int) -> Iterator[dict]:
    if self.grain_iterator is not None:
      yield from super().batches(batch_size)
      return
    ds = self._clips_lib.batch_dataset(self.elements, batch_size, self.clips,
                                       shared=self.cfg.num_workers > 0)
    self.grain_iterator = iter(self._clips_lib.iter_dataset(ds, self.cfg))
    for batch in self.grain_iterator:
      self.clips += batch_size
      yield batch

  def get_state(self) -> dict:
    return {"format": "lerobot", "clips": self.clips, "fingerprint": _fingerprint(self.cfg)}

  def close(self) -> None:
    close = getattr(self.grain_iterator, "close", None)
    if close is not None:
      close()


class _MixtureStream(ClipStream):

  def __init__(self, cfg: ml_collections.ConfigDict, state: dict | None = None):
    state = state or {}
    self.seed = int(cfg.seed)
    self.names = list(cfg.mixture)
    weights = np.array([cfg.mixture[n].weight for n in self.names], np.float64)
    self.probs = weights / weights.sum()
    children = state.get("components", {})
    self.children = {n: _stream(cfg.mixture[n].config, children.get(n)) for n in self.names}
    self.draws = int(state.get("draws", 0))
    self._block, self._choices = None, None

  def _choice(self, i: int) -> int:
    block = i // _MIX_BLOCK
    if block != self._block:
      rng = np.random.default_rng([self.seed, block])
      self._block = block
      self._choices = rng.choice(len(self.names), size=_MIX_BLOCK, p=self.probs)
    return int(self._choices[i % _MIX_BLOCK])

  def __next__(self) -> dict:
    name = self.names[self._choice(self.draws)]
    clip = next(self.children[name])  # a finished component ends the mixture
    self.draws += 1
    return clip

  def get_state(self) -> dict:
    return {"format": "mixture", "draws": self.draws,
            "components": {n: c.get_state() for n, c in self.children.items()}}

  def close(self) -> None:
    for child in self.children.values():
      child.close()


def _stream(cfg: ml_collections.ConfigDict, state: dict | None) -> ClipStream:
  if is_mixture(cfg):
    return _MixtureStream(cfg, state)
  cfg = resolve(cfg)
  clips = 0
  if state:
    if state.get("format") != cfg.format:
      raise ValueError(f"data state is of a {state.get('format')} stream, the config reads "
                       f"{cfg.format}; start without the state or with the matching config")
    clips = int(state.get("clips", 0))
    if state.get("fingerprint") and state["fingerprint"] != _fingerprint(cfg):
      logging.warning("the data config changed since the state was saved: skipping %d clips of "
                      "the new stream instead of resuming the old one exactly", clips)
  if cfg.format == "rlds":
    if clips and not cfg.deterministic:
      logging.warning("data.deterministic=False: resuming skips %d clips of a freshly shuffled "
                      "stream (set data.deterministic=True for an exact resume)", clips)
    return _RLDSStream(cfg, clips)
  return _LeRobotStream(cfg, clips)


def clip_iterator(cfg: ml_collections.ConfigDict, state: dict | None = None) -> ClipStream:
  """Unbatched clips of `cfg` (any format or a mixture) as NumPy dicts: `video` uint8
  `[T, S, S, 3]`, `states` f32 `[T, A]`, `actions` f32 `[T-1, A]`, `step_index` int32 `[T]`,
  `episode_id` bytes. `state` (from `get_state()`) continues a stream where it stopped."""
  return _stream(cfg, state)


class BatchIterator(Iterator):
  """Per-process batches with a JSON-serialisable position (`get_state`).

  `next()` gives `video` uint8 `[B, T, S, S, 3]`, `states` `[B, T, A]`, `actions`
  `[B, T-1, A]`, `step_index` `[B, T]`, `episode_id` bytes `[B]`; incomplete last batches are
  dropped. `get_state()` between batches records the clips consumed; `batches(cfg, B,
  state=...)` (or `set_state`) continues with the next batch.
  """

  def __init__(self, cfg: ml_collections.ConfigDict, batch_size: int, state: dict | None = None):
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    self.cfg, self.batch_size = cfg, batch_size
    self._start(state)

  def _start(self, state: dict | None) -> None:
    self.stream = clip_iterator(self.cfg, state)
    self._batches = self.stream.batches(self.batch_size)
    self._produced = bool(state)

  def __next__(self) -> dict:
    try:
      batch = next(self._batches)
    except StopIteration:
      if not self._produced:
        raise ValueError(
            f"empty split: the dataset gave fewer than batch_size={self.batch_size} clips; set "
            "data.split='all' or data.val_fraction > 0 for a held-out split, lower the batch "
            "size, or see the filter counts of python -m vjepa_jax.data.inspect") from None
      raise
    self._produced = True
    return batch

  def get_state(self) -> dict:
    return self.stream.get_state()

  def set_state(self, state: dict) -> None:
    self.stream.close()
    self._start(state)

  def close(self) -> None:
    self.stream.close()


def batches(cfg: ml_collections.ConfigDict, batch_size: int,
            state: dict | None = None) -> BatchIterator:
  """Resumable per-process batches of `cfg` (see `BatchIterator`)."""
  return BatchIterator(cfg, batch_size, state)
