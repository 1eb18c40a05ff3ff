"""DROID clip pipeline against the fixture's ground truth.

Proves on `tests/fixtures/droid_tiny` (exact DROID RLDS format, per-episode ground truth): states
equal the ground-truth poses at `step_index`; actions equal the official pose deltas; windows are
counted exactly per sampling mode and never cross an episode; host splits are disjoint and cover
every episode; the held-out split is stable and disjoint from train; filters and config errors
behave as documented; `skip=n` resumes the deterministic stream exactly.
"""
import json
import pathlib
import shutil

import numpy as np
import pytest
import tensorflow as tf

from vjepa_jax.data import droid

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
DATA_DIR = FIXTURES / "droid_tiny" / "droid" / "1.0.0"


@pytest.fixture(scope="module")
def truth():
  gt = np.load(FIXTURES / "droid_tiny" / "ground_truth.npz")
  out = {}
  for i in range(int(gt["num_episodes"])):
    path = gt["episode_file_path"][i]
    path = path.decode() if isinstance(path, bytes) else str(path)
    out[path] = {
        "states": np.concatenate([gt[f"ep{i:03d}/cartesian_position"],
                                  gt[f"ep{i:03d}/gripper_position"]], axis=1),
        "stride4": gt[f"ep{i:03d}/pose_diff_stride4"],
        "idle": int(gt["episode_idle_steps"][i]),
        "success": bool(gt["episode_success"][i]),
    }
  return out


def _cfg(**overrides):
  cfg = droid.default_config()
  cfg.path = str(DATA_DIR)
  cfg.process_index, cfg.process_count = 0, 1
  cfg.split = "all"
  cfg.num_epochs = 1
  cfg.deterministic = True
  cfg.shuffle = False
  cfg.image_size = 32
  cfg.shuffle_buffer = 16
  cfg.episode_shuffle_buffer = 4
  cfg.update(overrides)
  return cfg


def _encoded(cfg):
  """Clips without JPEG decoding (everything but the video), as a list of NumPy dicts."""
  return list(droid.encoded_clip_dataset(cfg).as_numpy_iterator())


def _official_diffs(states: np.ndarray) -> np.ndarray:
  """The official poses_to_diffs formula, restated with scipy."""
  rotation = pytest.importorskip("scipy.spatial.transform").Rotation
  mats = rotation.from_euler("xyz", states[:, 3:6]).as_matrix()
  rel = rotation.from_matrix(mats[1:] @ np.transpose(mats[:-1], (0, 2, 1))).as_euler("xyz")
  return np.concatenate([states[1:, :3] - states[:-1, :3], rel, states[1:, 6:] - states[:-1, 6:]],
                        axis=1)


def _expected_sliding(length, frames, step, stride, rule="span"):
  span = frames * step + 1 if rule == "official" else (frames - 1) * step + 1
  return 0 if length < span else (length - span) // (stride * step) + 1


def test_clip_contract_and_ground_truth(truth):
  """Every decoded clip: contract dtypes/shapes; states = truth at step_index; actions = official
  deltas (and = the fixture's stride-4 deltas for windows on the stride-4 grid)."""
  clips = list(droid.make_clip_dataset(_cfg(sampling="sliding")).as_numpy_iterator())
  assert clips
  on_grid = 0
  for c in clips:
    assert c["video"].dtype == np.uint8 and c["video"].shape == (8, 32, 32, 3)
    assert c["states"].dtype == np.float32 and c["states"].shape == (8, 7)
    assert c["actions"].dtype == np.float32 and c["actions"].shape == (7, 7)
    assert c["step_index"].dtype == np.int32 and c["step_index"].shape == (8,)
    ep = truth[c["episode_id"].decode()]
    np.testing.assert_array_equal(c["states"], ep["states"][c["step_index"]].astype(np.float32))
    np.testing.assert_allclose(c["actions"], _official_diffs(ep["states"][c["step_index"]]),
                               rtol=0, atol=1e-5)
    if c["step_index"][0] % 4 == 0:
      k = c["step_index"][0] // 4
      np.testing.assert_allclose(c["actions"], ep["stride4"][k:k + 7], rtol=0, atol=1e-5)
      on_grid += 1
  assert on_grid == len(clips)  # stride 8 steps from step 0: all windows sit on the grid.


