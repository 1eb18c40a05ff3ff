"""The workdir tools (evaluate, planning, export) load a training run trained on another device
count and mesh: the run trains here on 8 devices with sharded parameters (FSDP), the tools run in
a process with 1 device. Also: their option errors are reported together, and evaluating a run
without held-out episodes names the fix."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import train_tiny
from vjepa_jax import evaluate
from vjepa_jax.planning import __main__ as plan_cli
from vjepa_jax.train import trainer

ROOT = pathlib.Path(__file__).parents[1]
FRANKA = pathlib.Path(__file__).parent / "fixtures" / "franka_example_traj.npz"

TOOLS = r"""
import json, sys
import jax
assert jax.device_count() == 1, jax.device_count()
from vjepa_jax import evaluate
from vjepa_jax.planning import __main__ as plan_cli
from weights_conversion import export
run, data, out = sys.argv[1:4]
codes = [
    evaluate.main(["--data", data, "--split", "all", "--workdir", run, "--converted",
                   run + "/base", "--out", out + "/eval", "--frames", "4", "--batch-size", "2",
                   "--max-batches", "1", "--horizon", "2", "--grid-points", "3",
                   "--max-pairs", "1"]),
    plan_cli.main(["--trajectory", sys.argv[4], "--workdir", run, "--samples", "16",
                   "--iterations", "2", "--topk", "4", "--json"]),
    export.main(["--workdir", run, "--output", out + "/model.pt"]),
]
print("CODES", json.dumps(codes))
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  root = tmp_path_factory.mktemp("workdir_tools")
  data = train_tiny.make_dataset(root / "data")
  cfg = train_tiny.tiny_config(data, steps=2, mode="lora", **{"mesh.data": 2, "mesh.fsdp": 4})
  trainer.train(cfg, str(root / "run"))
  return root, data


def test_tools_on_one_device_load_a_run_trained_on_eight(run):
  root, data = run
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
  env.pop("XLA_FLAGS", None)
  out = subprocess.run([sys.executable, "-c", TOOLS, str(root / "run"), data, str(root),
                        str(FRANKA)], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  codes = json.loads(out.stdout.split("CODES")[-1])
  assert codes == [0, 0, 0], out.stdout[-3000:] + out.stderr[-3000:]
  report = json.loads((root / "eval" / "report.json").read_text())
  assert str(root / "run") in json.dumps(report)
  assert np.isfinite(report["scalars"]["eval/teacher_forcing_l1"])
  planned = [json.loads(l)["planned"] for l in out.stdout.splitlines() if l.startswith("{")]
  assert planned and all(len(p) == 7 and np.isfinite(p).all() for p in planned)
  assert (root / "model.pt").exists()
  assert "(LoRA merged)" in out.stdout


def test_evaluating_a_run_without_held_out_episodes_names_the_fix(run, capsys):
  root, data = run
  code = evaluate.main(["--data", data, "--workdir", str(root / "run"), "--out",
                        str(root / "eval_val")])
  assert code == 2
  err = capsys.readouterr().err
  assert "data.val_fraction=0" in err and "--split all" in err


def test_missing_options_are_reported_together(capsys):
  with pytest.raises(SystemExit):
    evaluate.main(["--split", "all"])
  err = capsys.readouterr().err
  assert "--data is required" in err and "--out is required" in err and "--workdir" in err
  with pytest.raises(SystemExit):
    plan_cli.main(["--trajectory", str(FRANKA), "--converted", "a", "--checkpoint", "b.pt",
                   "--step", "3", "--encoder-num-heads", "2"])
  err = capsys.readouterr().err
  assert "at most one of" in err and "--step applies to --workdir" in err


def test_head_counts_use_the_converters_spelling_and_come_together(tmp_path, capsys):
  """A .pt of sizes that were not released: both missing head counts in one message, spelled
  as the converter's options."""
  import vjepa2_tiny as fx
  code = plan_cli.main(["--trajectory", str(FRANKA), "--checkpoint", str(fx.CHECKPOINT)])
  assert code == 2
  err = capsys.readouterr().err
  assert "--encoder-num-heads" in err and "--predictor-num-heads" in err
