"""Dataset specs, layouts and the NumPy pose algebra.

Proves: the pose algebra on NumPy equals scipy and itself on TensorFlow (also near gimbal lock
and roll ~ +-pi); every preset's state layout round-trips (writer layout -> reader states) including
quaternions and inverted gripper ranges; stored actions aggregate as documented; the planner
fields (width, controllable dimensions, bounds, integration) are filled in; presets are guessed
only when unambiguous; bad specs fail naming the field and the fix; user specs load from a dict,
JSON or a .py file.
"""
import json

import numpy as np
import pytest
import tensorflow as tf

from vjepa_jax import poses
from vjepa_jax.data import layout
from vjepa_jax.data import poses as tf_poses
from vjepa_jax.data import specs

Rotation = pytest.importorskip("scipy.spatial.transform").Rotation


def _poses(n, seed=0):
  rng = np.random.default_rng(seed)
  euler = np.stack([np.pi + rng.uniform(-0.3, 0.3, n), rng.uniform(-1.4, 1.4, n),
                    rng.uniform(-3, 3, n)], 1)
  euler[:, 0] = (euler[:, 0] + np.pi) % (2 * np.pi) - np.pi  # roll wraps around +-pi
  return np.concatenate([rng.uniform(-0.5, 0.8, (n, 3)), euler, rng.uniform(0, 1, (n, 1))], 1)


def test_numpy_pose_algebra_matches_scipy_and_tensorflow():
  p = _poses(64)
  p[5, 4] = np.pi / 2  # gimbal lock
  mats = poses.euler_xyz_to_matrix(p[:, 3:6])
  np.testing.assert_allclose(mats, Rotation.from_euler("xyz", p[:, 3:6]).as_matrix(), atol=1e-12)
  rel = mats[1:] @ np.swapaxes(mats[:-1], -1, -2)
  np.testing.assert_allclose(poses.euler_xyz_to_matrix(poses.matrix_to_euler_xyz(rel)), rel,
                             atol=1e-9)
  np.testing.assert_allclose(poses.poses_to_diffs(p), tf_poses.poses_to_diffs(p).numpy(),
                             atol=1e-12)
  for order in ("xyzw", "wxyz"):
    quat = poses.matrix_to_quaternion(mats, order)
    scipy_q = Rotation.from_matrix(mats).as_quat()
    scipy_q = scipy_q * np.sign(scipy_q[:, 3:4])
    np.testing.assert_allclose(quat, scipy_q if order == "xyzw" else scipy_q[:, [3, 0, 1, 2]],
                               atol=1e-9)
    np.testing.assert_allclose(poses.quaternion_to_matrix(3.0 * quat, order), mats, atol=1e-9)
    np.testing.assert_allclose(poses.quaternion_to_matrix(quat, order, tf.experimental.numpy),
                               mats, atol=1e-9)


@pytest.mark.parametrize("name", ["droid", "fractal", "bridge", "lerobot_pose"])
def test_preset_layouts_round_trip(name):
  """split_states (writers) then assemble_states (readers) returns the model states, and the TF
  reader assembles the same states from the same raw features."""
  spec = specs.with_defaults(specs.preset(name))
  states = _poses(20, seed=1).astype(np.float32)
  raw = layout.split_states(spec, states)
  back = layout.assemble_states(spec, raw)
  np.testing.assert_allclose(poses.matrix_to_euler_xyz(
      poses.euler_xyz_to_matrix(back[:, 3:6])), back[:, 3:6], atol=1e-6)
  np.testing.assert_allclose(back[:, :3], states[:, :3], atol=1e-6)
  np.testing.assert_allclose(poses.euler_xyz_to_matrix(back[:, 3:6]),
                             poses.euler_xyz_to_matrix(states[:, 3:6]), atol=1e-5)
  np.testing.assert_allclose(back[:, 6], states[:, 6], atol=1e-6)
  if spec.gripper_range == (1.0, 0.0):  # bridge stores the opening
    key = spec.state_parts()[2][1]
    np.testing.assert_allclose(raw[key.name][:, key.start], 1.0 - states[:, 6], atol=1e-6)
  if spec.format == "rlds":
    from vjepa_jax.data import droid
    ex = {droid._serialized_key(k): tf.constant(v) for k, v in raw.items()}
    tf_states = droid._states(ex, spec, tf.constant(len(states))).numpy()
    np.testing.assert_allclose(tf_states, back, atol=1e-5)