@pytest.mark.parametrize("frames, step, stride, rule", [
    (8, 4, 2, "span"), (8, 4, 1, "official"), (16, 4, 8, "span"), (4, 3, 3, "span")])
def test_sliding_window_count_and_bounds(truth, frames, step, stride, rule):
  """Sliding windows: exactly floor((T - span) / (stride * step)) + 1 per episode, starting at
  0, stride*step apart, frames step apart, all inside their episode."""
  clips = _encoded(_cfg(sampling="sliding", frames_per_clip=frames, frame_step=step,
                        clip_stride=stride, window_rule=rule))
  starts = {}
  for c in clips:
    idx = c["step_index"]
    assert (np.diff(idx) == step).all()
    length = len(truth[c["episode_id"].decode()]["states"])
    assert idx[0] >= 0 and idx[-1] < length
    starts.setdefault(c["episode_id"].decode(), []).append(int(idx[0]))
  for path, ep in truth.items():
    n = _expected_sliding(len(ep["states"]), frames, step, stride, rule)
    assert sorted(starts.get(path, [])) == [k * stride * step for k in range(n)]


def test_random_sampling_one_clip_per_episode_per_pass(truth):
  """"random": each pass gives exactly one clip per long-enough episode, start uniform in the
  allowed range; over passes the starts vary."""
  clips = _encoded(_cfg(sampling="random", num_epochs=6))
  per_episode = {}
  for c in clips:
    per_episode.setdefault(c["episode_id"].decode(), []).append(int(c["step_index"][0]))
  eligible = {p for p, ep in truth.items() if len(ep["states"]) >= 29}
  assert set(per_episode) == eligible and len(eligible) == 5
  for path, starts in per_episode.items():
    assert len(starts) == 6
    assert all(0 <= s <= len(truth[path]["states"]) - 29 for s in starts)
  longest = max(eligible, key=lambda p: len(truth[p]["states"]))
  assert len(set(per_episode[longest])) >= 3


def test_clips_per_visit(truth):
  """"random" with clips_per_visit=3: three windows per episode visit, each inside the episode."""
  clips = _encoded(_cfg(sampling="random", clips_per_visit=3, num_epochs=2))
  counts = {}
  for c in clips:
    path = c["episode_id"].decode()
    counts[path] = counts.get(path, 0) + 1
    assert c["step_index"][-1] < len(truth[path]["states"])
  assert sorted(counts.values()) == [6] * 5


def test_official_window_rule_bounds(truth):
  """window_rule="official": start in [0, T - 33], so episodes need T >= 33."""
  clips = _encoded(_cfg(sampling="random", window_rule="official", num_epochs=4))
  for c in clips:
    length = len(truth[c["episode_id"].decode()]["states"])
    assert length >= 33 and c["step_index"][0] <= length - 33


def test_short_episode_yields_no_clip_and_is_counted(truth):
  """The 23-step episode is shorter than one 29-step window: no clip, counted as too_short."""
  counters = droid.FilterCounters()
  clips = list(droid.encoded_clip_dataset(_cfg(sampling="sliding"), counters)
               .as_numpy_iterator())
  short = [p for p, ep in truth.items() if len(ep["states"]) < 29]
  assert len(short) == 1
  assert short[0] not in {c["episode_id"].decode() for c in clips}
  counts = counters.as_dict()
  assert counts["too_short"] == 1 and counts["episodes_read"] == 6
  assert counts["episodes_kept"] == 5


@pytest.mark.parametrize("count", [2, 3])
def test_host_splits_are_disjoint_and_cover(truth, count):
  """Each process reads a disjoint part of the episodes; together they cover all of them."""
  seen = []
  for index in range(count):
    clips = _encoded(_cfg(sampling="sliding", process_index=index, process_count=count,
                          frames_per_clip=2, frame_step=1))
    seen.append({c["episode_id"].decode() for c in clips})
  for a in range(count):
    assert seen[a]
    for b in range(a + 1, count):
      assert not seen[a] & seen[b]
  assert set().union(*seen) == set(truth)


