"""DROID input pipeline throughput: clips/s and peak RSS next to two references.

  python benchmarks/data_throughput.py [--data TFDS_DIR] [--clips 600]

Without --data, a synthetic DROID-format dataset (180x320 frames, three cameras) is generated in
a temporary directory. Each measurement runs in its own process (so peak RSS is its own) and
times `--clips` clips after a warm-up batch:
- pipeline: `droid.make_clip_dataset` + `droid.batch_iterator` (batches of 8), official recipe
  (8 frames every 4 steps, random window per episode visit, "ac" crop to 256), and with
  `clips_per_visit=4`, with sliding windows, and with sliding windows and no host resize
  (180x243 frames out, resized on the accelerator);
- decode bound: the same number of `tf.io.decode_jpeg` calls (8 per clip) in a tight parallel
  tf.data loop over JPEG strings already in memory, no crop, resize, parsing or I/O;
- Python iterator: a per-episode Python loop in the style of a hand-written loader (protobuf
  parse of each episode, NumPy windows, per-frame eager decode and resize, scipy pose deltas);
- rss: the pipeline with sliding windows and a 10,000-clip shuffle buffer, run past the fill.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np


def _peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu_s() -> float:
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def _config(path: str, sampling: str, shuffle_buffer: int, clips_per_visit: int = 1,
            resize_on_host: bool = True):
  from vjepa_jax.data import droid
  cfg = droid.default_config()
  cfg.path = path
  cfg.process_index, cfg.process_count = 0, 1
  cfg.split = "all"
  cfg.sampling = sampling
  cfg.clips_per_visit = clips_per_visit
  cfg.shuffle_buffer = shuffle_buffer
  cfg.resize_on_host = resize_on_host
  return cfg


def _time_pipeline(cfg, num_clips: int, batch_size: int = 8) -> dict:
  from vjepa_jax.data import droid
  start = time.perf_counter()
  batches = droid.batch_iterator(droid.make_clip_dataset(cfg), batch_size)
  next(batches)
  first = time.perf_counter() - start
  start, cpu = time.perf_counter(), _cpu_s()
  done = 0
  while done < num_clips:
    done += len(next(batches)["video"])
  elapsed = time.perf_counter() - start
  return {"clips_per_s": done / elapsed, "cpu_ms_per_clip": 1000 * (_cpu_s() - cpu) / done,
          "first_batch_s": first}


def worker_pipeline(args) -> dict:
  cfg = _config(args.data, args.sampling, args.shuffle_buffer, args.clips_per_visit,
                resize_on_host=not args.no_host_resize)
  return _time_pipeline(cfg, args.clips)


def _episode_jpegs(path: str, camera: str = "exterior_image_1_left"):
  import tensorflow as tf
  from vjepa_jax.data import droid
  builder = droid.open_builder(path)
  files = [f for f, _, _ in droid.host_file_instructions(builder, "train", 0, 1)]
  key = "steps/observation/" + camera
  spec = {key: tf.io.FixedLenSequenceFeature([], tf.string, allow_missing=True)}
  for record in tf.data.TFRecordDataset(files):
    yield tf.io.parse_single_example(record, spec)[key].numpy()


def worker_decode(args) -> dict:
  import tensorflow as tf
  frames = []
  while len(frames) < 8 * args.clips:
    for jpegs in _episode_jpegs(args.data):
      frames.extend(jpegs)
  frames = frames[:8 * args.clips]
  ds = tf.data.Dataset.from_tensor_slices(frames).map(
      lambda j: tf.io.decode_jpeg(j, channels=3), num_parallel_calls=tf.data.AUTOTUNE)
  count = lambda: ds.reduce(tf.constant(0, tf.int64), lambda acc, _: acc + 1)
  count()  # Warm-up (function tracing, thread pools).
  start, cpu = time.perf_counter(), _cpu_s()
  n = int(count())
  elapsed = time.perf_counter() - start
  return {"clips_per_s": n / 8 / elapsed, "cpu_ms_per_clip": 8000 * (_cpu_s() - cpu) / n,
          "mean_jpeg_bytes": float(np.mean([len(f) for f in frames]))}


def worker_python(args) -> dict:
  import tensorflow as tf
  from scipy.spatial.transform import Rotation
  from vjepa_jax.data import droid
  builder = droid.open_builder(args.data)
  files = [f for f, _, _ in droid.host_file_instructions(builder, "train", 0, 1)]
  rng = np.random.default_rng(0)
  frames_per_clip, step, size = 8, 4, 256
  span = (frames_per_clip - 1) * step + 1

  def clips():
    while True:
      for record in tf.data.TFRecordDataset(files):
        feats = tf.train.Example.FromString(record.numpy()).features.feature
        cart = np.array(feats["steps/observation/cartesian_position"].float_list.value)
        grip = np.array(feats["steps/observation/gripper_position"].float_list.value)
        states = np.concatenate([cart.reshape(-1, 6), grip.reshape(-1, 1)], axis=1)
        jpegs = feats["steps/observation/exterior_image_1_left"].bytes_list.value
        if len(states) < span:
          continue
        idx = rng.integers(0, len(states) - span + 1) + np.arange(frames_per_clip) * step
        video = []
        for i in idx:
          frame = tf.io.decode_jpeg(jpegs[i], channels=3).numpy()
          h, w = frame.shape[:2]
          cw = int(round(1.35 * h)) if w / h > 1.35 else w
          frame = frame[:, (w - cw) // 2:(w - cw) // 2 + cw]
          frame = tf.image.resize(frame, (size, size), antialias=False).numpy()
          video.append(np.clip(np.round(frame), 0, 255).astype(np.uint8))
        s = states[idx]
        mats = Rotation.from_euler("xyz", s[:, 3:6]).as_matrix()
        rel = [Rotation.from_matrix(mats[t + 1] @ mats[t].T).as_euler("xyz")
               for t in range(len(s) - 1)]
        actions = np.concatenate([s[1:, :3] - s[:-1, :3], np.stack(rel), s[1:, 6:] - s[:-1, 6:]],
                                 axis=1)
        yield np.stack(video), s.astype(np.float32), actions.astype(np.float32)

  it = clips()
  batch = [next(it) for _ in range(8)]  # Warm-up batch.
  start, cpu = time.perf_counter(), _cpu_s()
  for _ in range(args.clips):
    batch.append(next(it))
    if len(batch) == 8:
      np.stack([b[0] for b in batch])
      batch = []
  elapsed = time.perf_counter() - start
  return {"clips_per_s": args.clips / elapsed,
          "cpu_ms_per_clip": 1000 * (_cpu_s() - cpu) / args.clips}


def worker_rss(args) -> dict:
  cfg = _config(args.data, "sliding", 10_000)
  return _time_pipeline(cfg, args.clips)


WORKERS = {"pipeline": worker_pipeline, "decode": worker_decode, "python": worker_python,
           "rss": worker_rss}


def _run_worker(mode: str, data: str, clips: int, **extra) -> dict:
  cmd = [sys.executable, os.path.abspath(__file__), "--worker", mode, "--data", data,
         "--clips", str(clips)]
  for key, value in extra.items():
    cmd += [f"--{key.replace('_', '-')}", str(value)]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
  return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data", default="", help="TFDS version dir (default: generate one)")
  parser.add_argument("--clips", type=int, default=600, help="clips timed per measurement")
  parser.add_argument("--episodes", type=int, default=40, help="synthetic episodes")
  parser.add_argument("--worker", default="", choices=("", *WORKERS))
  parser.add_argument("--sampling", default="random")
  parser.add_argument("--shuffle-buffer", type=int, default=256)
  parser.add_argument("--clips-per-visit", type=int, default=1)
  parser.add_argument("--no-host-resize", type=int, default=0, help="1: resize_on_host=False")
  parser.add_argument("--skip-rss", action="store_true", help="skip the 10k-buffer RSS run")
  args = parser.parse_args()
  if args.worker:
    result = WORKERS[args.worker](args)
    result["peak_rss_mb"] = _peak_rss_mb()
    print(json.dumps(result))
    return

  with tempfile.TemporaryDirectory() as tmp:
    data = args.data
    if not data:
      from vjepa_jax.data import synthetic
      data = os.path.join(tmp, "droid", "1.0.0")
      start = time.perf_counter()
      eps = synthetic.generate(data, episodes=args.episodes, steps=(150, 250), shards=8, seed=0)
      steps = sum(len(e["observation/cartesian_position"]) for e in eps)
      print(f"synthetic dataset: {len(eps)} episodes, {steps} steps, 8 shards, 180x320 "
            f"({time.perf_counter() - start:.1f} s)")
    runs = [
        ("pipeline, random (official), 1 clip/visit", "pipeline", {}),
        ("pipeline, random, 4 clips/visit", "pipeline", {"clips_per_visit": 4}),
        ("pipeline, sliding (stride 2 frames)", "pipeline", {"sampling": "sliding"}),
        ("pipeline, sliding, resize_on_host=False", "pipeline",
         {"sampling": "sliding", "no_host_resize": 1}),
        ("decode-only bound (decode_jpeg x 8 per clip)", "decode", {}),
        ("Python iterator (per-episode loop, eager decode)", "python", {}),
    ]
    results = []
    for name, mode, extra in runs:
      clips = args.clips if mode != "python" else max(args.clips // 4, 32)
      results.append((name, _run_worker(mode, data, clips, **extra)))
      r = results[-1][1]
      print(f"{name:50s} {r['clips_per_s']:7.1f} clips/s {r['cpu_ms_per_clip']:6.2f} CPU-ms/clip "
            f"peak RSS {r['peak_rss_mb']:5.0f} MB", flush=True)
    if not args.skip_rss:
      rss = _run_worker("rss", data, args.clips)
      print(f"{'pipeline, sliding, 10k-clip shuffle buffer':50s} {rss['clips_per_s']:7.1f} "
            f"clips/s {rss['cpu_ms_per_clip']:6.2f} CPU-ms/clip peak RSS "
            f"{rss['peak_rss_mb']:5.0f} MB (first batch after {rss['first_batch_s']:.1f} s)")
    table = dict(results)
    bound = table["decode-only bound (decode_jpeg x 8 per clip)"]
    python = table["Python iterator (per-episode loop, eager decode)"]["clips_per_s"]
    print(f"mean JPEG size {bound['mean_jpeg_bytes'] / 1024:.1f} KiB")
    python_cpu = table["Python iterator (per-episode loop, eager decode)"]["cpu_ms_per_clip"]
    print("relative to the references (wall clips/s; in brackets by CPU time per clip, which "
          "other load on the machine disturbs less):")
    for name, r in results:
      if name.startswith("pipeline"):
        print(f"  {name:50s} {100 * r['clips_per_s'] / bound['clips_per_s']:4.0f}% "
              f"({100 * bound['cpu_ms_per_clip'] / r['cpu_ms_per_clip']:3.0f}%) of the decode "
              f"bound, {r['clips_per_s'] / python:4.1f}x "
              f"({python_cpu / r['cpu_ms_per_clip']:4.1f}x) the Python iterator")


if __name__ == "__main__":
  main()
