"""The simulated Franka: states and actions follow the V-JEPA 2-AC conventions, goal images
leave the scene untouched, the scripted experts solve their tasks, collected episodes read back
as training clips, and the closed-loop evaluation runs with and without a world model."""
import json

import numpy as np
import pytest

pytest.importorskip("panda_gym", reason="needs the sim extra: pip install -e '.[sim]'")

from vjepa_jax.sim import collect  # noqa: E402
from vjepa_jax.sim import env as env_lib  # noqa: E402
from vjepa_jax.sim import evaluate  # noqa: E402
from vjepa_jax.sim import expert as expert_lib  # noqa: E402
from vjepa_jax.sim import landscape  # noqa: E402

SIZE = 32  # small frames keep the CPU renderer fast


@pytest.fixture(scope="module")
def reach():
  with env_lib.FrankaSim(env_lib.SimConfig(task="reach", image_size=SIZE)) as sim:
    yield sim


def test_state_layout_and_step_moves_by_the_action(reach):
  frame, state = reach.reset(seed=3)
  assert frame.shape == (SIZE, SIZE, 3) and frame.dtype == np.uint8
  assert state.shape == (7,) and state.dtype == np.float32
  # Base-frame position (the base stands at x = -0.6), gripper pointing down, fingers closed.
  np.testing.assert_allclose(state[:3], reach.ee_position() - [-0.6, 0.0, 0.0], atol=1e-6)
  assert abs(abs(state[3]) - np.pi) < 0.1 and np.all(np.abs(state[4:6]) < 0.1)
  assert state[6] == pytest.approx(1.0, abs=1e-3)
  for action in ([0.03, -0.02, 0.01], [-0.05, 0.0, 0.04], [0.0, 0.05, -0.03]):
    before = reach.state()
    reach.step(np.array([*action, 0.0, 0.0, 0.0, 0.0]))
    moved = reach.state()[:3] - before[:3]
    np.testing.assert_allclose(moved, action, atol=0.01)


def test_actions_are_clipped_and_validated(reach):
  reach.reset(seed=4)
  before = reach.state()
  reach.step(np.array([0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]))
  assert reach.state()[0] - before[0] <= reach.cfg.max_step + 0.005
  with pytest.raises(ValueError, match="7 finite numbers"):
    reach.step(np.zeros(3))
  with pytest.raises(ValueError, match="7 finite numbers"):
    reach.step(np.array([np.nan, 0, 0, 0, 0, 0, 0]))
  with pytest.raises(ValueError, match="unknown task"):
    env_lib.SimConfig(task="stack")


def test_reach_starts_away_from_the_goal(reach):
  for seed in range(5):
    reach.reset(seed)
    assert reach.distance() >= reach.cfg.reach_start_distance - 0.01
    assert not reach.info()["is_success"]


@pytest.mark.parametrize("task", ["reach", "push", "pick_and_place"])
def test_goal_frame_restores_the_scene(task, reach):
  sim = reach if task == "reach" else env_lib.FrankaSim(env_lib.SimConfig(task=task,
                                                                          image_size=SIZE))
  try:
    sim.reset(seed=5)
    sim.step(np.array([0.02, 0.01, -0.02, 0, 0, 0, 0]))
    frame, state = sim.observe()
    obj = sim.object_position()
    goal = sim.goal_frame()
    after_frame, after_state = sim.observe()
    np.testing.assert_array_equal(after_frame, frame)
    np.testing.assert_allclose(after_state, state, atol=1e-5)  # forward kinematics re-run
    if obj is not None:
      np.testing.assert_allclose(sim.object_position(), obj, atol=1e-6)
    assert np.abs(goal.astype(int) - frame.astype(int)).mean() > 1.0
    # The goal configuration itself passes the task's success test.
    sim.place(*sim.goal_configuration())
    assert sim.info()["is_success"]
  finally:
    if sim is not reach:
      sim.close()


