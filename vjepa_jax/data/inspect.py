"""Inspect a robot dataset (RLDS/TFDS or LeRobot) the way the training pipeline sees it.

  python -m vjepa_jax.data.inspect PATH [--spec SPEC] [--sampling sliding] [--sheet out.png]

Prints the dataset identity and the resolved spec (format, preset, state layout, action width,
controllable dimensions and bounds), the filter counts, the clips one pass yields ("random":
one per kept episode; "sliding": every window), per-dimension statistics of the states and of
the actions clips can contain (use their range for a spec's `action_low` / `action_high`), and
writes a PNG contact sheet of sampled clips (one row per clip, one column per frame). Reads every
episode once without decoding frames; goes through `data.config_for` like training does.
"""
import argparse
from collections.abc import Sequence
import struct
import zlib

from etils import epath
import numpy as np

from vjepa_jax.data import api
from vjepa_jax.data import config as config_lib


def config_from_args(args: argparse.Namespace):
  overrides = dict(
      camera=args.camera, frames_per_clip=args.frames, frame_step=args.frame_step,
      sampling=args.sampling, clip_stride=args.clip_stride, window_rule=args.window_rule,
      split=args.split, val_fraction=args.val_fraction, success_only=args.success_only,
      trim_idle=args.trim_idle, crop=args.crop, image_size=args.image_size, process_index=0,
      process_count=1, deterministic=True, seed=args.seed, shuffle_buffer=64, num_epochs=1,
      num_workers=0)
  return api.config_for(args.path, spec=args.spec or None, **overrides)


def contact_sheet(cfg, num_clips: int) -> np.ndarray:
  """uint8 `[num_clips * S, T * S, 3]` grid of the first clips of the stream."""
  stream = api.clip_iterator(cfg)
  rows = [clip["video"] for _, clip in zip(range(num_clips), stream)]
  stream.close()
  if not rows:
    raise ValueError("no clip to show: every episode was filtered")
  return np.concatenate([np.concatenate(list(video), axis=1) for video in rows], axis=0)


def encode_png(image: np.ndarray) -> bytes:
  """uint8 RGB `[H, W, 3]` -> PNG bytes (8-bit RGB, no filtering)."""
  h, w, _ = image.shape
  raw = b"".join(b"\x00" + image[y].tobytes() for y in range(h))

  def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(
        ">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

  header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6))
          + chunk(b"IEND", b""))


def _table(name: str, stats: dict, dims: Sequence[str]) -> str:
  lines = [f"{name} ({stats['count']} values per dimension)",
           f"  {'dim':>8} {'mean':>11} {'std':>11} {'min':>11} {'max':>11}"]
  for i, dim in enumerate(dims):
    lines.append(f"  {dim:>8} {stats['mean'][i]:>11.5f} {stats['std'][i]:>11.5f} "
                 f"{stats['min'][i]:>11.5f} {stats['max'][i]:>11.5f}")
  return "\n".join(lines)


def _identity(cfg) -> list[str]:
  if cfg.format == "rlds":
    from vjepa_jax.data import droid
    builder = droid.open_builder(cfg.path)
    info = builder.info
    split = info.splits[cfg.source_split]
    return [f"dataset {cfg.path} (rlds)",
            f"  builder name {info.name!r}, version {info.version}, split {cfg.source_split!r}: "
            f"{split.num_examples} episodes in {split.num_shards} shards",
            f"  cameras: {droid.available_cameras(builder)}"]
  from vjepa_jax.data import lerobot
  meta = lerobot.open_dataset(cfg.path)
  return [f"dataset {cfg.path} (lerobot {meta.version})",
          f"  {len(meta.episodes)} episodes, {meta.info.get('total_frames')} frames at "
          f"{meta.fps:g} fps, robot {meta.info.get('robot_type')!r}",
          f"  cameras: {meta.cameras}"]


def report(cfg, num_clips: int, sheet_path: str | None) -> str:
  """Runs the inspection; returns the printed text."""
  out = _identity(cfg)
  spec = api.spec_of(cfg)
  out.append(f"spec {spec.name}: {spec.integration} states of width {spec.action_dim} "
             f"{list(spec.dim_names)}; camera(s) {cfg.camera}; controllable {list(spec.controllable)}"
             f", action_low {spec.action_low}, action_high {spec.action_high}")
  stats = api.dataset_stats(cfg)
  counts = stats["counts"]
  out.append(f"episodes read {counts['episodes_read']}, kept {counts['episodes_kept']}; "
             f"steps read {counts['steps_read']}, kept {counts['steps_kept']} "
             f"(idle steps trimmed {counts['idle_steps_trimmed']})")
  filters = [k for k in counts if k not in ("episodes_read", "episodes_kept", "steps_read",
                                            "steps_kept", "idle_steps_trimmed")]
  out.append("filtered: " + ", ".join(f"{k} {counts[k]}" for k in filters))
  per_pass = stats["clips_per_pass"]
  out.append(f"clips per pass ({cfg.frames_per_clip} frames every {cfg.frame_step} steps, "
             f"window rule {cfg.window_rule!r}, split {cfg.split!r}, episodes of >= "
             f"{config_lib.min_episode_steps(cfg)} steps): random {per_pass['random']}, "
             f"sliding (stride {cfg.clip_stride} frames) {per_pass['sliding']}")
  for key in ("state", "action"):
    if key in stats:
      out.append(_table(key + ("s" if key == "state" else "s (frame_step apart)"), stats[key],
                        stats["dim_names"]))
  if sheet_path and counts["episodes_kept"]:
    sheet = contact_sheet(cfg, num_clips)
    with epath.Path(sheet_path).open("wb") as f:
      f.write(encode_png(sheet))
    out.append(f"contact sheet ({sheet.shape[0]}x{sheet.shape[1]}) written to {sheet_path}")
  return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("path", help="TFDS version directory or LeRobot root (local or gs://)")
  parser.add_argument("--spec", default="", help="preset name or spec .py (default: guessed)")
  parser.add_argument("--camera", default="", help="camera(s), comma-separated (default: spec)")
  parser.add_argument("--frames", type=int, default=8)
  parser.add_argument("--frame-step", type=int, default=0,
                      help="raw steps between frames (0: control rate / 4 fps)")
  parser.add_argument("--sampling", default="random", choices=config_lib.SAMPLINGS)
  parser.add_argument("--clip-stride", type=int, default=2)
  parser.add_argument("--window-rule", default="span", choices=config_lib.WINDOW_RULES)
  parser.add_argument("--split", default="all", choices=config_lib.SPLITS)
  parser.add_argument("--val-fraction", type=float, default=0.05)
  parser.add_argument("--success-only", action="store_true")
  parser.add_argument("--trim-idle", action="store_true")
  parser.add_argument("--crop", default="ac", choices=config_lib.CROPS)
  parser.add_argument("--image-size", type=int, default=128, help="contact sheet frame size")
  parser.add_argument("--clips", type=int, default=4, help="clips on the contact sheet")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--sheet", default="contact_sheet.png", help="PNG path ('' for none)")
  args = parser.parse_args(argv)
  print(report(config_from_args(args), args.clips, args.sheet))


if __name__ == "__main__":
  main()
