"""LeRobot v3.0 / v2.1 datasets written by `writers.write_lerobot`, read by the grain pipeline.

Proves: every clip's frames are the rows at `step_index` (decoded frames identify their row and
episode, so v3.0's per-episode offsets inside concatenated mp4s are honoured), for H.264 and AV1
and both layout versions; states equal the written states and actions are the pose deltas;
windows never cross an episode and are counted exactly; "random" draws one clip per episode per
epoch from a global shuffle redrawn each epoch; the order is a pure function of the config;
processes get disjoint elements covering the stream; the held-out split is disjoint from train;
a resumed stream (`state`) continues with exactly the clips an uninterrupted one gives, also
with worker processes; batches stack the contract.
"""
import json

import data_samples
import numpy as np
import pytest

from vjepa_jax import data
from vjepa_jax import poses
from vjepa_jax.data import writers

LENGTHS = (30, 21, 26, 17)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
  root = tmp_path_factory.mktemp("lerobot")
  eps = data_samples.episodes(LENGTHS, cameras=("front", "wrist"))
  out = {}
  for name, codec, version, per_file in (("v30_h264", "h264", "v3.0", 3),
                                         ("v30_av1", "av1", "v3.0", 0),
                                         ("v21_h264", "h264", "v2.1", 0)):
    writers.write_lerobot(str(root / name), eps, fps=15, codec=codec, version=version,
                          episodes_per_file=per_file)
    out[name] = str(root / name)
  return out, eps


def _cfg(path, **overrides):
  kw = dict(frames_per_clip=4, frame_step=3, image_size=32, split="all", num_workers=0,
            num_epochs=1, shuffle=False, sampling="sliding", clip_stride=1)
  kw.update(overrides)
  return data.config_for(path, **kw)


def _ep_index(clip):
  return int(clip["episode_id"].decode().rsplit("_", 1)[1])


