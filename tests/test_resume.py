"""Crash safety: a hard-killed run resumes to exactly the uninterrupted result (and keeps one
metrics row per step), SIGTERM and Ctrl-C save and exit 0, and a non-finite loss stops with the
step and the last good checkpoint."""
import json
import os
import pathlib
import signal
import subprocess
import sys

import numpy as np
import pytest
from flax import nnx

import train_tiny
from vjepa_jax import models
from vjepa_jax.models import workdir as workdir_lib
from vjepa_jax.train import model as model_lib

ROOT = pathlib.Path(__file__).parents[1]
CONFIG = str(pathlib.Path(__file__).parent / "tiny_train_config.py")


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
  return train_tiny.make_dataset(tmp_path_factory.mktemp("synthetic"))


def _cmd(data_path, workdir, *overrides):
  return [sys.executable, "-m", "vjepa_jax.main", f"--config={CONFIG}:{data_path}",
          f"--workdir={workdir}", *overrides]


def _env():
  return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")


def _losses(workdir):
  rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  return {r["step"]: r["loss"] for r in rows}


def _trained(workdir):
  enc, pred = models.load(str(workdir))
  _, trained, _, _ = model_lib.split(model_lib.WorldModel(enc, pred), "full")
  return {tuple(p): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(trained)}


def test_hard_kill_then_resume_equals_uninterrupted_run(tmp_path, data_path):
  straight = tmp_path / "straight"
  subprocess.run(_cmd(data_path, straight), check=True, cwd=ROOT, env=_env(),
                 capture_output=True, timeout=300)
  killed = tmp_path / "killed"
  proc = subprocess.Popen(_cmd(data_path, killed), cwd=ROOT, env=_env(), text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
  for line in proc.stdout:
    if line.startswith("step 5/"):
      proc.send_signal(signal.SIGKILL)
      break
  proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
  resumed_from = workdir_lib.steps(str(killed))[-1]
  assert 0 < resumed_from < 8
  out = subprocess.run(_cmd(data_path, killed), check=True, cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=300)
  assert f"resumed from step {resumed_from} ({killed})" in out.stdout
  assert "finished step 8/8" in out.stdout and "loss.png" in out.stdout
  steps = [json.loads(l)["step"] for l in (killed / "metrics.jsonl").read_text().splitlines()]
  assert steps == list(range(1, 9)), steps
  ref, got = _losses(straight), _losses(killed)
  assert max(got) == max(ref) == 8
  for step in range(resumed_from + 1, 9):
    assert got[step] == ref[step], (step, got[step], ref[step])
  a, b = _trained(straight), _trained(killed)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=str(k))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_saves_and_exits_zero(tmp_path, data_path, sig):
  """TPU preemption sends SIGTERM, a user Ctrl-C (SIGINT): the trainer finishes the step,
  saves it and exits 0."""
  workdir = tmp_path / "term"
  proc = subprocess.Popen(_cmd(data_path, workdir, "--config.optim.total_steps=400",
                               "--config.checkpoint.every=1000"),
                          cwd=ROOT, env=_env(), text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL)
  seen = []
  for line in proc.stdout:
    seen.append(line)
    if line.startswith("step 3/"):
      proc.send_signal(sig)
      break
  seen += proc.stdout.readlines()
  assert proc.wait(timeout=120) == 0
  last = workdir_lib.steps(str(workdir))[-1]
  assert any(f"stopped by {sig.name} at step {last}/" in l for l in seen), seen[-5:]
  steps = [int(l.split()[1].split("/")[0]) for l in seen if l.startswith("step ")]
  assert last is not None and last == steps[-1] and 3 <= last < 400, (last, seen[-3:])


def test_non_finite_loss_stops_with_step_and_last_checkpoint(tmp_path, data_path):
  workdir = tmp_path / "nan"
  out = subprocess.run(_cmd(data_path, workdir, "--config.optim.lr=1e30",
                            "--config.optim.start_lr=1e30"),
                       cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
  assert out.returncode == 1
  assert "non-finite loss or gradients at step" in out.stderr
  assert "last good checkpoint" in out.stderr
