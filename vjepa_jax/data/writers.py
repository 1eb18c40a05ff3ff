"""Write robot episodes as RLDS/TFDS or LeRobot datasets that the readers (and their tools) open.

  from vjepa_jax.data import writers
  episode = {
      "frames": {"exterior_image_1_left": video},   # uint8 [T, H, W, 3] per camera
      "states": states,                             # float [T, A], laid out as the spec says
      "actions": actions,                           # optional float [T, A'] (one per step)
      "language": "put the cube in the bowl",       # optional
      "success": True,                              # optional (default True)
      "episode_id": "run3/episode_000007",          # optional
  }
  writers.write_rlds("out/my_robot/1.0.0", [episode, ...], spec="droid")
  writers.write_lerobot("out/my_robot_lerobot", [episode, ...], fps=15, codec="h264")

`write_rlds` lays the states out as the spec (a preset name, dict or `Spec`) reads them back
(quaternions, gripper ranges and shared keys included) and writes JPEG frames, the standard RLDS
fields (is_first / is_last / is_terminal, reward = 1 on the last step of a success, discount),
the language, episode id and success where the spec names keys for them, and the TFDS
`dataset_info.json` / `features.json`. `write_lerobot` writes a LeRobot v3.0 (or v2.1) dataset:
`meta/info.json`, the episode index, data parquet files and one mp4 per camera and file, encoded
with PyAV (H.264 or AV1, yuv420p); states go to `observation.state` with the spec's dimension
names, actions (if given) to `action`, the outcome to a per-frame `next.success` column.
"""
from collections.abc import Mapping, Sequence
import fractions
import json
import os

import numpy as np

from vjepa_jax.data import layout
from vjepa_jax.data import specs as specs_lib

CODECS = {"h264": "libx264", "av1": "libsvtav1"}
LEROBOT_VERSIONS = ("v3.0", "v2.1")
_TFDS = "tensorflow_datasets.core.features."


def _check_episode(ep: Mapping, i: int) -> int:
  for key in ("frames", "states"):
    if key not in ep:
      raise ValueError(f"episode {i} lacks {key!r}; an episode has 'frames' {{camera: uint8 "
                       "[T, H, W, 3]}, 'states' [T, A] and optional 'actions', 'language', "
                       "'success', 'episode_id'")
  n = len(ep["states"])
  if not ep["frames"]:
    raise ValueError(f"episode {i} has no camera in 'frames'")
  for cam, video in ep["frames"].items():
    video = np.asarray(video)
    if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
      raise ValueError(f"episode {i} camera {cam!r}: frames must be uint8 [T, H, W, 3], got "
                       f"{video.dtype} {video.shape}")
    if len(video) != n:
      raise ValueError(f"episode {i} camera {cam!r} has {len(video)} frames for {n} states")
  actions = ep.get("actions")
  if actions is not None and len(actions) not in (n, n - 1):
    raise ValueError(f"episode {i}: {len(actions)} actions for {n} states (expected {n} or "
                     f"{n - 1})")
  return n


def _per_step_actions(ep: Mapping, n: int) -> np.ndarray | None:
  actions = ep.get("actions")
  if actions is None:
    return None
  actions = np.asarray(actions, np.float32)
  if len(actions) == n - 1:  # One action per transition: the last step repeats no command.
    actions = np.concatenate([actions, np.zeros_like(actions[:1])])
  return actions


# -- RLDS / TFDS --------------------------------------------------------------------------------

def features_dict(tree: dict) -> dict:
  """Nested {name: feature JSON or subtree} -> a TFDS FeaturesDict JSON."""
  features = {k: v if "pythonClassName" in v else features_dict(v) for k, v in tree.items()}
  return {"featuresDict": {"features": features},
          "pythonClassName": _TFDS + "features_dict.FeaturesDict"}


def nest(flat: dict) -> dict:
  """{"a/b": feature JSON} -> nested FeaturesDict JSON."""
  tree: dict = {}
  for key, feature in flat.items():
    *parents, leaf = key.split("/")
    node = tree
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = feature
  return features_dict(tree)


