"""The single entry point (`from vjepa_jax import data`) across formats, presets and mixtures.

Proves: `check_path` tells apart a missing path, an empty folder, the parent of version
directories (naming them) and a non-dataset, and resolves a Hugging Face hub cache folder;
`config_for` detects the format and guesses the preset, and on DROID gives exactly the clips of
`droid.make_clip_dataset`; the bridge (Euler) and fractal (quaternion) presets read states back
from RLDS written in their key layouts; the official-timing preset steps 15 frames; RLDS batches
resume exactly from `get_state`; mixtures draw by weight, deterministically, resumably, across
formats; the synthetic CLI writes every format; `inspect` reports both formats.
"""
import json
import pathlib
import shutil

import data_samples
import numpy as np
import pytest

from vjepa_jax import data
from vjepa_jax import poses
from vjepa_jax.data import droid
from vjepa_jax.data import inspect as inspect_lib
from vjepa_jax.data import synthetic
from vjepa_jax.data import writers

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
DROID_DIR = FIXTURES / "droid_tiny" / "droid" / "1.0.0"
COMMON = dict(split="all", num_epochs=1, shuffle=False, deterministic=True, image_size=16)


@pytest.fixture(scope="module")
def lerobot_root(tmp_path_factory):
  root = tmp_path_factory.mktemp("entry") / "my_robot"
  writers.write_lerobot(str(root), data_samples.episodes((26, 30, 22)), fps=15)
  return root