def test_more_processes_than_episodes_is_a_clear_error():
  """A process that gets no episode fails with an 'empty split' error, it does not hang."""
  with pytest.raises(ValueError, match="empty split"):
    droid.encoded_clip_dataset(_cfg(process_index=6, process_count=7))


def test_val_split_is_stable_disjoint_and_host_independent(truth):
  """Train/val by file-path hash: disjoint, covering, identical across runs and host layouts."""
  def episodes(split, **kw):
    return {c["episode_id"].decode() for c in _encoded(
        _cfg(split=split, val_fraction=0.5, sampling="sliding", frames_per_clip=2,
             frame_step=1, **kw))}

  train, val = episodes("train"), episodes("val")
  assert train and val and not train & val
  assert train | val == set(truth)
  assert episodes("val") == val
  assert episodes("val", process_index=0, process_count=2) | episodes(
      "val", process_index=1, process_count=2) == val


def test_success_only_drops_failures(truth):
  """success_only keeps only '/success/' paths; the failure episode is counted."""
  counters = droid.FilterCounters()
  clips = list(droid.encoded_clip_dataset(_cfg(success_only=True), counters)
               .as_numpy_iterator())
  ids = {c["episode_id"].decode() for c in clips}
  assert ids and all("/success/" in p and truth[p]["success"] for p in ids)
  assert counters.as_dict()["not_success"] == sum(not ep["success"] for ep in truth.values())


def test_trim_idle_starts_clips_after_idle_steps(truth):
  """With trim_idle, windows start at or after the last idle step; trimmed steps are counted."""
  counters = droid.FilterCounters()
  clips = list(droid.encoded_clip_dataset(_cfg(sampling="sliding", trim_idle=True), counters)
               .as_numpy_iterator())
  firsts = {}
  for c in clips:
    path = c["episode_id"].decode()
    firsts[path] = min(firsts.get(path, 10**9), int(c["step_index"][0]))
  for path, first in firsts.items():
    assert first == truth[path]["idle"]
  kept = [p for p, ep in truth.items() if len(ep["states"]) >= 29]
  assert counters.as_dict()["idle_steps_trimmed"] == sum(truth[p]["idle"] for p in kept)


def test_camera_list_draws_per_clip():
  """A comma-separated camera list draws one camera per clip; frames come from that camera."""
  cams = ("exterior_image_1_left", "exterior_image_2_left")
  per_cam = {}
  for cam in cams:
    for c in _encoded(_cfg(sampling="sliding", camera=cam)):
      per_cam[(cam, c["episode_id"], int(c["step_index"][0]))] = list(c["jpegs"])
  used = set()
  for c in _encoded(_cfg(sampling="sliding", camera=",".join(cams))):
    key = (c["episode_id"], int(c["step_index"][0]))
    match = [cam for cam in cams if per_cam[(cam, *key)] == list(c["jpegs"])]
    assert len(match) == 1
    used.add(match[0])
  assert used == set(cams)


def test_unknown_camera_lists_available():
  with pytest.raises(ValueError, match="available cameras.*exterior_image_1_left"):
    droid.make_clip_dataset(_cfg(camera="left_mp4_path"))


def test_not_a_dataset_directory(tmp_path):
  with pytest.raises(ValueError, match="not a TFDS dataset directory"):
    droid.make_clip_dataset(_cfg(path=str(tmp_path)))


def test_missing_features_are_named(tmp_path):
  """A dataset without gripper_position fails naming that key."""
  copy = tmp_path / "1.0.0"
  shutil.copytree(DATA_DIR, copy)
  spec = json.loads((copy / "features.json").read_text())
  obs = (spec["featuresDict"]["features"]["steps"]["sequence"]["feature"]["featuresDict"]
         ["features"]["observation"]["featuresDict"]["features"])
  del obs["gripper_position"]
  (copy / "features.json").write_text(json.dumps(spec))
  with pytest.raises(ValueError, match="lacks needed features.*steps/observation/gripper_position"):
    droid.make_clip_dataset(_cfg(path=str(copy)))


