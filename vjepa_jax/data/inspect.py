"""Inspect a DROID RLDS dataset the way the training pipeline sees it.

  python -m vjepa_jax.data.inspect PATH [--sampling sliding] [--split train] [--sheet out.png]

Prints the dataset identity, episodes and steps, the filter counts, the clips one pass yields
("random": one per kept episode; "sliding": every window), per-dimension statistics of the
states and of the actions clips can contain, and writes a PNG contact sheet of sampled clips
(one row per clip, one column per frame). Reads every episode once without decoding images.
"""
import argparse
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from vjepa_jax.data import droid

_DIMS = ("x", "y", "z", "roll", "pitch", "yaw", "gripper")


def config_from_args(args: argparse.Namespace):
  cfg = droid.default_config()
  cfg.path = args.path
  cfg.camera = args.camera
  cfg.frames_per_clip = args.frames
  cfg.frame_step = args.frame_step
  cfg.sampling = args.sampling
  cfg.clip_stride = args.clip_stride
  cfg.window_rule = args.window_rule
  cfg.split = args.split
  cfg.val_fraction = args.val_fraction
  cfg.success_only = args.success_only
  cfg.trim_idle = args.trim_idle
  cfg.crop = args.crop
  cfg.image_size = args.image_size
  cfg.process_index, cfg.process_count = 0, 1
  cfg.deterministic = True
  cfg.seed = args.seed
  cfg.shuffle_buffer = 64
  cfg.num_epochs = 1
  return cfg


def contact_sheet(cfg, num_clips: int) -> np.ndarray:
  """uint8 `[num_clips * S, T * S, 3]` grid of the first clips of the stream."""
  rows = [clip["video"] for clip in droid.make_clip_dataset(cfg).take(num_clips)
          .as_numpy_iterator()]
  if not rows:
    raise ValueError("no clip to show: every episode was filtered")
  return np.concatenate([np.concatenate(list(video), axis=1) for video in rows], axis=0)


def _table(name: str, stats: dict) -> str:
  lines = [f"{name} ({stats['count']} values per dimension)",
           f"  {'dim':>8} {'mean':>11} {'std':>11} {'min':>11} {'max':>11}"]
  for i, dim in enumerate(_DIMS):
    lines.append(f"  {dim:>8} {stats['mean'][i]:>11.5f} {stats['std'][i]:>11.5f} "
                 f"{stats['min'][i]:>11.5f} {stats['max'][i]:>11.5f}")
  return "\n".join(lines)


def report(cfg, num_clips: int, sheet_path: str | None) -> str:
  """Runs the inspection; returns the printed text."""
  builder = droid.open_builder(cfg.path)
  info = builder.info
  split = info.splits[cfg.source_split]
  out = [f"dataset {cfg.path}",
         f"  builder name {info.name!r}, version {info.version}, split {cfg.source_split!r}: "
         f"{split.num_examples} episodes in {split.num_shards} shards",
         f"  cameras: {droid.available_cameras(builder)}"]
  stats = droid.dataset_stats(cfg)
  counts = stats["counts"]
  out.append(f"episodes read {counts['episodes_read']}, kept {counts['episodes_kept']}; "
             f"steps read {counts['steps_read']}, kept {counts['steps_kept']} "
             f"(idle steps trimmed {counts['idle_steps_trimmed']})")
  out.append("filtered: " + ", ".join(f"{k} {counts[k]}" for k in droid.FILTERS))
  per_pass = stats["clips_per_pass"]
  out.append(f"clips per pass ({cfg.frames_per_clip} frames every {cfg.frame_step} steps, "
             f"window rule {cfg.window_rule!r}, split {cfg.split!r}, episodes of >= "
             f"{droid.min_episode_steps(cfg)} steps): random {per_pass['random']}, "
             f"sliding (stride {cfg.clip_stride} frames) {per_pass['sliding']}")
  for key in ("state", "action"):
    if key in stats:
      out.append(_table(key + ("s" if key == "state" else "s (frame_step apart)"), stats[key]))
  if sheet_path and counts["episodes_kept"]:
    sheet = contact_sheet(cfg, num_clips)
    tf.io.write_file(sheet_path, tf.io.encode_png(sheet))
    out.append(f"contact sheet ({sheet.shape[0]}x{sheet.shape[1]}) written to {sheet_path}")
  return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("path", help="TFDS version directory (local or gs://)")
  parser.add_argument("--camera", default="exterior_image_1_left")
  parser.add_argument("--frames", type=int, default=8)
  parser.add_argument("--frame-step", type=int, default=4)
  parser.add_argument("--sampling", default="random", choices=droid.SAMPLINGS)
  parser.add_argument("--clip-stride", type=int, default=2)
  parser.add_argument("--window-rule", default="span", choices=droid.WINDOW_RULES)
  parser.add_argument("--split", default="all", choices=droid.SPLITS)
  parser.add_argument("--val-fraction", type=float, default=0.05)
  parser.add_argument("--success-only", action="store_true")
  parser.add_argument("--trim-idle", action="store_true")
  parser.add_argument("--crop", default="ac", choices=("ac", "hub"))
  parser.add_argument("--image-size", type=int, default=128, help="contact sheet frame size")
  parser.add_argument("--clips", type=int, default=4, help="clips on the contact sheet")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--sheet", default="droid_contact_sheet.png",
                      help="PNG path ('' for none)")
  args = parser.parse_args(argv)
  print(report(config_from_args(args), args.clips, args.sheet))


if __name__ == "__main__":
  main()