def tensor_feature(shape: Sequence[int], dtype: str, description: str = "") -> dict:
  if not shape:
    return {"description": description, "pythonClassName": _TFDS + "scalar.Scalar",
            "tensor": {"dtype": dtype, "encoding": "none", "shape": {}}}
  return {"description": description, "pythonClassName": _TFDS + "tensor_feature.Tensor",
          "tensor": {"dtype": dtype, "encoding": "none",
                     "shape": {"dimensions": [str(s) for s in shape]}}}


def text_feature(description: str = "") -> dict:
  return {"description": description, "pythonClassName": _TFDS + "text_feature.Text", "text": {}}


def image_feature(hw: Sequence[int], description: str = "") -> dict:
  return {"description": description, "pythonClassName": _TFDS + "image_feature.Image",
          "image": {"dtype": "uint8", "encodingFormat": "jpeg",
                    "shape": {"dimensions": [str(hw[0]), str(hw[1]), "3"]}}}


def steps_feature(step: dict) -> dict:
  return {"pythonClassName": _TFDS + "dataset_feature.Dataset",
          "sequence": {"feature": nest(step), "length": "-1"}}


def dataset_info_json(name: str, version: str, shard_lengths: Sequence[int], num_bytes: int,
                      description: str = "Dataset written by vjepa_jax.data.writers.") -> dict:
  return {
      "citation": "",
      "description": description,
      "fileFormat": "tfrecord",
      "moduleName": "vjepa_jax.data.writers",
      "name": name,
      "releaseNotes": {version: description},
      "splits": [{"filepathTemplate": "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
                  "name": "train", "numBytes": str(num_bytes),
                  "shardLengths": [str(n) for n in shard_lengths]}],
      "version": version,
  }


def write_tfrecords(out_dir: str, serialized: Sequence[bytes], features: dict, name: str,
                    version: str, num_shards: int = 1) -> list[str]:
  """Writes serialized episodes round-robin into shards plus the TFDS json files; returns the
  shard paths."""
  import tensorflow as tf  # Only RLDS writing needs TensorFlow.
  if not 1 <= num_shards <= max(len(serialized), 1):
    raise ValueError(f"num_shards must be in [1, {len(serialized)}], got {num_shards}")
  tf.io.gfile.makedirs(out_dir)
  paths, lengths, total = [], [], 0
  for s in range(num_shards):
    path = os.path.join(out_dir, f"{name}-train.tfrecord-{s:05d}-of-{num_shards:05d}")
    shard = serialized[s::num_shards]
    with tf.io.TFRecordWriter(path) as writer:
      for record in shard:
        writer.write(record)
    paths.append(path)
    lengths.append(len(shard))
    total += tf.io.gfile.stat(path).length
  with tf.io.gfile.GFile(os.path.join(out_dir, "features.json"), "w") as f:
    json.dump(features, f, indent=2)
  with tf.io.gfile.GFile(os.path.join(out_dir, "dataset_info.json"), "w") as f:
    json.dump(dataset_info_json(name, version, lengths, total), f, indent=2)
  return paths


def _rlds_key(key: str) -> str:
  return key if key.startswith("episode_metadata/") else "steps/" + key


def _episode_id(spec: specs_lib.Spec, ep: Mapping, i: int) -> str:
  base = ep.get("episode_id") or f"episode_{i:06d}"
  success = (spec.success or {})
  if success.get("regex") and success.get("key") == spec.episode_id:
    # The outcome lives only in the id (DROID's file path): put it where the regex looks.
    word = "success" if ep.get("success", True) else "failure"
    return f"{spec.name}/{word}/{base}"
  return base


