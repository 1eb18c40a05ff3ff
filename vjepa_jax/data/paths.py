"""What a data path is: a TFDS version directory, a LeRobot root, or a clear error.

`check_path(path)` runs before anything is built and tells apart a path that does not exist,
an empty directory, the parent folder of dataset versions (it names them), and a directory that
is not a dataset. A Hugging Face hub cache folder (`datasets--org--name` with `snapshots/`) is
resolved to its current snapshot.
"""
import dataclasses

from etils import epath

TFDS_FILES = ("dataset_info.json", "features.json")
LEROBOT_INFO = "meta/info.json"


@dataclasses.dataclass(frozen=True)
class DataPath:
  path: str      # the dataset directory to read (a snapshot for hub cache folders)
  format: str    # "rlds" | "lerobot"


def _is_tfds(p: epath.Path) -> bool:
  return all((p / f).exists() for f in TFDS_FILES)


def _is_lerobot(p: epath.Path) -> bool:
  return (p / LEROBOT_INFO).exists()


def _hub_snapshot(p: epath.Path) -> epath.Path | None:
  """The snapshot a hub cache folder's refs/main points to (else its only snapshot)."""
  snapshots = p / "snapshots"
  if not snapshots.is_dir():
    return None
  ref = p / "refs" / "main"
  if ref.exists():
    candidate = snapshots / ref.read_text().strip()
    if candidate.is_dir():
      return candidate
  found = sorted(s for s in snapshots.iterdir() if s.is_dir())
  return found[-1] if len(found) == 1 else None


def _children(p: epath.Path) -> list[epath.Path]:
  return sorted(c for c in p.iterdir() if c.is_dir())


def check_path(path: str) -> DataPath:
  """The dataset at `path` and its format; ValueError saying what the path is instead."""
  if not path:
    raise ValueError("data.path is empty: set it to a TFDS version directory (e.g. "
                     ".../droid/1.0.1) or a LeRobot dataset root (holding meta/info.json)")
  p = epath.Path(path)
  if not p.exists():
    raise ValueError(f"data.path {path} does not exist")
  if not p.is_dir():
    raise ValueError(f"data.path {path} is a file, not a dataset directory (a TFDS version "
                     "directory or a LeRobot root)")
  if _is_tfds(p):
    return DataPath(str(p), "rlds")
  if _is_lerobot(p):
    return DataPath(str(p), "lerobot")
  snapshot = _hub_snapshot(p)
  if snapshot is not None and _is_lerobot(snapshot):
    return DataPath(str(snapshot), "lerobot")
  entries = sorted(c.name for c in p.iterdir())
  if not entries:
    raise ValueError(f"data.path {path} is empty")
  children = _children(p)
  versions = [c.name for c in children if _is_tfds(c)]
  if versions:
    raise ValueError(f"data.path {path} is the parent folder of dataset version directories "
                     f"{versions}: set data.path to one of them, e.g. {p / versions[-1]}")
  roots = [c.name for c in children if _is_lerobot(c)]
  if roots:
    raise ValueError(f"data.path {path} is the parent folder of LeRobot datasets {roots}: set "
                     f"data.path to one of them, e.g. {p / roots[0]}")
  nested = {c.name: [g.name for g in _children(c) if _is_tfds(g)] for c in children}
  nested = {k: v for k, v in nested.items() if v}
  if nested:
    examples = [f"{name}/{v[-1]}" for name, v in nested.items()]
    raise ValueError(f"data.path {path} is a folder of datasets {sorted(nested)}: set data.path "
                     f"to a version directory, e.g. {p / examples[0]}")
  shown = entries[:8] + (["..."] if len(entries) > 8 else [])
  raise ValueError(f"data.path {path} is not a dataset: it has neither {' + '.join(TFDS_FILES)} "
                   f"(a TFDS version directory) nor {LEROBOT_INFO} (a LeRobot root); it holds "
                   f"{shown}")