def test_config_errors():
  with pytest.raises(ValueError, match="empty split"):
    droid.make_clip_dataset(_cfg(split="val", val_fraction=0.0))
  with pytest.raises(ValueError, match="sampling"):
    droid.make_clip_dataset(_cfg(sampling="uniform"))
  with pytest.raises(ValueError, match="cfg.path is empty"):
    droid.make_clip_dataset(_cfg(path=""))


def test_skip_resumes_the_deterministic_stream():
  """With shuffling, random windows, two cameras and random crops, `skip=n` yields the same
  stream minus its first n clips, and a rebuilt pipeline repeats the stream exactly."""
  cfg = _cfg(shuffle=True, sampling="random", num_epochs=3, random_resized_crop=True,
             camera="exterior_image_1_left,exterior_image_2_left", seed=5)
  full = list(droid.make_clip_dataset(cfg).as_numpy_iterator())
  again = list(droid.make_clip_dataset(cfg).as_numpy_iterator())
  resumed = list(droid.make_clip_dataset(cfg, skip=7).as_numpy_iterator())
  assert len(full) == 15 and len(resumed) == 8
  for a, b in zip(full, again):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  for a, b in zip(full[7:], resumed):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  # Another seed gives another stream, so the equalities above are not vacuous.
  other_cfg = cfg.copy_and_resolve_references()
  other_cfg.seed = 6
  other = list(droid.make_clip_dataset(other_cfg).as_numpy_iterator())
  assert [c["episode_id"] for c in other] != [c["episode_id"] for c in full] or any(
      (a["step_index"] != b["step_index"]).any() for a, b in zip(other, full))


def test_native_size_frames_without_host_resize():
  """resize_on_host=False: frames are the decoded 180x243 'ac' windows, pixel for pixel."""
  cfg = _cfg(sampling="sliding", resize_on_host=False)
  clip = next(droid.make_clip_dataset(cfg).as_numpy_iterator())
  encoded = next(droid.encoded_clip_dataset(cfg).as_numpy_iterator())
  assert clip["video"].shape == (8, 180, 243, 3)
  for frame, jpeg in zip(clip["video"], encoded["jpegs"]):
    np.testing.assert_array_equal(frame, tf.io.decode_jpeg(jpeg).numpy()[:, 38:38 + 243])
  with pytest.raises(ValueError, match="resize_on_host"):
    droid.make_clip_dataset(_cfg(resize_on_host=False, crop="hub"))


def test_batch_iterator_shapes_and_empty_error():
  """Per-process NumPy batches with drop_remainder; too few clips is an 'empty split' error."""
  ds = droid.make_clip_dataset(_cfg(sampling="sliding"))
  batches = list(droid.batch_iterator(ds, 4))
  assert len(batches) == 38 // 4
  b = batches[0]
  assert b["video"].shape == (4, 8, 32, 32, 3) and b["video"].dtype == np.uint8
  assert b["states"].shape == (4, 8, 7) and b["actions"].shape == (4, 7, 7)
  assert b["step_index"].shape == (4, 8) and b["episode_id"].dtype.kind == "S"
  with pytest.raises(ValueError, match="empty split"):
    next(droid.batch_iterator(droid.make_clip_dataset(_cfg()), 100))


def test_dataset_stats_counts():
  """dataset_stats: filter counts and clip counts per sampling mode for one pass."""
  stats = droid.dataset_stats(_cfg(sampling="sliding"))
  assert stats["counts"]["episodes_read"] == 6 and stats["counts"]["episodes_kept"] == 5
  assert stats["clips_per_pass"] == {"random": 5, "sliding": 38}
  assert stats["counts"]["steps_read"] == 441
  assert len(stats["state"]["mean"]) == 7 and len(stats["action"]["std"]) == 7