def write_rlds(out_dir: str, episodes: Sequence[Mapping], spec="droid", *, name: str = "",
               version: str = "1.0.0", num_shards: int = 1, jpeg_quality: int = 90) -> dict:
  """Writes `episodes` as an RLDS/TFDS version directory laid out as `spec` reads it.

  Args:
    out_dir: the version directory to create (e.g. `.../my_robot/1.0.0`).
    episodes: episode dicts (module docstring); states `[T, A]` in the spec's model layout
      (pose: x, y, z, roll, pitch, yaw[, gripper closedness]).
    spec: an RLDS spec (preset name, dict or `Spec`).
    name: builder name in dataset_info.json (default: the spec's name; "bridge" must stay
      "bridge" for the preset guess).
    version, num_shards, jpeg_quality: TFDS version string, shard count, JPEG quality.

  Returns:
    {"path", "episodes", "steps", "shards"}.
  """
  import tensorflow as tf  # Only RLDS writing needs TensorFlow.
  spec = specs_lib.load(spec)
  if spec.format != "rlds":
    raise ValueError(f"spec {spec.name!r} is a {spec.format} spec; write_rlds needs an rlds one")
  if not episodes:
    raise ValueError("no episodes to write")
  lengths = [_check_episode(ep, i) for i, ep in enumerate(episodes)]
  cams = list(episodes[0]["frames"])
  missing = [c for c in spec.cameras if c not in cams]
  if missing:
    raise ValueError(f"spec {spec.name!r} reads camera(s) {missing}; the episodes have {cams}")
  features = {}
  records = []
  for i, (ep, n) in enumerate(zip(episodes, lengths)):
    if list(ep["frames"]) != cams:
      raise ValueError(f"episode {i} has cameras {list(ep['frames'])}, episode 0 has {cams}")
    raw = layout.split_states(spec, np.asarray(ep["states"]))
    actions = _per_step_actions(ep, n)
    if spec.stored_actions:
      if actions is None:
        raise ValueError(f"spec {spec.name!r} reads stored actions; episode {i} has none")
      stored = {}
      col = 0
      for key in spec.action_keys():
        width = key.width(None) or actions.shape[1] - col
        stored.setdefault(key.name, []).append(actions[:, col:col + width])
        col += width
      raw.update({k: np.concatenate(v, 1) for k, v in stored.items()})
    elif actions is not None:
      raw["action"] = actions
    floats = lambda x: tf.train.Feature(float_list=tf.train.FloatList(
        value=np.asarray(x, np.float32).reshape(-1)))
    ints = lambda x: tf.train.Feature(int64_list=tf.train.Int64List(value=list(x)))
    strings = lambda x: tf.train.Feature(bytes_list=tf.train.BytesList(value=list(x)))
    feats = {}
    for key, values in raw.items():
      feats[_rlds_key(key)] = floats(values)
      features[key] = tensor_feature([values.shape[1]], "float32")
    for cam in cams:
      video = np.asarray(ep["frames"][cam])
      feats["steps/observation/" + cam] = strings(
          [tf.io.encode_jpeg(f, quality=jpeg_quality).numpy() for f in video])
      features["observation/" + cam] = image_feature(video.shape[1:3])
    last = [0] * (n - 1) + [1]
    success = bool(ep.get("success", True))
    feats["steps/is_first"] = ints([1] + [0] * (n - 1))
    feats["steps/is_last"] = ints(last)
    feats["steps/is_terminal"] = ints(last)
    feats["steps/reward"] = floats(np.array(last) * float(success))
    feats["steps/discount"] = floats(np.ones(n))
    for key, dtype in (("is_first", "bool"), ("is_last", "bool"), ("is_terminal", "bool"),
                       ("reward", "float32"), ("discount", "float32")):
      features[key] = tensor_feature([], dtype)
    text_keys = {}
    if spec.language:
      text_keys[spec.language] = ep.get("language", "")
    if spec.episode_id:
      text_keys[spec.episode_id] = _episode_id(spec, ep, i)
    succ = spec.success or {}
    if succ.get("key") and succ.get("key") != spec.episode_id:
      if succ.get("regex"):
        text_keys[succ["key"]] = "success" if success else "failure"
      else:
        key = succ["key"]
        value = [int(success)] if key.startswith("episode_metadata/") else \
            [0] * (n - 1) + [int(success)]
        feats[_rlds_key(key)] = ints(value)
        features[key] = tensor_feature([], "bool")
    for key, text in text_keys.items():
      count = 1 if key.startswith("episode_metadata/") else n
      feats[_rlds_key(key)] = strings([str(text).encode()] * count)
      features[key] = text_feature()
    example = tf.train.Example(features=tf.train.Features(feature=feats))
    records.append(example.SerializeToString())
  step = {k: v for k, v in features.items() if not k.startswith("episode_metadata/")}
  tree = {"steps": steps_feature(step)}
  meta = {k[len("episode_metadata/"):]: v for k, v in features.items()
          if k.startswith("episode_metadata/")}
  if meta:
    tree["episode_metadata"] = meta
  paths = write_tfrecords(out_dir, records, features_dict(tree), name or spec.name, version,
                          num_shards)
  return {"path": out_dir, "episodes": len(episodes), "steps": int(sum(lengths)),
          "shards": len(paths)}


