"""Bad data: every documented failure mode has tested behaviour and nothing hangs.

Datasets are written with the synthetic generator (DROID format, small frames) and then damaged:
NaN/inf states, truncated JPEGs, too-short and malformed episodes are skipped and counted; a
truncated or corrupt shard fails with an error naming the file; a dataset whose every episode is
filtered ends (also when repeating forever) and batching it is an 'empty split' error. Also proves
that `skip` drops clips before their JPEGs are decoded.
"""
import numpy as np
import pytest
import tensorflow as tf

from vjepa_jax.data import droid
from vjepa_jax.data import synthetic

HW = (48, 64)


def _episodes(n, steps=40, seed=0):
  rng = np.random.default_rng(seed)
  texture = synthetic.table_texture(rng)
  return [synthetic.make_episode(rng, i, steps, HW, texture=texture) for i in range(n)]


def _write(tmp_path, eps, shards=2):
  out = tmp_path / "droid" / "1.0.0"
  paths = synthetic.write_dataset(str(out), eps, num_shards=shards, image_hw=HW)
  return str(out), paths


def _cfg(path, **overrides):
  cfg = droid.default_config()
  cfg.update(dict(path=path, process_index=0, process_count=1, split="all", num_epochs=1,
                  deterministic=True, shuffle=False, image_size=16, sampling="sliding"))
  cfg.update(overrides)
  return cfg


def _run(cfg, counters=None):
  return list(droid.make_clip_dataset(cfg, counters=counters).as_numpy_iterator())


def test_nonfinite_states_skip_the_episode(tmp_path):
  eps = _episodes(3)
  eps[1]["observation/cartesian_position"][5, 3] = np.nan
  eps[2]["observation/gripper_position"][7, 0] = np.inf
  path, _ = _write(tmp_path, eps)
  counters = droid.FilterCounters()
  clips = _run(_cfg(path), counters)
  assert {c["episode_id"].decode() for c in clips} == {eps[0]["file_path"]}
  assert counters.as_dict()["nonfinite_state"] == 2
  assert all(np.isfinite(c["states"]).all() and np.isfinite(c["actions"]).all() for c in clips)


def test_truncated_jpeg_skips_the_episode(tmp_path):
  eps = _episodes(3)
  jpeg = eps[0]["images"]["exterior_image_1_left"][10]
  eps[0]["images"]["exterior_image_1_left"][10] = jpeg[:len(jpeg) // 2]
  eps[1]["images"]["exterior_image_1_left"][3] = b""
  path, _ = _write(tmp_path, eps)
  counters = droid.FilterCounters()
  clips = _run(_cfg(path), counters)
  assert {c["episode_id"].decode() for c in clips} == {eps[2]["file_path"]}
  assert counters.as_dict()["bad_jpeg"] == 2


def test_damaged_unused_camera_is_ignored(tmp_path):
  """Only the cameras a clip can use are checked (and decoded)."""
  eps = _episodes(2)
  eps[0]["images"]["wrist_image_left"][4] = b"broken"
  path, _ = _write(tmp_path, eps)
  assert len({c["episode_id"] for c in _run(_cfg(path))}) == 2


def test_short_and_malformed_episodes_are_counted(tmp_path):
  eps = _episodes(3)
  short = _episodes(1, steps=12, seed=1)[0]
  short["file_path"] = "gs://synthetic/droid/X/success/short/trajectory.h5"
  eps[1]["images"]["exterior_image_1_left"] = eps[1]["images"]["exterior_image_1_left"][:-3]
  path, _ = _write(tmp_path, eps + [short])
  counters = droid.FilterCounters()
  clips = _run(_cfg(path), counters)
  assert {c["episode_id"].decode() for c in clips} == {eps[0]["file_path"], eps[2]["file_path"]}
  counts = counters.as_dict()
  assert counts["too_short"] == 1 and counts["malformed"] == 1 and counts["episodes_kept"] == 2


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_shard_fails_naming_the_file(tmp_path, damage):
  """A truncated or corrupt shard raises an error whose message names the shard; no hang."""
  path, shards = _write(tmp_path, _episodes(4), shards=2)
  data = open(shards[1], "rb").read()
  if damage == "truncate":
    data = data[:len(data) * 2 // 3]
  else:
    data = bytearray(data)
    data[len(data) // 2] ^= 0xFF
    data = bytes(data)
  with open(shards[1], "wb") as f:
    f.write(data)
  with pytest.raises(tf.errors.InvalidArgumentError, match="Corrupt or truncated TFRecord shard"
                     ) as err:
    _run(_cfg(path))
  assert shards[1].split("/")[-1] in str(err.value)


def test_everything_filtered_ends_and_batching_fails_clearly(tmp_path):
  """All episodes too short: the stream ends even with num_epochs=None (repeat forever), and
  batch_iterator reports an empty split instead of blocking."""
  path, _ = _write(tmp_path, _episodes(2, steps=10))
  cfg = _cfg(path, num_epochs=None, shuffle=True)
  assert _run(cfg) == []
  with pytest.raises(ValueError, match="empty split"):
    next(droid.batch_iterator(droid.make_clip_dataset(cfg), 2))


def test_skip_drops_clips_before_decoding(tmp_path):
  """Frames 0-3 decode with an error but pass the JPEG marker check: reading from the start
  fails, while skipping the 4 windows that contain them never decodes them."""
  eps = _episodes(1)
  for t in range(4):
    eps[0]["images"]["exterior_image_1_left"][t] = b"\xff\xd8" + b"\x00" * 64 + b"\xff\xd9"
  path, _ = _write(tmp_path, eps, shards=1)
  cfg = _cfg(path, frames_per_clip=2, frame_step=1, clip_stride=1)
  with pytest.raises(tf.errors.InvalidArgumentError):
    _run(cfg)
  resumed = list(droid.make_clip_dataset(cfg, skip=4).as_numpy_iterator())
  assert [int(c["step_index"][0]) for c in resumed] == list(range(4, 39))
