"""Multi-process start-up: when `jax.distributed.initialize` runs, and real 2-process jobs.

The detection table is tested as a pure function. The real runs start two JAX processes on
localhost with 2 CPU devices each (gloo collectives), once through `launch/gpu/local.sh` (the
path users take) and once directly, to check that a config or device-count mismatch makes every
process fail with a message that names it, instead of training on or hanging.
"""
import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import pytest

from vjepa_jax import distributed

REPO = pathlib.Path(__file__).resolve().parents[1]
CLUSTER_PREFIXES = ("VJEPA_", "SLURM_", "TPU_", "MEGASCALE_", "OMPI_")


@pytest.fixture
def plain_env(monkeypatch):
  """os.environ without any launcher or cluster variable."""
  for key in list(os.environ):
    if key.startswith(CLUSTER_PREFIXES):
      monkeypatch.delenv(key)


@pytest.fixture
def recorded(monkeypatch):
  """Records jax.config.update and jax.distributed.initialize calls instead of running them."""
  calls = {"config": [], "initialize": []}
  monkeypatch.setattr(jax.config, "update", lambda k, v: calls["config"].append((k, v)))
  monkeypatch.setattr(jax.distributed, "initialize",
                      lambda **kw: calls["initialize"].append(kw))
  return calls


def test_single_process_does_not_initialize(plain_env, recorded):
  """A plain environment is a single-process run: nothing distributed, no JAX settings."""
  assert distributed.maybe_initialize() is False
  assert recorded == {"config": [], "initialize": []}
  assert distributed.is_writer()
  distributed.check_consistent("{}")


def test_explicit_environment_initializes_with_gloo(plain_env, recorded, monkeypatch):
  """VJEPA_* variables (local.sh) pass straight to initialize, after the CPU settings."""
  for key, value in {"VJEPA_COORDINATOR": "127.0.0.1:9999", "VJEPA_NUM_PROCESSES": "2",
                     "VJEPA_PROCESS_ID": "1", "VJEPA_CPU_DEVICES": "3"}.items():
    monkeypatch.setenv(key, value)
  assert distributed.maybe_initialize() is True
  assert recorded["config"] == [("jax_num_cpu_devices", 3),
                                ("jax_cpu_collectives_implementation", "gloo")]
  assert recorded["initialize"] == [{"coordinator_address": "127.0.0.1:9999",
                                     "num_processes": 2, "process_id": 1,
                                     "local_device_ids": None}]


def test_cluster_environment_lets_jax_detect(plain_env, recorded, monkeypatch):
  """On SLURM, JAX reads the SLURM_* values itself; only pinned device ids are passed."""
  for key, value in {"SLURM_JOB_ID": "42", "SLURM_NTASKS": "8", "SLURM_PROCID": "5",
                     "VJEPA_LOCAL_DEVICE_IDS": "0,1,2,3"}.items():
    monkeypatch.setenv(key, value)
  assert distributed.maybe_initialize() is True
  assert recorded["config"] == []
  assert recorded["initialize"] == [{"coordinator_address": None, "num_processes": None,
                                     "process_id": None, "local_device_ids": [0, 1, 2, 3]}]


Init = distributed.InitArgs


