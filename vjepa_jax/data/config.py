"""The data config shared by every format (RLDS/TFDS and LeRobot) and its presets.

`default_config()` leaves the format, spec, camera and frame step to be found from `path`
(`data.config_for` / `data.resolve` fill them in); `droid.default_config()` is the same config with
DROID's values set explicitly.
"""
import math

import ml_collections

TIMINGS = ("ac", "official_timing", "sliding16")
SAMPLINGS = ("random", "sliding")
WINDOW_RULES = ("span", "official")
SPLITS = ("train", "val", "all")
CROPS = ("ac", "hub")


def default_config(preset: str = "ac") -> ml_collections.ConfigDict:
  """Data config.

  Presets (clip timing; see the README's data section for spans and action magnitudes):
  - `"ac"`: V-JEPA 2-AC clips at the physical rate: 8 frames at `clip_fps=4` (every 4th step of
    15 Hz DROID, 3.75 Hz, 28 steps = 1.87 s per clip).
  - `"official_timing"`: the official loader's timing on DROID. It steps by the MP4's declared
    60 fps (the content is ~15 Hz), so its "4 fps" clips take every 15th frame: `frame_step=15`
    on 15 Hz data, 105 steps (7 s) per 8-frame clip and ~3.75x larger actions.
  - `"sliding16"`: 16-frame clips at every 8th sampled frame with the hub crop.
  """
  c = ml_collections.ConfigDict()
  c.path = ""  # A TFDS version directory or a LeRobot root (local or gs://).
  c.format = "auto"  # "auto" (from path) | "rlds" | "lerobot".
  c.spec = ""  # "" (guess) | preset name | path to a spec .py | spec JSON (see data.specs).
  # Weighted mixture: {name: {"weight": w, "config": <data config>}} (build with data.mixture).
  c.mixture = ml_collections.ConfigDict()
  c.source_split = "train"  # Split of the dataset to read (DROID and LeRobot: "train").
  c.camera = ""  # "" = the spec's cameras; "a,b" draws one per clip.
  c.frames_per_clip = 8
  c.frame_step = 0  # Raw steps between sampled frames; 0 = ceil(control rate / clip_fps).
  c.clip_fps = 4.0  # Target clip rate when frame_step is 0 (the official fps: 4).
  c.sampling = "random"  # "random": clips_per_visit windows per episode visit; "sliding": all.
  c.clip_stride = 2  # "sliding": sampled frames between consecutive window starts.
  # "random": windows drawn (independently) per episode visit. 1 is the official sampler; more
  # amortises reading an episode over several clips.
  c.clips_per_visit = 1
  # "span": a window may start wherever its (T-1)*frame_step+1 steps fit (T >= 29 by default);
  # "official": the official sampler, start in [0, L - T*frame_step - 1] (L >= 33).
  c.window_rule = "span"
  c.image_size = 256
  # False: "ac" frames leave at the crop's native size ([T, H, round(1.35 H), 3], 180x243 on
  # DROID RLDS) for a bilinear resize on the accelerator.
  c.resize_on_host = True
  c.crop = "ac"  # "ac" (training/eval/planning) or "hub" (short side 292, centre crop 256).
  c.random_resized_crop = False  # Augmentation: a random window per clip instead of `crop`.
  c.rrc_scale = (0.3, 1.0)
  c.rrc_ratio = (0.75, 1.35)
  c.split = "train"  # "train" | "val" | "all" (held-out by a stable hash of the episode id).
  c.val_fraction = 0.05
  c.success_only = False  # Keep only episodes the spec marks successful.
  c.trim_idle = False  # Drop leading/trailing steps whose action is below idle_threshold.
  c.idle_threshold = 1e-3  # Max |action| per raw step counted as idle.
  c.shuffle = True
  c.seed = 0
  c.deterministic = False  # RLDS: True gives a reproducible order (needed to resume exactly).
  c.shuffle_buffer = 4096  # RLDS: encoded windows (~8 JPEGs each).
  c.episode_shuffle_buffer = 16  # RLDS: encoded episodes.
  c.num_epochs = ml_collections.config_dict.placeholder(int)  # None: repeat forever.
  c.num_parallel_reads = 2  # RLDS: shard files read at once; raise (8-16) for gs://.
  c.num_parallel_calls = -1  # RLDS: parallel parse/decode calls; -1 = tf.data.AUTOTUNE.
  c.read_buffer_bytes = 256 << 10  # RLDS: TFRecord read buffer; larger helps on gs://.
  c.num_workers = 2  # LeRobot: decoding worker processes (0 = decode in this process).
  c.worker_buffer = 4  # LeRobot: clips each worker prepares ahead.
  c.timestamp_tolerance_s = 1e-4  # LeRobot: |frame time - row time| allowed (LeRobot's).
  c.process_index = ml_collections.config_dict.placeholder(int)  # None: jax.process_index().
  c.process_count = ml_collections.config_dict.placeholder(int)  # None: jax.process_count().
  if preset == "official_timing":
    c.frame_step = 15
    c.window_rule = "official"
  elif preset == "sliding16":
    c.frames_per_clip = 16
    c.sampling = "sliding"
    c.clip_stride = 8
    c.crop = "hub"
  elif preset != "ac":
    raise ValueError(f"unknown preset {preset!r}; expected one of {TIMINGS}")
  return c