def test_vector_layout_and_stored_actions():
  spec = specs.with_defaults(specs.from_dict({
      "name": "arm", "format": "lerobot",
      "state": {"keys": ["observation.joints[0:6]", "observation.grip"]},
      "actions": {"source": "stored", "keys": ["action"], "aggregate": "sum"},
      "control_hz": 10}), {"observation.joints": 6, "observation.grip": 1, "action": 7})
  assert spec.integration == "additive" and spec.action_dim == 7
  assert spec.controllable == tuple(range(7)) and spec.dim_names[0] == "s0"
  rng = np.random.default_rng(0)
  states = rng.normal(size=(12, 7)).astype(np.float32)
  raw = layout.split_states(spec, states)
  assert raw["observation.joints"].shape == (12, 6) and raw["observation.grip"].shape == (12, 1)
  np.testing.assert_array_equal(layout.assemble_states(spec, raw), states)
  stored = rng.normal(size=(12, 7)).astype(np.float32)
  steps = np.array([1, 4, 7])
  np.testing.assert_allclose(layout.clip_actions(spec, states, steps, stored),
                             [stored[1:4].sum(0), stored[4:7].sum(0)], atol=1e-5)
  last = specs.from_dict({**spec.to_dict(), "actions": {"source": "stored", "keys": ["action"],
                                                        "aggregate": "last"}})
  np.testing.assert_array_equal(layout.clip_actions(last, states, steps, stored),
                                stored[[3, 6]])
  additive = specs.from_dict({**spec.to_dict(), "actions": {"source": "states"}})
  np.testing.assert_array_equal(layout.clip_actions(additive, states, steps),
                                states[[4, 7]] - states[[1, 4]])


def test_planner_fields_of_pose_presets():
  spec = specs.with_defaults(specs.preset("droid"))
  assert spec.integration == "pose" and spec.action_dim == 7
  assert spec.controllable == (0, 1, 2, 6)
  assert spec.action_high == specs.POSE_BOUNDS and spec.action_low == tuple(
      -b for b in specs.POSE_BOUNDS)
  assert spec.dim_names == specs.POSE_NAMES
  again = specs.load(spec.to_json())
  assert again == spec


def test_guess_is_unambiguous_or_lists_presets():
  droid_keys = ["observation/cartesian_position", "observation/gripper_position",
                "episode_metadata/file_path", "observation/exterior_image_1_left"]
  assert specs.guess("rlds", droid_keys).name == "droid"
  assert specs.guess("rlds", ["observation/base_pose_tool_reached",
                              "observation/gripper_closed"]).name == "fractal"
  assert specs.guess("rlds", ["observation/state"], builder_name="bridge").name == "bridge"
  with pytest.raises(ValueError, match=r"no preset fits.*Presets: .*droid.*Dataset keys: "
                                       r"\['observation/state'\]"):
    specs.guess("rlds", ["observation/state"], builder_name="toto")
  assert specs.guess("lerobot", ["observation.state"],
                     state_names=["x", "y", "z", "roll", "pitch", "yaw", "gripper"]
                     ).name == "lerobot_pose"
  assert specs.guess("lerobot", ["observation.state"],
                     state_names=["j0", "j1"]).name == "lerobot_vector"


@pytest.mark.parametrize("bad, match", [
    ({"format": "hdf5"}, "format must be one of"),
    ({"state": {"position": "s[0:3]"}}, r"needs \['orientation', 'orientation_format'\]"),
    ({"state": {"position": "s[0:3]", "orientation": "s[3:6]",
                "orientation_format": "euler_zyx"}}, "orientation_format must be one of"),
    ({"state": {"position": "s[0:2]", "orientation": "s[3:6]",
                "orientation_format": "euler_xyz"}}, "selects 2 values, expected 3"),
    ({"state": {"position": "s[0:3]", "orientation": "s[3:6]", "orientation_format":
                "euler_xyz", "gripper_range": [1, 1]}}, "open != closed"),
    ({"actions": {"source": "stored"}}, "stored actions need 'keys'"),
    ({"cameras": ["a"], "colour": 1}, r"unknown spec field\(s\) \['colour'\]"),
    ({"action_low": [0.0] * 3}, "action_low has 3 values, expected 7"),
    ({"controllable": [9]}, r"controllable dimensions \[9\] outside \[0, 7\)"),
])
def test_bad_specs_name_the_field(bad, match):
  base = {"name": "x", "format": "rlds",
          "state": {"position": "s[0:3]", "orientation": "s[3:6]",
                    "orientation_format": "euler_xyz", "gripper": "s[6]"}}
  with pytest.raises(ValueError, match=match):
    specs.from_dict({**base, **bad})


def test_user_spec_from_py_file_and_json(tmp_path):
  spec = {"name": "mine", "format": "lerobot", "cameras": ["observation.images.top"],
          "state": {"keys": ["observation.state"], "names": ["a", "b"]}, "control_hz": 20}
  path = tmp_path / "my_spec.py"
  path.write_text(f"SPEC = {spec!r}\n")
  assert specs.load(str(path)).name == "mine"
  (tmp_path / "fn_spec.py").write_text(f"def get_spec():\n  return {spec!r}\n")
  assert specs.load(str(tmp_path / "fn_spec.py")).control_hz == 20.0
  assert specs.load(json.dumps(spec)).dim_names == ("a", "b")
  with pytest.raises(ValueError, match="unknown spec preset 'nope'; presets: "):
    specs.load("nope")
  with pytest.raises(ValueError, match="does not exist"):
    specs.load(str(tmp_path / "missing.py"))


def test_language_is_never_required():
  spec = specs.preset("bridge")
  assert specs.drop_absent_language(spec, ["observation/state"]).language == ""
  assert specs.drop_absent_language(
      spec, ["observation/state", spec.language]).language == spec.language