@pytest.mark.parametrize("environ, expected", [
    ({}, None),
    ({"HOME": "/root", "PATH": "/bin"}, None),
    ({"SLURM_JOB_ID": "1", "SLURM_NTASKS": "1"}, None),
    ({"SLURM_NTASKS": "4"}, None),
    ({"SLURM_JOB_ID": "1", "SLURM_NTASKS": "16", "SLURM_PROCID": "3"}, Init("slurm")),
    ({"TPU_WORKER_HOSTNAMES": "localhost"}, None),
    ({"TPU_WORKER_HOSTNAMES": "t-w-0,t-w-1,t-w-2,t-w-3", "TPU_WORKER_ID": "2"}, Init("tpu")),
    ({"TPU_PROCESS_ADDRESSES": "10.0.0.1:8476,10.0.0.2:8476"}, Init("tpu")),
    ({"MEGASCALE_NUM_SLICES": "1"}, None),
    ({"MEGASCALE_NUM_SLICES": "2"}, Init("tpu")),
    ({"MEGASCALE_COORDINATOR_ADDRESS": "10.0.0.1:8080"}, Init("tpu")),
    ({"OMPI_COMM_WORLD_SIZE": "1"}, None),
    ({"OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_RANK": "0"}, Init("mpi")),
    ({"VJEPA_DISTRIBUTED": "1"}, Init("launcher")),
    ({"VJEPA_DISTRIBUTED": "0"}, None),
    ({"VJEPA_COORDINATOR": "h:1234", "VJEPA_NUM_PROCESSES": "4", "VJEPA_PROCESS_ID": "3"},
     Init("explicit", "h:1234", 4, 3)),
    ({"VJEPA_COORDINATOR": "h:1234", "VJEPA_NUM_PROCESSES": "1", "VJEPA_PROCESS_ID": "0"}, None),
    ({"VJEPA_COORDINATOR": "h:1", "VJEPA_NUM_PROCESSES": "2", "VJEPA_PROCESS_ID": "0",
      "VJEPA_LOCAL_DEVICE_IDS": "2, 3"}, Init("explicit", "h:1", 2, 0, (2, 3))),
    # Explicit settings win over the cluster the job happens to run in.
    ({"VJEPA_COORDINATOR": "h:1", "VJEPA_NUM_PROCESSES": "2", "VJEPA_PROCESS_ID": "1",
      "SLURM_JOB_ID": "1", "SLURM_NTASKS": "8"}, Init("explicit", "h:1", 2, 1)),
    ({"VJEPA_COORDINATOR": "h:1", "VJEPA_NUM_PROCESSES": "1", "VJEPA_PROCESS_ID": "0",
      "SLURM_JOB_ID": "1", "SLURM_NTASKS": "8"}, None),
])
def test_detect(environ, expected):
  """The environment -> start-up table, without starting anything."""
  assert distributed.detect(environ) == expected


def test_detect_arguments_override_environment():
  environ = {"VJEPA_COORDINATOR": "env:1", "VJEPA_NUM_PROCESSES": "8", "VJEPA_PROCESS_ID": "7"}
  assert distributed.detect(environ, "arg:2", 2, 0) == Init("explicit", "arg:2", 2, 0)
  assert distributed.detect({}, "arg:2", 2, 1) == Init("explicit", "arg:2", 2, 1)


@pytest.mark.parametrize("environ, message", [
    ({"VJEPA_COORDINATOR": "h:1"}, "missing: num_processes (VJEPA_NUM_PROCESSES), process_id"),
    ({"VJEPA_NUM_PROCESSES": "2", "VJEPA_PROCESS_ID": "0"}, "missing: coordinator_address"),
    ({"VJEPA_COORDINATOR": "h:1", "VJEPA_NUM_PROCESSES": "two", "VJEPA_PROCESS_ID": "0"},
     "num_processes must be an integer"),
    ({"VJEPA_COORDINATOR": "h:1", "VJEPA_NUM_PROCESSES": "2", "VJEPA_PROCESS_ID": "2"},
     "process_id must be in [0, num_processes)"),
    ({"VJEPA_COORDINATOR": "localhost", "VJEPA_NUM_PROCESSES": "2", "VJEPA_PROCESS_ID": "0"},
     "host:port"),
    ({"VJEPA_DISTRIBUTED": "1", "VJEPA_LOCAL_DEVICE_IDS": "0,x"}, "VJEPA_LOCAL_DEVICE_IDS"),
    ({"SLURM_JOB_ID": "1", "SLURM_NTASKS": "many"}, "SLURM_NTASKS must be an integer"),
])
def test_detect_rejects_bad_settings(environ, message):
  """Half-given or malformed settings are errors, not a silent single-process run."""
  with pytest.raises(ValueError) as error:
    distributed.detect(environ)
  assert message in str(error.value)


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _json_line(text):
  lines = [line for line in text.splitlines() if line.startswith("{")]
  assert len(lines) == 1, text
  # Gloo's C++ logging shares the stream and can land on the report's line, unflushed.
  return json.JSONDecoder().raw_decode(lines[0])[0]


def _subprocess_env():
  """This environment without cluster or JAX settings; vjepa_jax importable from the checkout."""
  env = {k: v for k, v in os.environ.items() if not k.startswith(CLUSTER_PREFIXES + ("JAX_",))}
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
  return env