def process_layout(cfg: ml_collections.ConfigDict) -> tuple[int, int]:
  """(process_index, process_count) of `cfg` (None fields: JAX's process layout)."""
  index, count = cfg.process_index, cfg.process_count
  if index is None or count is None:
    import jax  # Only needed when the config leaves the process layout to JAX.
    index = jax.process_index() if index is None else index
    count = jax.process_count() if count is None else count
  if not 0 <= index < count:
    raise ValueError(f"process_index {index} not in [0, process_count={count})")
  return index, count


def configured_cameras(cfg: ml_collections.ConfigDict) -> list[str]:
  """The configured camera names (a string, comma-separated string, or sequence); may be []."""
  cams = cfg.camera.split(",") if isinstance(cfg.camera, str) else list(cfg.camera)
  return [c.strip() for c in cams if c.strip()]


def camera_names(cfg: ml_collections.ConfigDict) -> list[str]:
  """The configured camera names; ValueError if there is none."""
  cams = configured_cameras(cfg)
  if not cams:
    raise ValueError("cfg.camera names no camera")
  return cams


def empty_split_hint(cfg: ml_collections.ConfigDict) -> str:
  """How to get episodes when a split selects none."""
  if cfg.split == "val":
    return "set data.split='all' (or 'train') or data.val_fraction > 0"
  if cfg.split == "train":
    return "set data.val_fraction < 1 or data.split='all'"
  return "check the filter counts with python -m vjepa_jax.data.inspect PATH"


def validate(cfg: ml_collections.ConfigDict) -> None:
  """Format-independent checks of a data config; ValueError naming the field and the fix."""
  if not cfg.path:
    raise ValueError("cfg.path is empty; set it to a TFDS version directory (.../droid/1.0.1) "
                     "or a LeRobot dataset root")
  if cfg.sampling not in SAMPLINGS:
    raise ValueError(f"cfg.sampling must be one of {SAMPLINGS}, got {cfg.sampling!r}")
  if cfg.window_rule not in WINDOW_RULES:
    raise ValueError(f"cfg.window_rule must be one of {WINDOW_RULES}, got {cfg.window_rule!r}")
  if cfg.split not in SPLITS:
    raise ValueError(f"cfg.split must be one of {SPLITS}, got {cfg.split!r}")
  if cfg.crop not in CROPS:
    raise ValueError(f"cfg.crop must be one of {CROPS}, got {cfg.crop!r}")
  if not cfg.resize_on_host and (cfg.crop != "ac" or cfg.random_resized_crop):
    raise ValueError("resize_on_host=False needs crop='ac' and random_resized_crop=False")
  if (cfg.frames_per_clip < 2 or cfg.frame_step < 0 or cfg.clip_stride < 1
      or cfg.clips_per_visit < 1):
    raise ValueError("need frames_per_clip >= 2, frame_step >= 1 (0 = from clip_fps), "
                     "clip_stride, clips_per_visit >= 1")
  if not 0.0 <= cfg.val_fraction <= 1.0:
    raise ValueError(f"cfg.val_fraction must be in [0, 1], got {cfg.val_fraction}")
  if cfg.split == "val" and cfg.val_fraction == 0.0:
    raise ValueError("empty split: split='val' with val_fraction=0 selects no episode; "
                     + empty_split_hint(cfg))
  if cfg.split == "train" and cfg.val_fraction == 1.0:
    raise ValueError("empty split: split='train' with val_fraction=1 selects no episode; "
                     + empty_split_hint(cfg))


def min_episode_steps(cfg: ml_collections.ConfigDict) -> int:
  """Fewest (trimmed) steps an episode needs to give one clip under `cfg.window_rule`."""
  if cfg.window_rule == "official":
    return cfg.frames_per_clip * cfg.frame_step + 1
  return (cfg.frames_per_clip - 1) * cfg.frame_step + 1


def frame_step_for(control_hz: float | None, clip_fps: float, where: str = "") -> int:
  """Raw steps between sampled frames for a clip rate: ceil(control_hz / clip_fps), as the
  official loader computes it from a video's fps."""
  if not control_hz:
    raise ValueError(f"the spec of {where or 'the dataset'} gives no control_hz: set "
                     "data.frame_step (raw steps between sampled frames) or the spec's control_hz")
  if not clip_fps or clip_fps <= 0:
    raise ValueError(f"data.clip_fps must be > 0 when data.frame_step is 0, got {clip_fps}")
  return max(1, math.ceil(control_hz / clip_fps - 1e-9))
