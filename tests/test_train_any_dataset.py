"""The trainer reads any dataset through `vjepa_jax.data`: a LeRobot dataset trains end to end
from the command line and resumes to exactly the uninterrupted run (the grain stream's position
is saved with the train state), and an action width other than DROID's reaches the predictor or
is refused with the fix named."""
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

import train_tiny
from vjepa_jax.data import writers
from vjepa_jax.models import workdir as workdir_lib
from vjepa_jax.train import trainer

ROOT = pathlib.Path(__file__).parents[1]
CONFIG = str(pathlib.Path(__file__).parent / "tiny_train_config.py")


def _episodes(width: int, count: int = 6, steps: int = 24, seed: int = 0) -> list[dict]:
  rng = np.random.default_rng(seed)
  eps = []
  for i in range(count):
    video = rng.integers(0, 256, (steps, 32, 48, 3), dtype=np.uint8)
    states = np.cumsum(0.01 * rng.normal(size=(steps, width)), axis=0).astype(np.float32)
    eps.append({"frames": {"front": video}, "states": states, "language": "move",
                "episode_id": f"ep{i}"})
  return eps


@pytest.fixture(scope="module")
def lerobot_pose(tmp_path_factory):
  root = tmp_path_factory.mktemp("lerobot") / "pose"
  writers.write_lerobot(str(root), _episodes(7), spec="lerobot_pose", fps=15)
  return str(root)


def _run(data_path, workdir, *overrides):
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=2")
  return subprocess.run([sys.executable, "-m", "vjepa_jax.main", f"--config={CONFIG}:{data_path}",
                         f"--workdir={workdir}", "--config.mode=lora",
                         "--config.optim.total_steps=4", "--config.data.num_workers=1",
                         *overrides],
                        check=True, cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=300)


def _checkpoint(workdir, step) -> pathlib.Path:
  return pathlib.Path(str(workdir_lib.checkpoint_root(str(workdir)))) / str(step)


def test_lerobot_dataset_trains_from_the_command_line_and_resumes_exactly(tmp_path, lerobot_pose):
  straight = tmp_path / "straight"
  out = _run(lerobot_pose, straight)
  assert "finished step 4/4" in out.stdout
  record = workdir_lib.read_run(str(straight))["config"]["data"]
  assert record["path"] == lerobot_pose and record["format"] == "auto"
  # The run continues from its step-2 checkpoint: the data stream must pick up at step 3's clips.
  resumed = tmp_path / "resumed"
  shutil.copytree(straight, resumed)
  shutil.rmtree(_checkpoint(resumed, 4))
  out = _run(lerobot_pose, resumed)
  assert f"resumed from step 2 ({resumed})" in out.stdout
  meta = json.loads((_checkpoint(resumed, 4) / workdir_lib.META / "metadata").read_text())
  assert meta["data"]["stream"]["format"] == "lerobot"
  assert meta["data"]["stream"]["clips"] == 4 * 8
  rows = {}
  for name in ("straight", "resumed"):
    lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
    rows[name] = {r["step"]: r["loss"] for r in map(json.loads, lines) if "loss" in r}
  assert rows["resumed"][3] == rows["straight"][3] and rows["resumed"][4] == rows["straight"][4]


def test_action_width_follows_the_dataset(tmp_path):
  root = tmp_path / "vector5"
  writers.write_lerobot(str(root), _episodes(5), spec="lerobot_vector", fps=15)
  cfg = train_tiny.tiny_config(str(root), steps=2)
  with pytest.raises(trainer.RefusedRun,
                     match=r"5 values .*action_dim is 7: set --config.model.predictor.action_dim=5"):
    trainer.train(cfg, str(tmp_path / "refused"))
  assert not (tmp_path / "refused").exists()
  cfg.model.predictor.action_dim = 5
  cfg.data.num_workers = 0
  last = trainer.train(cfg, str(tmp_path / "run"))
  assert np.isfinite(last["loss"])
  assert workdir_lib.read_run(str(tmp_path / "run"))["config"]["model"]["predictor"][
      "action_dim"] == 5