@pytest.mark.parametrize("name", ["v30_h264", "v30_av1", "v21_h264"])
def test_clips_match_written_rows(written, name):
  paths, eps = written
  cfg = _cfg(paths[name], resize_on_host=False)
  assert cfg.format == "lerobot" and cfg.spec == "lerobot_pose" and cfg.frame_step == 3
  clips = list(data.clip_iterator(cfg))
  assert clips
  for c in clips:
    assert c["video"].dtype == np.uint8 and c["video"].shape[0] == 4
    assert c["states"].dtype == np.float32 and c["states"].shape == (4, 7)
    assert c["actions"].shape == (3, 7) and c["step_index"].dtype == np.int32
    e = _ep_index(c)
    steps = c["step_index"]
    assert (np.diff(steps) == 3).all() and steps[-1] < LENGTHS[e]
    np.testing.assert_array_equal(c["states"], eps[e]["states"][steps])
    np.testing.assert_allclose(c["actions"], poses.poses_to_diffs(
        eps[e]["states"][steps].astype(np.float64)), atol=1e-6)
    for frame, t in zip(c["video"], steps):
      assert data_samples.identify(frame) == (t % 40, e % 6)
  # Sliding windows, stride 1 frame (3 steps), 10 steps per window: exact count per episode.
  expected = sum((n - 10) // 3 + 1 for n in LENGTHS)
  assert len(clips) == expected


def test_random_sampling_global_shuffle_and_determinism(written):
  paths, _ = written
  cfg = _cfg(paths["v30_h264"], sampling="random", shuffle=True, num_epochs=3, seed=4)
  clips = list(data.clip_iterator(cfg))
  ids = [_ep_index(c) for c in clips]
  assert len(ids) == 3 * len(LENGTHS)
  epochs = [ids[i:i + 4] for i in range(0, 12, 4)]
  assert all(sorted(e) == [0, 1, 2, 3] for e in epochs)  # one clip per episode per epoch
  assert len({tuple(e) for e in epochs}) > 1  # reshuffled every epoch
  again = [(_ep_index(c), tuple(c["step_index"])) for c in data.clip_iterator(cfg)]
  assert again == [(i, tuple(c["step_index"])) for i, c in zip(ids, clips)]
  other = list(data.clip_iterator(_cfg(paths["v30_h264"], sampling="random", shuffle=True,
                                       num_epochs=3, seed=5)))
  assert [(_ep_index(c), tuple(c["step_index"])) for c in other] != again


def test_processes_are_disjoint_and_cover(written):
  paths, _ = written
  full = [(_ep_index(c), tuple(c["step_index"]))
          for c in data.clip_iterator(_cfg(paths["v21_h264"], frames_per_clip=2, frame_step=2))]
  parts = [[(_ep_index(c), tuple(c["step_index"])) for c in data.clip_iterator(
      _cfg(paths["v21_h264"], frames_per_clip=2, frame_step=2, process_index=i,
           process_count=3))] for i in range(3)]
  assert sorted(sum(parts, [])) == sorted(full)
  assert parts[0] == full[0::3] and parts[2] == full[2::3]


def test_val_split_is_disjoint_and_stable(written):
  paths, _ = written

  def episodes(split):
    return {_ep_index(c) for c in data.clip_iterator(
        _cfg(paths["v30_av1"], split=split, val_fraction=0.5, frames_per_clip=2, frame_step=1))}

  train, val = episodes("train"), episodes("val")
  assert train and val and not train & val and train | val == set(range(len(LENGTHS)))
  assert episodes("val") == val


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_continues_exactly(written, workers):
  paths, _ = written
  cfg = _cfg(paths["v30_h264"], sampling="random", shuffle=True, num_epochs=None, seed=1,
             random_resized_crop=True, camera="observation.images.front,observation.images.wrist",
             num_workers=workers)
  it = data.batches(cfg, 3)
  first = [next(it) for _ in range(2)]
  state = it.get_state()
  json.dumps(state)
  assert state["clips"] == 6
  rest = [next(it) for _ in range(2)]
  it.close()
  resumed = data.batches(cfg, 3, state=state)
  again = [next(resumed) for _ in range(2)]
  resumed.close()
  for a, b in zip(rest, again):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  assert not all(np.array_equal(a["video"], b["video"]) for a, b in zip(first, rest))
  assert first[0]["video"].shape == (3, 4, 32, 32, 3) and first[0]["episode_id"].dtype.kind == "S"


def test_spec_fields_for_the_planner(written):
  paths, _ = written
  spec = data.spec_of(_cfg(paths["v30_h264"]))
  assert spec.action_dim == 7 and spec.integration == "pose"
  assert spec.controllable == (0, 1, 2, 6) and len(spec.action_low) == 7


def test_vector_spec_on_a_lerobot_dataset(written):
  """A user dict spec: the whole observation.state as a plain vector with additive actions."""
  paths, eps = written
  spec = {"name": "vec", "format": "lerobot", "cameras": ["observation.images.wrist"],
          "state": {"keys": ["observation.state"]}, "control_hz": 7.5}
  cfg = data.config_for(paths["v30_av1"], spec=spec, frames_per_clip=3, split="all",
                        num_workers=0, num_epochs=1, shuffle=False, sampling="sliding",
                        image_size=32)
  assert cfg.frame_step == 2 and cfg.camera == "observation.images.wrist"
  clip = next(data.clip_iterator(cfg))
  e, steps = _ep_index(clip), clip["step_index"]
  np.testing.assert_allclose(clip["actions"], np.diff(eps[e]["states"][steps], axis=0),
                             atol=1e-6)
  assert data.spec_of(cfg).integration == "additive"


def test_trim_idle_and_stored_actions(tmp_path):
  """trim_idle drops idle ends judged on the states (also with stored actions); stored per-step
  actions are summed between sampled frames."""
  rng = np.random.default_rng(3)
  eps = data_samples.episodes((30, 28), seed=3)
  for ep in eps:
    ep["states"][:5] = ep["states"][5]  # five idle steps first
    ep["actions"] = rng.normal(size=(len(ep["states"]), 7)).astype(np.float32)
  writers.write_lerobot(str(tmp_path / "ds"), eps, fps=15)
  spec = {"name": "stored", "format": "lerobot", "control_hz": 15,
          "state": {"keys": ["observation.state"]},
          "actions": {"source": "stored", "keys": ["action"], "aggregate": "sum"}}
  cfg = data.config_for(str(tmp_path / "ds"), spec=spec, frames_per_clip=3, frame_step=2,
                        split="all", num_workers=0, num_epochs=1, shuffle=False,
                        sampling="sliding", trim_idle=True, image_size=16)
  stream = data.clip_iterator(cfg)
  clips = list(stream)
  assert stream.counts["idle_steps_trimmed"] == 2 * 5  # steps 0-4; step 5 starts the motion
  for c in clips:
    e, steps = _ep_index(c), c["step_index"]
    assert steps[0] >= 5
    np.testing.assert_allclose(c["actions"], [eps[e]["actions"][steps[0]:steps[1]].sum(0),
                                              eps[e]["actions"][steps[1]:steps[2]].sum(0)],
                               atol=1e-5)
