"""Planner API: goal caching, sub-goal schedules, and the CLI on the
real Franka trajectory (with a tiny random model)."""
import pathlib

import numpy as np
import pytest

from vjepa_jax.planning import GoalSchedule
from vjepa_jax.planning import Planner
from vjepa_jax.planning import default_config
from vjepa_jax.planning import plan_flops
from vjepa_jax.planning import poses_to_diffs
from vjepa_jax.planning import __main__ as cli

FRANKA = pathlib.Path(__file__).parent / "fixtures" / "franka_example_traj.npz"


@pytest.fixture(scope="module")
def planner():
  # The CLI test below plans with the same model and settings, so it reuses this executable.
  encoder, predictor = cli.random_tiny_models(seed=0)
  cfg = default_config()
  cfg.update(samples=16, iterations=2, topk=4)
  return Planner(encoder, predictor, cfg)


def test_plan_returns_bounded_action_and_caches_the_goal(planner):
  rng = np.random.default_rng(1)
  frame, goal = (rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2))
  pose = np.array([0.5, 0.0, 0.3, 3.1, 0.0, 0.0, 1.0], np.float32)
  action = planner.plan(frame, pose, goal)
  assert isinstance(action, np.ndarray) and action.shape == (7,)
  assert np.all(np.abs(action[:3]) <= planner.cfg.maxnorm + 1e-7)
  np.testing.assert_array_equal(action[3:6], 0.0)
  predictor_cfg = cli.random_tiny_models(seed=0)[1].cfg
  assert planner.last_result.flops == plan_flops(planner.cfg, predictor_cfg) > 0
  cached = planner.goal_latent(goal)
  assert planner.goal_latent(goal.copy()) is cached
  assert len(planner._goals) == 1
  with pytest.raises(ValueError, match="pose must be"):
    planner.plan(frame, pose[:6], goal)
  with pytest.raises(ValueError, match="uint8"):
    planner.plan(frame.astype(np.float32), pose, goal)


def test_goal_schedule_and_closed_loop(planner):
  """Sub-goal i is active for its step count; `follow` plans once per step towards it."""
  rng = np.random.default_rng(2)
  goals = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2)]
  schedule = GoalSchedule([(goals[0], 2), (goals[1], 1)])
  assert len(schedule) == 3
  assert [schedule.index(t) for t in range(3)] == [0, 0, 1]
  with pytest.raises(ValueError, match="outside"):
    schedule.goal(3)
  with pytest.raises(ValueError, match="at least 1 step"):
    GoalSchedule([(goals[0], 0)])
  frame = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
  pose = np.zeros(7, np.float32)
  executed = []
  actions = planner.follow(schedule, lambda: (frame, pose), executed.append)
  assert len(actions) == len(executed) == 3
  assert all(a.shape == (7,) for a in executed)


def test_cli_plans_on_the_franka_trajectory(capsys):
  """Without weights the CLI warns loudly, plans with a tiny random model and prints the
  recorded action (pose difference of the two recorded states) next to the plan."""
  assert cli.main(["--trajectory", str(FRANKA), "--samples", "16", "--iterations", "2",
                   "--topk", "4"]) == 0
  out = capsys.readouterr()
  assert "RANDOM-INIT TINY model" in out.err
  assert "RANDOM-INIT tiny model" in out.out
  states = np.load(FRANKA)["states"][0]
  recorded = np.asarray(poses_to_diffs(states))[0]
  row = next(line for line in out.out.splitlines() if line.split()[:2] == ["0", "record"])
  np.testing.assert_allclose([float(x) for x in row.split()[2:]], recorded, atol=1e-4)
  assert any(line.split()[:2] == ["0", "plan"] for line in out.out.splitlines())