@pytest.mark.parametrize("task,steps", [("reach", 10), ("push", 50), ("pick_and_place", 50)])
def test_scripted_expert_succeeds(task, steps):
  with env_lib.FrankaSim(env_lib.SimConfig(task=task, image_size=SIZE)) as sim:
    for seed in range(2):
      sim.reset(seed)
      expert = expert_lib.ScriptedExpert(sim, np.random.default_rng(seed))
      assert any(sim.step(expert.act())["is_success"] for _ in range(steps)), (task, seed)


def _clips(out):
  from vjepa_jax import data
  cfg = data.config_for(out, frames_per_clip=4, frame_step=1, image_size=SIZE, val_fraction=0.0,
                        sampling="sliding", clip_stride=1, shuffle=False, num_epochs=1,
                        deterministic=True, num_workers=0, camera=collect.CAMERA_KEY)
  clips = list(data.clip_iterator(cfg))
  return sorted(clips, key=lambda c: (c["states"][0].round(4).tobytes(), int(c["step_index"][0])))


def test_collect_writes_clips_the_trainer_reads(tmp_path):
  """Both formats hold the same episodes, read through the trainer's data entry point."""
  from vjepa_jax.data import poses
  got = {}
  for fmt in collect.FORMATS:
    out = str(tmp_path / fmt)
    assert collect.main(["--task", "reach", "--episodes", "2", "--max-steps", "6", "--image-size",
                         str(SIZE), "--format", fmt, "--out", out]) == 0
    recorded = json.loads((tmp_path / fmt / collect.SIM_FILE).read_text())
    assert env_lib.SimConfig.from_dict(recorded["sim"]).image_size == SIZE
    got[fmt] = _clips(out)
  rlds, lerobot = got["rlds"], got["lerobot"]
  assert len(rlds) == len(lerobot) == 2 * (7 - 4 + 1)  # 7 frames per episode, every 4-frame window
  for a, b in zip(rlds, lerobot):
    assert a["video"].shape == b["video"].shape == (4, SIZE, SIZE, 3)
    np.testing.assert_array_equal(a["step_index"], b["step_index"])
    np.testing.assert_allclose(a["states"], b["states"], atol=1e-6)
    np.testing.assert_allclose(a["actions"], b["actions"], atol=1e-5)
    # JPEG and H.264 frames of the same render.
    assert np.abs(a["video"].astype(int) - b["video"].astype(int)).mean() < 8
  clip = rlds[0]
  np.testing.assert_allclose(clip["actions"], poses.poses_to_diffs(clip["states"]).numpy(),
                             atol=1e-6)
  assert np.abs(clip["actions"][:, :3]).max() <= 0.055  # one control step's bound


@pytest.mark.parametrize("planner", ["random", "oracle"])
def test_evaluate_without_a_model(planner, tmp_path, capsys):
  out = tmp_path / planner
  assert evaluate.main(["--task", "reach", "--episodes", "2", "--planner", planner,
                        "--image-size", str(SIZE), "--max-steps", "12", "--out",
                        str(out)]) == 0
  summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  for key in ("task", "planner", "episodes", "success_rate", "mean_final_distance",
              "plan_s_per_step_median"):
    assert key in summary
  assert summary["episodes"] == 2 and summary["planner"] == planner
  if planner == "oracle":
    assert summary["success_rate"] == 1.0 and summary["mean_final_distance"] < 0.05
  report = json.loads((out / "report.json").read_text())
  assert len(report["episodes"]) == 2
  assert len(list((out / "filmstrips").glob("*.png"))) == 2
  assert (out / "success_vs_compute.png").exists()


def test_evaluate_plans_with_a_converted_model(tmp_path, capsys):
  converted = _converted_tiny(tmp_path)
  out = tmp_path / "cem"
  assert evaluate.main(["--episodes", "1", "--planner", "cem", "--converted", converted,
                        "--samples", "8", "--iterations", "1", "--topk", "2",
                        "--image-size", str(SIZE), "--max-steps", "2", "--out", str(out)]) == 0
  summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert summary["flops_per_step"] > 0 and summary["plan_s_per_step_median"] > 0
  report = json.loads((out / "report.json").read_text())
  assert report["planner_config"]["fixed_axes"] == [[6, 0.0]]  # reach: gripper held
  assert len(report["episodes"][0]["actions"]) == 2