def test_check_path_names_what_the_path_is(tmp_path, lerobot_root):
  with pytest.raises(ValueError, match="does not exist"):
    data.check_path(str(tmp_path / "nope"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(ValueError, match="is empty"):
    data.check_path(str(tmp_path / "empty"))
  parent = tmp_path / "droid"
  shutil.copytree(DROID_DIR, parent / "1.0.0")
  shutil.copytree(DROID_DIR, parent / "1.0.1")
  with pytest.raises(ValueError, match=r"parent folder of dataset version directories "
                                       r"\['1.0.0', '1.0.1'\]"):
    data.check_path(str(parent))
  with pytest.raises(ValueError, match=r"folder of datasets \['droid'\]"):
    data.check_path(str(tmp_path))
  with pytest.raises(ValueError, match=r"parent folder of LeRobot datasets \['my_robot'\]"):
    data.check_path(str(lerobot_root.parent))
  (tmp_path / "other").mkdir()
  (tmp_path / "other" / "notes.txt").write_text("x")
  with pytest.raises(ValueError, match=r"is not a dataset.*\['notes.txt'\]"):
    data.check_path(str(tmp_path / "other"))
  assert data.check_path(str(parent / "1.0.1")).format == "rlds"
  cfg = data.default_config()
  cfg.path = str(parent)
  with pytest.raises(ValueError, match="parent folder of dataset version directories"):
    data.check_config(cfg)  # the trainer's check before it builds anything
  cfg.update(path=str(parent / "1.0.1"), split="val", val_fraction=0.0)
  with pytest.raises(ValueError, match=r"empty split.*data.split='all'.*data.val_fraction > 0"):
    data.check_config(cfg)
  cfg.update(split="all", format="lerobot")
  with pytest.raises(ValueError, match="is a rlds dataset"):
    data.check_config(cfg)
  hub = tmp_path / "datasets--lab--my_robot"
  shutil.copytree(lerobot_root, hub / "snapshots" / "abc123")
  (hub / "refs").mkdir()
  (hub / "refs" / "main").write_text("abc123")
  found = data.check_path(str(hub))
  assert found.format == "lerobot" and found.path.endswith("snapshots/abc123")


def test_config_for_droid_equals_make_clip_dataset():
  cfg = data.config_for(str(DROID_DIR), sampling="sliding", **COMMON)
  assert (cfg.format, cfg.spec, cfg.camera, cfg.frame_step) == (
      "rlds", "droid", "exterior_image_1_left", 4)
  ref = droid.default_config()
  ref.update(path=str(DROID_DIR), sampling="sliding", process_index=0, process_count=1,
             **COMMON)
  ours = list(data.clip_iterator(cfg))
  theirs = list(droid.make_clip_dataset(ref).as_numpy_iterator())
  assert len(ours) == len(theirs) == 38
  for a, b in zip(ours, theirs):
    for key in b:
      np.testing.assert_array_equal(a[key], b[key])
  assert data.spec_of(cfg).controllable == (0, 1, 2, 6)


@pytest.mark.parametrize("preset, name", [("bridge", "bridge"),
                                          ("fractal", "fractal20220817_data")])
def test_oxe_presets_read_their_layouts(tmp_path, preset, name):
  eps = data_samples.episodes((25, 21), cameras=("image",))
  writers.write_rlds(str(tmp_path / preset / "0.1.0"), eps, preset, name=name)
  cfg = data.config_for(str(tmp_path / preset / "0.1.0"), frames_per_clip=3, frame_step=2,
                        sampling="sliding", **COMMON)
  assert cfg.spec == preset and cfg.camera == "image"
  clips = list(data.clip_iterator(cfg))
  assert len(clips) == (25 - 5) // 4 + 1 + (21 - 5) // 4 + 1
  for c in clips:
    e = int(c["episode_id"].decode().split(":")[1])
    truth = eps[e]["states"][c["step_index"]]
    np.testing.assert_allclose(c["states"][:, :3], truth[:, :3], atol=1e-6)
    np.testing.assert_allclose(poses.euler_xyz_to_matrix(c["states"][:, 3:6]),
                               poses.euler_xyz_to_matrix(truth[:, 3:6]), atol=2e-6)
    np.testing.assert_allclose(c["states"][:, 6], truth[:, 6], atol=1e-6)
    np.testing.assert_allclose(c["actions"], poses.poses_to_diffs(
        c["states"].astype(np.float64)), atol=1e-5)
    for frame, t in zip(c["video"], c["step_index"]):
      assert data_samples.identify(frame) == (t % 40, e % 6)


def test_official_timing_preset(tmp_path):
  cfg = droid.default_config("official_timing")
  assert cfg.frame_step == 15 and cfg.window_rule == "official"
  writers.write_rlds(str(tmp_path / "d" / "1.0.1"), data_samples.episodes(
      (125,), cameras=("exterior_image_1_left",)), "droid")
  cfg.update(path=str(tmp_path / "d" / "1.0.1"), process_index=0, process_count=1,
             sampling="sliding", **COMMON)
  clips = list(droid.make_clip_dataset(cfg).as_numpy_iterator())
  assert len(clips) == 1 and (np.diff(clips[0]["step_index"]) == 15).all()
  assert clips[0]["step_index"][-1] - clips[0]["step_index"][0] == 105


def test_rlds_batches_resume_exactly():
  cfg = data.config_for(str(DROID_DIR), **{**COMMON, "shuffle": True, "num_epochs": 3,
                                           "seed": 3})
  it = data.batches(cfg, 2)
  next(it)
  state = it.get_state()
  assert json.loads(json.dumps(state)) == {"format": "rlds", "clips": 2,
                                           "fingerprint": state["fingerprint"]}
  rest = [next(it) for _ in range(3)]
  again = data.batches(cfg, 2, state=state)
  for a in rest:
    b = next(again)
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_mixture_draws_by_weight_deterministically_and_resumes(lerobot_root):
  rl = data.config_for(str(DROID_DIR), frames_per_clip=4, frame_step=2, sampling="sliding",
                       **{**COMMON, "num_epochs": None})
  lr = data.config_for(str(lerobot_root), frames_per_clip=4, frame_step=2, num_workers=0,
                       **{**COMMON, "num_epochs": None})
  mix = data.mixture({"droid": (rl, 3.0), "mine": (lr, 1.0)}, seed=7)
  ids = [c["episode_id"] for _, c in zip(range(40), data.clip_iterator(mix))]
  from_mine = sum(i.startswith(b"my_robot/") for i in ids)
  assert 4 <= from_mine <= 18  # 10 expected at weight 1/4
  again = [c["episode_id"] for _, c in zip(range(40), data.clip_iterator(mix))]
  assert ids == again
  it = data.batches(mix, 4)
  for _ in range(3):
    next(it)
  state = json.loads(json.dumps(it.get_state()))
  rest = [next(it) for _ in range(2)]
  resumed = data.batches(mix, 4, state=state)
  for a in rest:
    b = next(resumed)
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  with pytest.raises(ValueError, match="weights must be > 0"):
    data.mixture([(rl, 0.0)])


def test_synthetic_cli_writes_every_format(tmp_path):
  synthetic.main(["--out", str(tmp_path / "lr"), "--format", "lerobot", "--codec", "av1",
                  "--episodes", "2", "--steps", "30", "30", "--image-size", "48x64"])
  synthetic.main(["--out", str(tmp_path / "bridge" / "0.1.0"), "--format", "rlds",
                  "--spec", "bridge", "--episodes", "2", "--steps", "30", "30",
                  "--image-size", "48x64"])
  info = json.loads((tmp_path / "lr" / "meta" / "info.json").read_text())
  assert info["codebase_version"] == "v3.0"
  assert info["features"]["observation.images.exterior_image_1_left"]["info"][
      "video.codec"] == "av1"
  for path, preset in ((tmp_path / "lr", "lerobot_pose"), (tmp_path / "bridge" / "0.1.0",
                                                           "bridge")):
    cfg = data.config_for(str(path), frames_per_clip=4, num_workers=0, **COMMON)
    assert cfg.spec == preset
    assert next(data.clip_iterator(cfg))["video"].shape == (4, 16, 16, 3)


def test_inspect_reports_both_formats(lerobot_root, tmp_path, capsys):
  sheet = tmp_path / "sheet.png"
  inspect_lib.main([str(lerobot_root), "--frames", "4", "--sheet", str(sheet), "--clips", "2",
                    "--image-size", "32"])
  out = capsys.readouterr().out
  assert "lerobot" in out and "lerobot_pose" in out and "episodes read 3, kept 3" in out
  assert sheet.stat().st_size > 0
  inspect_lib.main([str(DROID_DIR), "--sheet", ""])
  out = capsys.readouterr().out
  assert "spec droid" in out and "episodes read 6, kept 5" in out and "gripper" in out