# -- LeRobot ------------------------------------------------------------------------------------

def _camera_key(cam: str) -> str:
  return cam if cam.startswith("observation.") else "observation.images." + cam


class _VideoFile:
  """One mp4 holding consecutive episodes of one camera, encoded as one continuous stream."""

  def __init__(self, path: str, hw: Sequence[int], fps: int, codec: str, crf: int | None,
               gop: int):
    import av  # Only video writing needs PyAV.
    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its banner unless told not to.
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # faststart: the index goes first, as LeRobot writes it (readers need not seek to the end).
    self.container = av.open(path, "w", options={"movflags": "faststart"})
    self.stream = self.container.add_stream(CODECS[codec], rate=fps)
    self.stream.width, self.stream.height = int(hw[1]), int(hw[0])
    self.stream.pix_fmt = "yuv420p"
    default_crf = 30 if codec == "av1" else 18
    options = {"g": str(gop), "crf": str(default_crf if crf is None else crf)}
    if codec == "av1":
      options["preset"] = "12"
    self.stream.options = options
    self.time_base = fractions.Fraction(1, fps)
    self.frames = 0
    self._av = av

  def add(self, video: np.ndarray) -> tuple[int, int]:
    """Appends frames; returns their (first, end) frame numbers in this file."""
    start = self.frames
    for frame in video:
      vf = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
      vf.pts, vf.time_base = self.frames, self.time_base
      for packet in self.stream.encode(vf):
        self.container.mux(packet)
      self.frames += 1
    return start, self.frames

  def close(self) -> None:
    for packet in self.stream.encode():
      self.container.mux(packet)
    self.container.close()


def _fixed_list(values: np.ndarray, dtype):
  import pyarrow as pa
  values = np.asarray(values)
  flat = pa.array(values.reshape(-1).astype(dtype))
  return pa.FixedSizeListArray.from_arrays(flat, values.shape[1])


def _write_parquet(path: str, columns: dict) -> None:
  import pyarrow as pa
  import pyarrow.parquet as pq
  os.makedirs(os.path.dirname(path), exist_ok=True)
  pq.write_table(pa.table(columns), path)