def test_two_processes_through_local_sh(tmp_path):
  """local.sh starts 2 processes x 2 CPU devices that form one 4-device job and agree."""
  proc = subprocess.run(
      ["bash", str(REPO / "launch/gpu/local.sh"), "--num-processes", "2",
       "--cpu-devices-per-process", "2", "--module", "vjepa_jax.distributed", "--python",
       sys.executable, "--log-dir", str(tmp_path), "--", '{"lr": 1e-4}'],
      cwd=REPO, env=_subprocess_env(), capture_output=True, text=True, timeout=60)
  assert proc.returncode == 0, proc.stderr + proc.stdout
  reports = [_json_line(proc.stdout), _json_line((tmp_path / "process_1.log").read_text())]
  for index, report in enumerate(reports):
    assert report == {"initialized": True, "process_index": index, "process_count": 2,
                      "local_device_count": 2, "device_count": 4, "is_writer": index == 0}


def _start_pair(configs, cpu_devices):
  port = _free_port()
  procs = []
  for index, (config, devices) in enumerate(zip(configs, cpu_devices)):
    env = _subprocess_env()
    env.update(VJEPA_COORDINATOR=f"127.0.0.1:{port}", VJEPA_NUM_PROCESSES="2",
               VJEPA_PROCESS_ID=str(index), VJEPA_CPU_DEVICES=str(devices), JAX_PLATFORMS="cpu")
    procs.append(subprocess.Popen([sys.executable, "-m", "vjepa_jax.distributed", config],
                                  cwd=REPO, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True))
  results = []
  try:
    for proc in procs:
      out, err = proc.communicate(timeout=60)
      results.append((proc.returncode, out + err))
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  return results


@pytest.mark.parametrize("configs, cpu_devices, message", [
    (['{"lr": 1e-4}', '{"lr": 1e-3}'], (2, 2),
     "Processes disagree with process 0 on the config: process 1: config hash"),
    (['{"lr": 1e-4}', '{"lr": 1e-4}'], (2, 3),
     "Processes disagree with process 0 on the number of devices: process 1: 3 local devices "
     "vs 2"),
])
def test_mismatch_fails_every_process(configs, cpu_devices, message):
  """One process with another config (or device count): both exit non-zero and say why."""
  for returncode, output in _start_pair(configs, cpu_devices):
    assert returncode != 0, output
    assert "RuntimeError: " + message in output, output


DEFAULT_MESH = {"data": -1, "fsdp": 1, "tensor": 1}


@pytest.mark.parametrize("batch,cores,mesh,requested,want", [
    (4, 2, DEFAULT_MESH, 0, 2),      # one device per core
    (6, 4, DEFAULT_MESH, 0, 3),      # the largest divisor of the batch not above the cores
    (7, 4, DEFAULT_MESH, 0, 1),
    (8, 1, DEFAULT_MESH, 0, 1),
    (8, 4, {"data": 1, "fsdp": 1, "tensor": 1}, 0, 1),   # a mesh without -1: its size
    (8, 1, {"data": 2, "fsdp": 1, "tensor": 1}, 0, 2),
    (8, 4, {"data": -1, "fsdp": 2, "tensor": 1}, 0, 4),  # fixed axes times what fits
    (8, 2, {"data": 1, "fsdp": -1, "tensor": 2}, 0, 2),
    (6, 4, {"data": -1, "fsdp": 2, "tensor": 1}, 0, 2),
    (8, 4, DEFAULT_MESH, 3, 3),      # the config's cpu_devices wins
])
def test_cpu_devices_for(batch, cores, mesh, requested, want):
  assert distributed.cpu_devices_for(batch, mesh, cores, requested) == want


@pytest.mark.parametrize("environ", [
    {"VJEPA_CPU_DEVICES": "3"},
    {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"},
    {"VJEPA_COORDINATOR": "localhost:1234", "VJEPA_NUM_PROCESSES": "2", "VJEPA_PROCESS_ID": "0"},
])
def test_configure_cpu_devices_leaves_explicit_settings_alone(environ):
  assert distributed.configure_cpu_devices(8, DEFAULT_MESH, 0, environ) is None


def test_single_process_cpu_run_gets_one_device_per_core():
  """In a fresh process the count takes effect: devices == min-divisor rule for the cores."""
  code = ("import jax; from vjepa_jax import distributed; "
          "n = distributed.configure_cpu_devices(12, {'data': -1, 'fsdp': 1, 'tensor': 1}); "
          "print(n, jax.device_count(), distributed.available_cores())")
  env = _subprocess_env()
  env.pop("XLA_FLAGS", None)
  env["JAX_PLATFORMS"] = "cpu"
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=60)
  assert proc.returncode == 0, proc.stderr
  n, devices, cores = map(int, proc.stdout.split())
  assert n == devices == distributed.cpu_devices_for(12, DEFAULT_MESH, cores)
  assert n == max(d for d in range(1, cores + 1) if 12 % d == 0)
