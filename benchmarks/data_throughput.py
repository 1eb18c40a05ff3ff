"""Input pipeline throughput: clips/s, CPU time and peak RSS next to decode bounds.

  python benchmarks/data_throughput.py [--data TFDS_DIR] [--lerobot LEROBOT_ROOT] [--clips 600]

RLDS (DROID) part. Without --data, a synthetic DROID-format dataset (180x320 frames, three
cameras) is generated in a temporary directory. Each measurement runs in its own process (so
peak RSS is its own) and times `--clips` clips after a warm-up batch:
- pipeline: `droid.make_clip_dataset` + `droid.batch_iterator` (batches of 8), official recipe
  (8 frames every 4 steps, random window per episode visit, "ac" crop to 256), and with
  `clips_per_visit=4`, with sliding windows, and with sliding windows and no host resize
  (180x243 frames out, resized on the accelerator);
- decode bound: the same number of `tf.io.decode_jpeg` calls (8 per clip) in a tight parallel
  tf.data loop over JPEG strings already in memory, no crop, resize, parsing or I/O;
- Python iterator: a per-episode Python loop in the style of a hand-written loader (protobuf
  parse of each episode, NumPy windows, per-frame eager decode and resize, scipy pose deltas);
- rss: the pipeline with sliding windows and a 10,000-clip shuffle buffer, run past the fill.

LeRobot part. Without --lerobot, the same scene is written as a LeRobot v3.0 dataset (AV1, g=2,
crf 30: LeRobot's encoder defaults; 180x320) with `--format lerobot`. Measured, on
`--workers` decoding processes (default 2, one per core):
- pipeline: `data.batches(cfg, 8)` on the grain pipeline, official recipe (8 frames every 4
  steps, one random window per episode visit, camera exterior_image_1_left), without host resize
  (the training default: 180x243 frames out) and with the host resize to 256x256;
- mp4 decode bound: the same frames (the same files and timestamps: 8 per clip) decoded with
  PyAV alone - seek to the keyframe before each frame, decode to it, convert to RGB - by as many
  processes in a tight loop: no grain, parquet, crop, resize, batching or inter-process copies.
CPU time and RSS of a run include its worker processes (sampled from /proc every 50 ms; peak RSS
is the largest sum over the process tree).
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


class _TreeSampler:
  """Samples CPU time and RSS of this process and its children from /proc."""

  def __init__(self, period: float = 0.05):
    import threading
    self.period = period
    self.cpu = {}  # pid -> last seen user + system seconds
    self.peak_rss = 0
    self.rss_trace = []
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)
    self._ticks = os.sysconf("SC_CLK_TCK")
    self._page = os.sysconf("SC_PAGE_SIZE")

  def _tree(self):
    pids, frontier = [os.getpid()], [os.getpid()]
    while frontier:
      pid = frontier.pop()
      kids = []
      try:
        for task in os.listdir(f"/proc/{pid}/task"):  # children are listed per thread
          with open(f"/proc/{pid}/task/{task}/children") as f:
            kids.extend(int(k) for k in f.read().split())
      except OSError:
        pass
      pids.extend(kids)
      frontier.extend(kids)
    return pids

  def sample(self):
    rss = 0
    for pid in self._tree():
      try:
        with open(f"/proc/{pid}/stat") as f:
          fields = f.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/statm") as f:
          rss += int(f.read().split()[1]) * self._page
      except OSError:
        continue
      self.cpu[pid] = (int(fields[11]) + int(fields[12])) / self._ticks
    self.peak_rss = max(self.peak_rss, rss)
    self.rss_trace.append(rss)

  def _run(self):
    while not self._stop.wait(self.period):
      self.sample()

  def start(self):
    self.sample()
    self._thread.start()
    return self

  def stop(self):
    self._stop.set()
    self._thread.join()
    self.sample()

  def cpu_s(self) -> float:
    return sum(self.cpu.values())


def _lerobot_config(path: str, workers: int, resize: bool):
  from vjepa_jax import data
  return data.config_for(path, process_index=0, process_count=1, split="all",
                         num_workers=workers, resize_on_host=resize,
                         camera="observation.images.exterior_image_1_left")


def worker_lerobot(args) -> dict:
  from vjepa_jax import data
  cfg = _lerobot_config(args.data, args.workers, bool(args.host_resize))
  sampler = _TreeSampler().start()
  start = time.perf_counter()
  it = data.batches(cfg, 8)
  next(it)
  first = time.perf_counter() - start
  sampler.sample()
  cpu0, t0 = sampler.cpu_s(), time.perf_counter()
  rss_start = sampler.rss_trace[-1]
  done = 0
  while done < args.clips:
    done += len(next(it)["video"])
  elapsed = time.perf_counter() - t0
  sampler.sample()
  cpu = sampler.cpu_s() - cpu0
  rss_end = sampler.rss_trace[-1]
  it.close()
  sampler.stop()
  return {"clips_per_s": done / elapsed, "cpu_ms_per_clip": 1000 * cpu / done,
          "first_batch_s": first, "tree_peak_rss_mb": sampler.peak_rss / 2**20,
          "rss_after_warmup_mb": rss_start / 2**20, "rss_at_end_mb": rss_end / 2**20}


def _bound_targets(path: str, clips: int, seed: int = 0) -> list[tuple[str, list[float]]]:
  """(mp4 path, 8 timestamps) of `clips` random official-recipe windows (as the pipeline)."""
  from vjepa_jax.data import lerobot
  meta = lerobot.open_dataset(path)
  cam = "observation.images.exterior_image_1_left"
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(clips):
    ep = meta.episodes[rng.integers(len(meta.episodes))]
    start = rng.integers(0, ep.length - 28)
    rel, offset, _ = ep.videos[cam]
    out.append((str(meta.path(rel)), [offset + (start + 4 * k) / meta.fps for k in range(8)]))
  return out


def _decode_targets(targets, barrier, queue):
  import av
  containers = {}
  barrier.wait()
  start = time.perf_counter()
  cpu = _cpu_s()
  for path, times in targets:
    if path not in containers:
      containers[path] = av.open(path)
      containers[path].streams.video[0].thread_count = 1
    c = containers[path]
    s = c.streams.video[0]
    tb = float(s.time_base)
    for t in times:
      c.seek(int(round(t / tb)), stream=s, backward=True, any_frame=False)
      for frame in c.decode(s):
        if frame.pts * tb >= t - 1e-4:
          frame.to_ndarray(format="rgb24")
          break
  queue.put((time.perf_counter() - start, _cpu_s() - cpu))


def worker_mp4bound(args) -> dict:
  import multiprocessing as mp
  ctx = mp.get_context("spawn")
  targets = _bound_targets(args.data, args.clips)
  barrier, queue = ctx.Barrier(args.workers + 1), ctx.Queue()
  procs = [ctx.Process(target=_decode_targets, args=(targets[i::args.workers], barrier, queue))
           for i in range(args.workers)]
  for p in procs:
    p.start()
  sampler = _TreeSampler().start()
  barrier.wait()
  results = [queue.get() for _ in procs]
  for p in procs:
    p.join()
  sampler.stop()
  wall = max(r[0] for r in results)
  cpu = sum(r[1] for r in results)
  return {"clips_per_s": len(targets) / wall, "cpu_ms_per_clip": 1000 * cpu / len(targets),
          "tree_peak_rss_mb": sampler.peak_rss / 2**20}


WORKERS = {"pipeline": worker_pipeline, "decode": worker_decode, "python": worker_python,
           "rss": worker_rss, "lerobot": worker_lerobot, "mp4bound": worker_mp4bound}


def _run_worker(mode: str, data: str, clips: int, **extra) -> dict:
  cmd = [sys.executable, os.path.abspath(__file__), "--worker", mode, "--data", data,
         "--clips", str(clips)]
  for key, value in extra.items():
    cmd += [f"--{key.replace('_', '-')}", str(value)]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
  return json.loads(out.stdout.strip().splitlines()[-1])


def _rlds_part(args, tmp: str) -> None:
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


def _lerobot_part(args, tmp: str) -> None:
  data = args.lerobot
  if not data:
    from vjepa_jax.data import synthetic
    data = os.path.join(tmp, "lerobot_synth")
    start = time.perf_counter()
    summary = synthetic.generate_with(data, "lerobot", episodes=args.episodes, steps=(150, 250),
                                      codec=args.codec, fps=15)
    mp4 = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(
        os.path.join(data, "videos", "observation.images.exterior_image_1_left")) for f in fs)
    print(f"synthetic LeRobot v3.0 dataset: {summary['episodes']} episodes, {summary['frames']} "
          f"frames, 180x320 {args.codec} (g=2), {mp4 / 2**20:.1f} MiB per camera "
          f"({time.perf_counter() - start:.1f} s)")
  extra = {"workers": args.workers}
  runs = [("mp4 decode bound (PyAV seek + decode + RGB, 8/clip)", "mp4bound", {}),
          ("LeRobot pipeline, no host resize (180x243 out)", "lerobot", {"host_resize": 0}),
          ("LeRobot pipeline, host resize to 256", "lerobot", {"host_resize": 1})]
  bound_name = runs[0][0]
  results = {name: [] for name, _, _ in runs}
  # The runs alternate, so load from other jobs on the machine hits them alike; each ratio
  # compares a pipeline run with the bound run next to it.
  for rep in range(args.repeats):
    for name, mode, more in runs:
      r = _run_worker(mode, data, args.clips, **extra, **more)
      results[name].append(r)
      print(f"[{rep + 1}/{args.repeats}] {name:52s} {r['clips_per_s']:7.1f} clips/s "
            f"{r['cpu_ms_per_clip']:6.2f} CPU-ms/clip peak RSS {r['tree_peak_rss_mb']:5.0f} MB "
            f"(process tree)", flush=True)
      if mode == "lerobot":
        print(f"{'':58s} RSS {r['rss_after_warmup_mb']:.0f} MB after the first batch, "
              f"{r['rss_at_end_mb']:.0f} MB after {args.clips} more clips; first batch "
              f"{r['first_batch_s']:.1f} s")
  med = lambda xs: float(np.median(xs))
  print(f"medians over {args.repeats} alternating repeats, {args.workers} decoding processes:")
  for name, rs in results.items():
    line = (f"  {name:52s} {med([r['clips_per_s'] for r in rs]):7.1f} clips/s "
            f"{med([r['cpu_ms_per_clip'] for r in rs]):6.2f} CPU-ms/clip, peak RSS "
            f"{max(r['tree_peak_rss_mb'] for r in rs):5.0f} MB")
    if name != bound_name:
      wall = med([r["clips_per_s"] / b["clips_per_s"] for r, b in zip(rs, results[bound_name])])
      cpu = med([b["cpu_ms_per_clip"] / r["cpu_ms_per_clip"]
                 for r, b in zip(rs, results[bound_name])])
      line += f"; {100 * wall:.0f}% of the bound ({100 * cpu:.0f}% by CPU time)"
    print(line)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data", default="", help="TFDS version dir (default: generate one)")
  parser.add_argument("--lerobot", default="", help="LeRobot root (default: generate one)")
  parser.add_argument("--clips", type=int, default=600, help="clips timed per measurement")
  parser.add_argument("--episodes", type=int, default=40, help="synthetic episodes")
  parser.add_argument("--worker", default="", choices=("", *WORKERS))
  parser.add_argument("--sampling", default="random")
  parser.add_argument("--shuffle-buffer", type=int, default=256)
  parser.add_argument("--clips-per-visit", type=int, default=1)
  parser.add_argument("--no-host-resize", type=int, default=0, help="1: resize_on_host=False")
  parser.add_argument("--host-resize", type=int, default=0, help="LeRobot: 1 = resize on host")
  parser.add_argument("--workers", type=int, default=2, help="LeRobot decoding processes")
  parser.add_argument("--repeats", type=int, default=3, help="LeRobot: alternating repeats")
  parser.add_argument("--codec", default="av1", choices=("av1", "h264"),
                      help="codec of the generated LeRobot dataset")
  parser.add_argument("--skip-rss", action="store_true", help="skip the 10k-buffer RSS run")
  parser.add_argument("--only", default="", choices=("", "rlds", "lerobot"),
                      help="run one part only")
  args = parser.parse_args()
  if args.worker:
    result = WORKERS[args.worker](args)
    result["peak_rss_mb"] = _peak_rss_mb()
    print(json.dumps(result))
    return
  with tempfile.TemporaryDirectory() as tmp:
    if args.only in ("", "rlds"):
      _rlds_part(args, tmp)
    if args.only in ("", "lerobot"):
      _lerobot_part(args, tmp)


if __name__ == "__main__":
  main()
