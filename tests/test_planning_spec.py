"""`planning.config_for_spec`: the planner searches the dataset's action space (its width,
controllable dimensions, bounds and integration), and DROID's spec gives the official planner."""
import numpy as np
import pytest

from vjepa_jax import planning
from vjepa_jax.data import specs
from vjepa_jax.planning import space


def _resolved(d):
  return specs.with_defaults(specs.from_dict(d))


def test_droid_spec_gives_the_default_planner():
  spec = specs.with_defaults(specs.preset("droid"), {"observation/cartesian_position": 6,
                                                     "observation/gripper_position": 1})
  got = space.action_space(planning.config_for_spec(spec, "wrapper"))
  want = space.action_space(planning.default_config("wrapper"))
  assert got.width == want.width == 7 and got.dims == want.dims
  np.testing.assert_array_equal(got.bound, want.bound)
  assert planning.config_for_spec(spec).integration == "pose"


def test_vector_spec_sets_width_dims_bounds_and_integration(caplog):
  spec = _resolved({"name": "arm5", "format": "lerobot",
                    "state": {"keys": ["observation.state"],
                              "names": ["j0", "j1", "j2", "j3", "grip"]},
                    "actions": {"source": "states"}, "controllable": [0, 1, 4],
                    "action_low": [-0.1, -0.2, -0.3, -0.4, -0.5],
                    "action_high": [0.1, 0.2, 0.3, 0.4, 0.25]})
  cfg = planning.config_for_spec(spec)
  got = space.action_space(cfg)
  assert (got.width, tuple(got.dims), cfg.integration, cfg.gripper_dim) == (
      5, (0, 1, 4), "additive", None)
  # The asymmetric last range is searched within its smaller side, and said so.
  np.testing.assert_allclose(got.bound, [0.1, 0.2, 0.3, 0.4, 0.25])
  assert "asymmetric" in caplog.text


def test_vector_spec_without_bounds_is_a_clear_error():
  spec = _resolved({"name": "arm3", "format": "lerobot",
                    "state": {"keys": ["observation.state"], "names": ["a", "b", "c"]},
                    "actions": {"source": "states"}})
  with pytest.raises(ValueError, match="set cfg.bounds"):
    space.action_space(planning.config_for_spec(spec))
