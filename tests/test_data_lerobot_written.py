"""A LeRobot v3.0 dataset written by lerobot itself (tests/fixtures/lerobot_written, made by its
make_fixture.py with lerobot 0.4.4): our reader returns the frames and states lerobot's own
reader returned for the same rows, and the guessed spec, episode offsets and frame rate."""
import pathlib

import data_samples
import numpy as np

from vjepa_jax import data

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "lerobot_written"


def test_frames_and_states_equal_lerobots_reader():
  expected = np.load(FIXTURE / "expected.npz")
  cfg = data.config_for(str(FIXTURE / "dataset"), frames_per_clip=2, frame_step=1,
                        sampling="sliding", clip_stride=1, split="all", num_epochs=1,
                        shuffle=False, num_workers=0, resize_on_host=False, crop="ac")
  assert cfg.spec == "lerobot_pose" and cfg.camera == "observation.images.front"
  ours = {}
  for clip in data.clip_iterator(cfg):
    e = int(clip["episode_id"].decode().rsplit("_", 1)[1])
    for frame, state, t in zip(clip["video"], clip["states"], clip["step_index"]):
      ours[(e, int(t))] = (frame, state)
  assert len(ours) == 54
  for i, (e, t) in enumerate(zip(expected["episode_index"], expected["frame_index"])):
    frame, state = ours[(int(e), int(t))]
    np.testing.assert_array_equal(state, expected["states"][i])
    # 'ac' keeps 48 x 64 (aspect 1.33 is inside [0.75, 1.35]): the whole frame.
    assert frame.shape == expected["frames"][i].shape
    assert np.abs(frame.astype(int) - expected["frames"][i]).max() <= 1
    assert data_samples.identify(frame) == (int(t), int(e))
