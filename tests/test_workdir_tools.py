"""The evaluation and planning CLIs load a training run (`--workdir`, LoRA merged) and score it
next to its base weights."""
import json
import pathlib

import numpy as np
import pytest

import train_tiny
from vjepa_jax import evaluate
from vjepa_jax.planning import __main__ as plan_cli
from vjepa_jax.train import trainer

FRANKA = pathlib.Path(__file__).parent / "fixtures" / "franka_example_traj.npz"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  root = tmp_path_factory.mktemp("workdir_tools")
  data = train_tiny.make_dataset(root / "data")
  cfg = train_tiny.tiny_config(data, mode="lora", num_steps=2)
  trainer.train(cfg, str(root / "run"))
  return root, data


def test_evaluate_cli_scores_run_and_base(run):
  root, data = run
  out = root / "eval"
  code = evaluate.main(["--data", data, "--split", "all", "--workdir", str(root / "run"),
                        "--converted", str(root / "run" / "base"), "--out", str(out),
                        "--frames", "4", "--batch-size", "2", "--max-batches", "1",
                        "--horizon", "2", "--grid-points", "3", "--max-pairs", "1"])
  assert code == 0
  report = json.loads((out / "report.json").read_text())
  text = json.dumps(report)
  assert str(root / "run") in text and str(root / "run" / "base") in text
  assert "teacher_forcing_l1" in text


def test_planning_cli_plans_with_a_training_run(run, capsys):
  root, _ = run
  code = plan_cli.main(["--trajectory", str(FRANKA), "--workdir", str(root / "run"),
                        "--samples", "16", "--iterations", "2", "--topk", "4", "--json"])
  assert code == 0
  lines = [json.loads(l) for l in capsys.readouterr().out.splitlines() if l.startswith("{")]
  assert lines and all(np.isfinite(np.asarray(l["planned"], float)).all() for l in lines)
  assert all(len(l["planned"]) == 7 for l in lines)