def write_lerobot(root: str, episodes: Sequence[Mapping], spec="lerobot_pose", *, fps: int = 15,
                  codec: str = "h264", version: str = "v3.0", robot_type: str = "",
                  crf: int | None = None, gop: int = 2, episodes_per_file: int = 0) -> dict:
  """Writes `episodes` as a LeRobot dataset directory (v3.0 default, or v2.1).

  Args:
    root: the dataset root to create (holds `meta/`, `data/`, `videos/`).
    episodes: episode dicts (module docstring); cameras become `observation.images.<name>`.
    spec: a LeRobot spec whose state reads `observation.state` (preset name, dict or `Spec`);
      its dimension names label the state columns.
    fps: frame rate of the rows and videos (LeRobot `fps`).
    codec: "h264" (libx264) or "av1" (libsvtav1, LeRobot's default).
    version: "v3.0" (episodes concatenated per file) or "v2.1" (one parquet / mp4 per episode).
    crf, gop: encoder quality (default 18 for H.264, 30 for AV1) and keyframe interval (LeRobot
      encodes with g=2).
    episodes_per_file: v3.0 episodes per data/video file (0: all in one file).

  Returns:
    {"path", "episodes", "frames", "version", "codec"}.
  """
  spec = specs_lib.load(spec)
  if spec.format != "lerobot":
    raise ValueError(f"spec {spec.name!r} is a {spec.format} spec; write_lerobot needs a "
                     "lerobot one")
  if codec not in CODECS:
    raise ValueError(f"codec must be one of {sorted(CODECS)}, got {codec!r}")
  if version not in LEROBOT_VERSIONS:
    raise ValueError(f"version must be one of {LEROBOT_VERSIONS}, got {version!r}")
  if not episodes:
    raise ValueError("no episodes to write")
  lengths = [_check_episode(ep, i) for i, ep in enumerate(episodes)]
  cams = list(episodes[0]["frames"])
  hw = {c: np.asarray(episodes[0]["frames"][c]).shape[1:3] for c in cams}
  for c, (h, w) in hw.items():
    if h % 2 or w % 2:
      raise ValueError(f"camera {c!r}: yuv420p video needs even frame sizes, got {h}x{w}")
  raw = [layout.split_states(spec, np.asarray(ep["states"])) for ep in episodes]
  state_keys = list(raw[0])
  actions = [_per_step_actions(ep, n) for ep, n in zip(episodes, lengths)]
  has_actions = actions[0] is not None
  if any((a is not None) != has_actions for a in actions):
    raise ValueError("either every episode has 'actions' or none has")
  tasks = list(dict.fromkeys(str(ep.get("language", "")) for ep in episodes))
  per_file = episodes_per_file or len(episodes)
  if version == "v2.1":
    per_file = 1

  # A vector spec may leave its width to the data: resolve it against the episodes' states.
  spec = specs_lib.with_defaults(spec, {k: raw[0][k].shape[1] for k in state_keys})
  features = {}
  for key in state_keys:
    width = raw[0][key].shape[1]
    names = list(spec.dim_names) if width == len(spec.dim_names) else \
        [f"{key}_{j}" for j in range(width)]
    features[key] = {"dtype": "float32", "shape": [width], "names": names}
  if has_actions:
    features["action"] = {"dtype": "float32", "shape": [actions[0].shape[1]],
                          "names": [f"a{j}" for j in range(actions[0].shape[1])]}
  features["next.success"] = {"dtype": "bool", "shape": [1], "names": None}
  for c in cams:
    features[_camera_key(c)] = {
        "dtype": "video", "shape": [int(hw[c][0]), int(hw[c][1]), 3],
        "names": ["height", "width", "channels"],
        "info": {"video.height": int(hw[c][0]), "video.width": int(hw[c][1]),
                 "video.codec": codec, "video.pix_fmt": "yuv420p", "video.is_depth_map": False,
                 "video.fps": fps, "video.channels": 3, "video.g": gop, "has_audio": False}}
  for key, dtype in (("timestamp", "float32"), ("frame_index", "int64"),
                     ("episode_index", "int64"), ("index", "int64"), ("task_index", "int64")):
    features[key] = {"dtype": dtype, "shape": [1], "names": None}

  if version == "v3.0":
    data_path = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    video_path = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
  else:
    data_path = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
    video_path = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"

  episode_rows = []
  global_index = 0
  for file_index, first in enumerate(range(0, len(episodes), per_file)):
    group = range(first, min(first + per_file, len(episodes)))
    fmt = dict(chunk_index=0, file_index=file_index, episode_chunk=0, episode_index=first)
    videos = {c: _VideoFile(os.path.join(root, video_path.format(video_key=_camera_key(c),
                                                                 **fmt)),
                            hw[c], fps, codec, crf, gop) for c in cams}
    columns = {k: [] for k in features if features[k]["dtype"] != "video"}
    for i in group:
      ep, n = episodes[i], lengths[i]
      row = {"episode_index": i, "tasks": [str(ep.get("language", ""))], "length": n,
             "data/chunk_index": 0, "data/file_index": file_index,
             "dataset_from_index": global_index, "dataset_to_index": global_index + n,
             "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0}
      for c in cams:
        start, end = videos[c].add(np.asarray(ep["frames"][c]))
        row[f"videos/{_camera_key(c)}/chunk_index"] = 0
        row[f"videos/{_camera_key(c)}/file_index"] = file_index
        row[f"videos/{_camera_key(c)}/from_timestamp"] = start / fps
        row[f"videos/{_camera_key(c)}/to_timestamp"] = end / fps
      episode_rows.append(row)
      for key in state_keys:
        columns[key].append(raw[i][key])
      if has_actions:
        columns["action"].append(actions[i])
      columns["next.success"].append(
          np.arange(n) == n - 1 if ep.get("success", True) else np.zeros(n, bool))
      columns["timestamp"].append((np.arange(n) / fps).astype(np.float32))
      columns["frame_index"].append(np.arange(n, dtype=np.int64))
      columns["episode_index"].append(np.full(n, i, np.int64))
      columns["index"].append(np.arange(global_index, global_index + n, dtype=np.int64))
      columns["task_index"].append(np.full(n, tasks.index(str(ep.get("language", ""))),
                                           np.int64))
      global_index += n
    for v in videos.values():
      v.close()
    table = {}
    for key, parts in columns.items():
      values = np.concatenate(parts)
      table[key] = _fixed_list(values, np.float32) if values.ndim == 2 else values
    _write_parquet(os.path.join(root, data_path.format(**fmt)), table)

  info = {
      "codebase_version": version, "robot_type": robot_type or spec.name,
      "total_episodes": len(episodes), "total_frames": int(sum(lengths)),
      "total_tasks": len(tasks), "chunks_size": 1000, "fps": fps,
      "splits": {"train": f"0:{len(episodes)}"}, "data_path": data_path,
      "video_path": video_path, "features": features}
  if version == "v3.0":
    info.update(data_files_size_in_mb=100, video_files_size_in_mb=200)
  else:
    info.update(total_chunks=1, total_videos=len(episodes) * len(cams))
  os.makedirs(os.path.join(root, "meta"), exist_ok=True)
  with open(os.path.join(root, "meta", "info.json"), "w") as f:
    json.dump(info, f, indent=4)
  groups = {k: np.concatenate([r[k] for r in raw]) for k in state_keys}
  if has_actions:
    groups["action"] = np.concatenate(actions)
  _write_stats(root, groups)
  if version == "v3.0":
    import pyarrow as pa
    table = {k: [r[k] for r in episode_rows] for k in episode_rows[0]}
    table["tasks"] = pa.array(table["tasks"], pa.list_(pa.string()))
    _write_parquet(os.path.join(root, "meta", "episodes", "chunk-000", "file-000.parquet"), table)
    _write_parquet(os.path.join(root, "meta", "tasks.parquet"),
                   {"task_index": np.arange(len(tasks), dtype=np.int64), "task": tasks})
  else:
    with open(os.path.join(root, "meta", "episodes.jsonl"), "w") as f:
      for r in episode_rows:
        f.write(json.dumps({"episode_index": r["episode_index"], "tasks": r["tasks"],
                            "length": r["length"]}) + "\n")
    with open(os.path.join(root, "meta", "tasks.jsonl"), "w") as f:
      for j, t in enumerate(tasks):
        f.write(json.dumps({"task_index": j, "task": t}) + "\n")
  return {"path": root, "episodes": len(episodes), "frames": int(sum(lengths)),
          "version": version, "codec": codec}


def _write_stats(root: str, groups: Mapping[str, np.ndarray]) -> None:
  """meta/stats.json: min / max / mean / std / count per float feature."""
  stats = {}
  for key, values in groups.items():
    values = np.asarray(values, np.float64)
    stats[key] = {"min": values.min(0).tolist(), "max": values.max(0).tolist(),
                  "mean": values.mean(0).tolist(), "std": values.std(0).tolist(),
                  "count": [len(values)]}
  with open(os.path.join(root, "meta", "stats.json"), "w") as f:
    json.dump(stats, f, indent=4)
