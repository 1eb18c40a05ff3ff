"""LeRobot dataset directories (v2.1 and v3.0) read with pyarrow, without lerobot or torch.

  meta = lerobot.open_dataset(root)       # meta/info.json + episode index + tasks
  meta.features, meta.cameras, meta.fps, meta.episodes[i].videos[camera] -> (file, from, to)
  columns = meta.read_columns(["observation.state", "timestamp", ...])   # per episode arrays

v3.0 concatenates episodes: many per data parquet (rows of one episode are contiguous) and per
mp4 (episode k of a file starts at `videos/<camera>/from_timestamp`); v2.1 has one parquet and one
mp4 per episode (offset 0). A row's frame is the one at `from_timestamp + timestamp` in the
camera's file. Paths may be local or `gs://` (read through etils.epath).
"""
from collections.abc import Sequence
import dataclasses
import json

from etils import epath
import numpy as np

VERSIONS = ("v2.1", "v3.0")


@dataclasses.dataclass(frozen=True)
class Episode:
  index: int
  length: int
  data_file: str                                   # path relative to the root
  videos: dict                                     # camera -> (file, from_timestamp, to_timestamp)
  tasks: tuple[str, ...] = ()


@dataclasses.dataclass
class Meta:
  root: str
  version: str
  fps: float
  features: dict
  episodes: list[Episode]
  tasks: dict[int, str]
  info: dict

  @property
  def cameras(self) -> list[str]:
    """Video feature names, in info.json order."""
    return [k for k, f in self.features.items() if f.get("dtype") == "video"]

  @property
  def image_features(self) -> list[str]:
    return [k for k, f in self.features.items() if f.get("dtype") == "image"]

  def widths(self) -> dict[str, int]:
    """Last-axis size of every non-video feature."""
    out = {}
    for k, f in self.features.items():
      shape = f.get("shape") or [1]
      out[k] = int(np.prod(shape))
    return out

  def state_names(self, key: str = "observation.state") -> list[str]:
    names = (self.features.get(key) or {}).get("names")
    if isinstance(names, dict):  # {"motors": [...]} in some datasets
      names = next(iter(names.values()), None)
    return [str(n) for n in names] if isinstance(names, list) else []

  def path(self, relative: str) -> epath.Path:
    return epath.Path(self.root) / relative

  def read_columns(self, columns: Sequence[str],
                   episodes: Sequence[Episode] | None = None) -> dict[int, dict[str, np.ndarray]]:
    """Per-episode NumPy arrays of `columns` (rows sorted by frame_index), read once per file.

    Vectors come back `[n, D]`, scalars `[n]`. Columns absent from a file raise a ValueError
    naming the file and the columns it has.
    """
    wanted = list(dict.fromkeys([*columns, "episode_index", "frame_index"]))
    episodes = self.episodes if episodes is None else episodes
    by_file: dict[str, list[Episode]] = {}
    for ep in episodes:
      by_file.setdefault(ep.data_file, []).append(ep)
    out = {}
    for rel, eps in by_file.items():
      table = _read_parquet(self.path(rel), wanted)
      ep_col = table["episode_index"]
      for ep in eps:
        rows = np.nonzero(ep_col == ep.index)[0]
        order = np.argsort(table["frame_index"][rows], kind="stable")
        out[ep.index] = {k: v[rows[order]] for k, v in table.items()}
    return out


def _column_to_numpy(column) -> np.ndarray:
  import pyarrow as pa
  column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
  t = column.type
  if pa.types.is_fixed_size_list(t) or pa.types.is_list(t) or pa.types.is_large_list(t):
    n = len(column)
    flat = _column_to_numpy(column.flatten())
    return flat.reshape(n, -1) if n else flat.reshape(0, 0)
  if pa.types.is_struct(t):
    raise ValueError(f"column of type {t} is not a number column")
  return column.to_numpy(zero_copy_only=False)


def _read_parquet(path: epath.Path, columns: Sequence[str]) -> dict[str, np.ndarray]:
  import pyarrow.parquet as pq
  with path.open("rb") as f:
    schema = pq.read_schema(f)
    missing = [c for c in columns if c not in schema.names]
    if missing:
      raise ValueError(f"{path} lacks column(s) {missing}; it has {schema.names}")
    f.seek(0)
    table = pq.read_table(f, columns=list(columns))
  return {c: _column_to_numpy(table[c]) for c in columns}


def _read_json(path: epath.Path):
  return json.loads(path.read_text())


