"""Bad LeRobot data gets a clear error or a counted skip, never a silent wrong clip.

Each case damages one episode of a small dataset written by `writers.write_lerobot` and checks
that exactly that episode is skipped under its counter (parquet rows vs video length, timestamps
off the frame grid, NaN states, a video that does not open, too short) while the others still
give correct clips; a missing key names the keys present; a truncated mp4 whose index survives
fails at decode time naming the file; a split with no clip says how to get one.
"""
import os
import shutil

import data_samples
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vjepa_jax import data
from vjepa_jax.data import video as video_lib
from vjepa_jax.data import writers

LENGTHS = (24, 22, 26)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
  root = tmp_path_factory.mktemp("bad")
  eps = data_samples.episodes(LENGTHS)
  for version in ("v3.0", "v2.1"):
    writers.write_lerobot(str(root / version), eps, fps=15, codec="h264", version=version)
  return root


def _copy(pristine, tmp_path, version):
  dst = tmp_path / version
  shutil.copytree(pristine / version, dst)
  return dst


def _stream(path, **overrides):
  kw = dict(frames_per_clip=4, frame_step=2, image_size=16, split="all", num_workers=0,
            num_epochs=1, shuffle=False, sampling="sliding", clip_stride=2)
  kw.update(overrides)
  return data.clip_iterator(data.config_for(str(path), **kw))


def _run(path, **overrides):
  stream = _stream(path, **overrides)
  clips = list(stream)
  for c in clips:  # surviving clips are still right
    e = int(c["episode_id"].decode().rsplit("_", 1)[1])
    for frame, t in zip(c["video"], c["step_index"]):
      assert data_samples.identify(frame) == (t % 40, e % 6)
  return {int(c["episode_id"].decode().rsplit("_", 1)[1]) for c in clips}, stream.counts


def _rewrite(path, fn):
  table = pq.read_table(path).to_pydict()
  fn(table)
  schema = pq.read_schema(path)
  pq.write_table(pa.table(table, schema=schema), path)


def test_video_shorter_than_parquet_is_skipped(pristine, tmp_path):
  root = _copy(pristine, tmp_path, "v3.0")
  index = root / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
  key = "videos/observation.images.front/to_timestamp"

  def cut(table):
    table[key][1] -= 5 / 15  # episode 1's video part ends 5 frames before its rows do
  _rewrite(index, cut)
  kept, counts = _run(root)
  assert kept == {0, 2} and counts["length_mismatch"] == 1


def test_timestamps_off_grid_are_skipped(pristine, tmp_path):
  root = _copy(pristine, tmp_path, "v3.0")
  path = root / "data" / "chunk-000" / "file-000.parquet"

  def shift(table):
    table["timestamp"][LENGTHS[0] + 3] += 0.01  # a row of episode 1, 10 ms off its frame
  _rewrite(path, shift)
  kept, counts = _run(root)
  assert kept == {0, 2} and counts["off_grid"] == 1


def test_nan_states_are_skipped(pristine, tmp_path):
  root = _copy(pristine, tmp_path, "v2.1")
  path = root / "data" / "chunk-000" / "episode_000002.parquet"
  table = pq.read_table(path)
  states = table["observation.state"].combine_chunks()
  values = states.flatten().to_numpy(zero_copy_only=False).copy()
  values[9] = np.nan
  fixed = pa.FixedSizeListArray.from_arrays(pa.array(values), 7)
  pq.write_table(table.set_column(table.schema.get_field_index("observation.state"),
                                  "observation.state", fixed), path)
  kept, counts = _run(root)
  assert kept == {0, 1} and counts["nonfinite_state"] == 1


@pytest.mark.parametrize("damage", ["garbage", "missing"])
def test_video_that_does_not_open_is_skipped(pristine, tmp_path, damage):
  root = _copy(pristine, tmp_path, "v2.1")
  mp4 = root / "videos" / "chunk-000" / "observation.images.front" / "episode_000000.mp4"
  if damage == "garbage":
    mp4.write_bytes(b"\x00" * 1000)
  else:
    os.remove(mp4)
  kept, counts = _run(root)
  assert kept == {1, 2} and counts["bad_video"] == 1


def test_truncated_video_fails_naming_the_file(pristine, tmp_path):
  root = _copy(pristine, tmp_path, "v3.0")
  mp4 = root / "videos" / "observation.images.front" / "chunk-000" / "file-000.mp4"
  blob = mp4.read_bytes()
  mp4.write_bytes(blob[:len(blob) * 2 // 3])  # the index (faststart) survives, frames do not
  with pytest.raises(video_lib.VideoError, match="file-000.mp4"):
    list(_stream(root))


def test_too_short_episodes_are_counted_and_an_empty_split_names_the_fix(pristine):
  kept, counts = _run(pristine / "v3.0", frames_per_clip=12)  # 23 steps per window
  assert kept == {0, 2} and counts["too_short"] == 1
  with pytest.raises(ValueError, match=r"empty split.*data.split='all' or data.val_fraction > 0"):
    next(data.batches(data.config_for(str(pristine / "v3.0"), frames_per_clip=20,
                                      num_workers=0), 2))


def test_missing_key_names_the_keys_present(pristine):
  spec = {"name": "x", "format": "lerobot", "state": {"keys": ["observation.effort"]}}
  with pytest.raises(ValueError, match=r"lacks \['observation.effort'\].*its features: "
                                       r"\[.*'observation.state'"):
    data.config_for(str(pristine / "v3.0"), spec=spec)
  with pytest.raises(ValueError, match=r"unknown camera.*available cameras: "
                                       r"\['observation.images.front'\]"):
    data.config_for(str(pristine / "v3.0"), camera="observation.images.top")
