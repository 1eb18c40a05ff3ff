"""Two JAX processes on localhost (CPU collectives) train exactly like one process."""
import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np

HERE = pathlib.Path(__file__).parent
ROOT = HERE.parent
SCRIPT = str(HERE / "multiprocess_steps.py")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(**extra):
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("VJEPA_", "SLURM_", "TPU_", "MEGASCALE_", "OMPI_", "XLA_FLAGS"))}
  env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT), **extra)
  return env


def _report(text: str) -> dict:
  return json.loads([l for l in text.splitlines() if l.startswith("{")][-1])


def test_two_processes_match_one_process(tmp_path):
  single = subprocess.run([sys.executable, SCRIPT, str(tmp_path / "single")], cwd=ROOT,
                          env=_env(VJEPA_CPU_DEVICES="4"), capture_output=True, text=True,
                          timeout=300)
  assert single.returncode == 0, single.stderr[-3000:]
  ref = _report(single.stdout)
  assert (ref["processes"], ref["devices"]) == (1, 4)

  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, SCRIPT, str(tmp_path / "multi")], cwd=ROOT, text=True,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      env=_env(VJEPA_COORDINATOR=f"127.0.0.1:{port}", VJEPA_NUM_PROCESSES="2",
               VJEPA_PROCESS_ID=str(i), VJEPA_CPU_DEVICES="2")) for i in range(2)]
  reports = []
  try:
    for p in procs:
      out, err = p.communicate(timeout=300)
      assert p.returncode == 0, err[-3000:]
      reports.append(_report(out))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for i, r in enumerate(reports):
    assert (r["process"], r["processes"], r["devices"]) == (i, 2, 4)
    np.testing.assert_allclose(r["losses"], ref["losses"], rtol=1e-5)
    np.testing.assert_allclose(r["param_norm"], ref["param_norm"], rtol=1e-6)
  assert ref["losses"][0] != ref["losses"][2]