def _converted_tiny(tmp_path) -> str:
  from vjepa_jax.models import pretrained
  from vjepa_jax.planning.__main__ import random_tiny_models
  encoder, predictor = random_tiny_models(img_size=SIZE)
  converted = str(tmp_path / "converted")
  pretrained.save_converted(converted, {
      "encoder": (encoder.cfg, pretrained.flat_params(encoder)),
      "predictor": (predictor.cfg, pretrained.flat_params(predictor))},
      source={"params_sha256": "0" * 64})
  return converted


def test_evaluate_through_a_planner_server_process(tmp_path, capsys):
  """The closed loop across processes: the simulator here, the world model behind
  `python -m vjepa_jax.serve` in another process."""
  import subprocess
  import sys
  converted = _converted_tiny(tmp_path)
  server = subprocess.Popen(
      [sys.executable, "-m", "vjepa_jax.serve", "--converted", converted, "--port", "0",
       "--samples", "8", "--iterations", "1", "--topk", "2",
       "--frame-size", f"{SIZE}x{SIZE}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True)
  try:
    url = None
    for line in server.stdout:
      if line.startswith("listening on "):
        url = line.split()[-1]
        break
    assert url, "the server did not start"
    out = tmp_path / "served"
    assert evaluate.main(["--episodes", "1", "--planner", "cem", "--server", url,
                          "--image-size", str(SIZE),
                          "--max-steps", "2", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["episodes"] == 1
    report = json.loads((out / "report.json").read_text())
    assert len(report["episodes"][0]["actions"]) == 2
  finally:
    server.terminate()
    server.wait(timeout=30)


def test_landscapes_of_a_random_model(reach, tmp_path):
  from vjepa_jax import planning
  from vjepa_jax.planning.__main__ import random_tiny_models
  encoder, predictor = random_tiny_models(img_size=SIZE)
  planner = planning.Planner(encoder, predictor, planning.default_config())
  reach.reset(seed=6)
  before = reach.state()
  enc = landscape.encoder_landscape(reach, planner, points=3)
  pred = landscape.predictor_landscape(reach, planner, predictor, points=3)
  np.testing.assert_allclose(reach.state(), before, atol=1e-5)
  assert enc["energy"].shape == pred["energy"].shape == (3, 3)
  # The centre of the encoder grid is the goal configuration itself: energy ~0 there.
  assert enc["energy"][1, 1] == pytest.approx(0.0, abs=1e-5)
  assert enc["energy"].min() == enc["energy"][1, 1]
  landscape.plot(str(tmp_path / "l.png"), enc, pred)
  assert (tmp_path / "l.png").stat().st_size > 0


def test_evaluate_flag_errors(tmp_path):
  with pytest.raises(SystemExit):
    evaluate.parse_args(["--planner", "cem", "--out", str(tmp_path)])  # no model
  with pytest.raises(SystemExit):
    evaluate.parse_args(["--planner", "random", "--converted", "x", "--out", str(tmp_path)])
  with pytest.raises(ValueError, match="ws://"):
    evaluate.ServerPolicy("ws://localhost")


def test_planner_config_dispatch():
  cfg = evaluate.planner_config("cem", env_lib.SimConfig(), True, overrides={"samples": 64})
  assert cfg.samples == 64 and cfg.maxnorm == 0.05 and cfg.fixed_axes == ((6, 0.0),)
  assert cfg.method == "cem"
  assert evaluate.planner_config("mppi", env_lib.SimConfig(), True).method == "mppi"


def test_rank_correlation():
  a = np.arange(10.0)
  assert landscape.rank_correlation(a, a ** 2) == pytest.approx(1.0)
  assert landscape.rank_correlation(a, -a) == pytest.approx(-1.0)


def test_sim_franka_config_matches_collected_data():
  import importlib
  from vjepa_jax.train import trainer
  c = importlib.import_module("configs.sim_franka").get_config()
  trainer.validate(c, num_devices=2, process_count=1)
  # One clip step is one control step, on the camera collect writes.
  assert c.data.frame_step == 1 and c.data.camera == collect.CAMERA_KEY
  assert c.model.encoder.embed_dim == 96 and c.model.predictor.img_size == 64
