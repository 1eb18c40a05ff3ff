"""Synthetic DROID generator and inspect CLI.

Proves the generator writes a dataset that `tfds.builder_from_directory` opens with DROID's
feature spec (compared with the real-format fixture) under any folder, builder name and version;
that it round-trips through `make_clip_dataset` (states and episode ids as generated); that the
pictures follow the end-effector (identical while idle, changing while moving); and that the
inspect CLI reports counts and writes a contact sheet.
"""
import pathlib

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from vjepa_jax.data import droid
from vjepa_jax.data import inspect as inspect_cli
from vjepa_jax.data import synthetic

FIXTURE_DIR = pathlib.Path(__file__).parent / "fixtures" / "droid_tiny" / "droid" / "1.0.0"


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
  out = tmp_path_factory.mktemp("synth") / "droid" / "1.0.1"
  episodes = synthetic.generate(str(out), episodes=3, steps=(33, 40), shards=2, seed=3,
                                image_hw=(48, 64), name="droid_101", version="0.0.1")
  return str(out), episodes


def _flat(info, prefix=""):
  out = {}
  for k, v in info.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}/"))
    else:
      out[prefix + k] = (v.dtype, v.shape)
  return out


def test_builder_opens_with_droid_feature_spec(generated):
  path, _ = generated
  builder = tfds.builder_from_directory(path)
  assert builder.info.name == "droid_101" and str(builder.info.version) == "0.0.1"
  assert builder.info.splits["train"].num_examples == 3
  assert builder.info.splits["train"].num_shards == 2
  fixture = tfds.builder_from_directory(str(FIXTURE_DIR))
  ours = builder.info.features
  theirs = fixture.info.features
  assert _flat(ours.get_serialized_info()) == _flat(theirs.get_serialized_info())
  assert ours["steps"]["observation"]["wrist_image_left"].shape == (48, 64, 3)
  ep = next(iter(builder.as_dataset("train", decoders={"steps": tfds.decode.SkipDecoding()})))
  assert ep["steps"]["observation"]["cartesian_position"].dtype == tf.float64


def test_round_trip_through_clip_pipeline(generated):
  """Clips carry the generated states at their step indices, for every generated episode."""
  path, episodes = generated
  by_id = {e["file_path"]: e for e in episodes}
  cfg = droid.default_config()
  cfg.update(dict(path=path, process_index=0, process_count=1, split="all", num_epochs=1,
                  sampling="sliding", deterministic=True, shuffle=False, image_size=32))
  clips = list(droid.make_clip_dataset(cfg).as_numpy_iterator())
  assert {c["episode_id"].decode() for c in clips} == set(by_id)
  for c in clips:
    ep = by_id[c["episode_id"].decode()]
    states = np.concatenate([ep["observation/cartesian_position"],
                             ep["observation/gripper_position"]], axis=1)[c["step_index"]]
    np.testing.assert_array_equal(c["states"], states.astype(np.float32))
    assert c["video"].shape == (8, 32, 32, 3)


def test_pictures_follow_the_end_effector():
  """Idle steps render identical frames; once the arm moves, the exterior view changes where
  the end-effector disk is, and the disk is green while open."""
  rng = np.random.default_rng(0)
  ep = synthetic.make_episode(rng, 0, 40, (90, 160))
  frames = ep["images"]["exterior_image_1_left"]
  idle = ep["idle_steps"]
  assert idle >= 2
  assert frames[0] == frames[idle - 1]
  first = tf.io.decode_jpeg(frames[0]).numpy().astype(int)
  moved = tf.io.decode_jpeg(frames[-1]).numpy().astype(int)
  assert np.abs(first - moved).max() > 100
  green = (first[..., 1] > 150) & (first[..., 0] < 90)
  assert green.sum() > 10


def test_generator_cli(tmp_path, capsys):
  out = tmp_path / "v"
  synthetic.main(["--out", str(out), "--episodes", "2", "--steps", "20", "24", "--shards", "1",
                  "--image-size", "32x40"])
  assert "wrote 2 episodes" in capsys.readouterr().out
  builder = tfds.builder_from_directory(str(out))
  assert builder.info.splits["train"].num_examples == 2
  assert builder.info.features["steps"]["observation"]["exterior_image_1_left"].shape == (32, 40, 3)


def test_inspect_cli_reports_and_writes_sheet(generated, tmp_path, capsys):
  path, _ = generated
  sheet = tmp_path / "sheet.png"
  inspect_cli.main([path, "--sheet", str(sheet), "--clips", "2", "--image-size", "24",
                    "--sampling", "sliding"])
  text = capsys.readouterr().out
  assert "builder name 'droid_101'" in text and "clips per pass" in text
  assert "episodes read 3, kept 3" in text and "gripper" in text
  image = tf.io.decode_png(tf.io.read_file(str(sheet))).numpy()
  assert image.shape == (2 * 24, 8 * 24, 3)