def _read_jsonl(path: epath.Path) -> list[dict]:
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _format(template: str, **fields) -> str:
  return template.format(**fields)


def open_dataset(root: str) -> Meta:
  """Reads `meta/` of a LeRobot dataset; ValueError for unsupported or malformed metadata."""
  base = epath.Path(root)
  info_path = base / "meta" / "info.json"
  if not info_path.exists():
    raise ValueError(f"{root} is not a LeRobot dataset: no meta/info.json")
  info = _read_json(info_path)
  version = str(info.get("codebase_version", ""))
  if version not in VERSIONS:
    raise ValueError(f"{root}: LeRobot codebase_version {version!r} is not supported; expected "
                     f"one of {VERSIONS} (convert older datasets with lerobot's converters)")
  for field in ("fps", "features", "data_path"):
    if field not in info:
      raise ValueError(f"{info_path} lacks {field!r}")
  features = info["features"]
  cameras = [k for k, f in features.items() if f.get("dtype") == "video"]
  chunks = int(info.get("chunks_size", 1000))
  if version == "v3.0":
    episodes, tasks = _episodes_v3(base, info, cameras)
  else:
    episodes, tasks = _episodes_v21(base, info, cameras, chunks)
  return Meta(str(base), version, float(info["fps"]), features, episodes, tasks, info)


def _episodes_v3(base: epath.Path, info: dict, cameras: Sequence[str]):
  files = sorted((base / "meta" / "episodes").glob("*/*.parquet"))
  if not files:
    raise ValueError(f"{base}: no meta/episodes/chunk-*/file-*.parquet (LeRobot v3.0 index)")
  import pyarrow.parquet as pq
  rows = []
  for path in files:
    with path.open("rb") as f:
      rows.extend(pq.read_table(f).to_pylist())
  episodes = []
  for r in sorted(rows, key=lambda r: r["episode_index"]):
    data_file = _format(info["data_path"], chunk_index=r["data/chunk_index"],
                        file_index=r["data/file_index"])
    videos = {}
    for cam in cameras:
      videos[cam] = (_format(info["video_path"], video_key=cam,
                             chunk_index=r[f"videos/{cam}/chunk_index"],
                             file_index=r[f"videos/{cam}/file_index"]),
                     float(r[f"videos/{cam}/from_timestamp"]),
                     float(r[f"videos/{cam}/to_timestamp"]))
    episodes.append(Episode(int(r["episode_index"]), int(r["length"]), data_file, videos,
                            tuple(r.get("tasks") or ())))
  tasks = {}
  tasks_path = base / "meta" / "tasks.parquet"
  if tasks_path.exists():
    with tasks_path.open("rb") as f:
      table = pq.read_table(f).to_pydict()
    names = table.get("task") or table.get("__index_level_0__") or []
    tasks = {int(i): str(t) for i, t in zip(table.get("task_index", []), names)}
  return episodes, tasks


def _episodes_v21(base: epath.Path, info: dict, cameras: Sequence[str], chunks: int):
  path = base / "meta" / "episodes.jsonl"
  if not path.exists():
    raise ValueError(f"{base}: no meta/episodes.jsonl (LeRobot v2.1 index)")
  episodes = []
  for r in sorted(_read_jsonl(path), key=lambda r: r["episode_index"]):
    i = int(r["episode_index"])
    chunk = i // chunks
    data_file = _format(info["data_path"], episode_chunk=chunk, episode_index=i)
    videos = {cam: (_format(info["video_path"], episode_chunk=chunk, video_key=cam,
                            episode_index=i), 0.0, None) for cam in cameras}
    episodes.append(Episode(i, int(r["length"]), data_file, videos, tuple(r.get("tasks") or ())))
  tasks = {}
  tasks_path = base / "meta" / "tasks.jsonl"
  if tasks_path.exists():
    tasks = {int(r["task_index"]): str(r["task"]) for r in _read_jsonl(tasks_path)}
  return episodes, tasks


def split_range(meta: Meta, split: str) -> set[int]:
  """Episode indices of an info.json split ("train": "0:N"); every episode if absent."""
  splits = meta.info.get("splits") or {}
  if split not in splits:
    if splits:
      raise ValueError(f"split {split!r} not in {meta.root}'s splits {sorted(splits)}")
    return {ep.index for ep in meta.episodes}
  lo, hi = (int(x) for x in str(splits[split]).split(":"))
  return set(range(lo, hi))
