"""Launch scripts: --help, the exact commands --dry-run prints, quoting, and shellcheck.

Every script runs with stub `gcloud`, `gsutil` and `sbatch` first on PATH that fail loudly, so a
dry run that would touch the cloud or a cluster fails the test instead.
"""
import json
import os
import pathlib
import re
import shlex
import shutil
import signal
import subprocess
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
TPU = REPO / "launch" / "tpu"
GPU = REPO / "launch" / "gpu"
SCRIPTS = [TPU / f"{n}.sh" for n in ("create", "setup", "run", "logs", "copy_metrics", "delete")]
SCRIPTS += [GPU / "submit.sh", GPU / "local.sh"]
SCOPE = "--scopes=https://www.googleapis.com/auth/cloud-platform"
TRAINER = [".venv/bin/python", "-m", "vjepa_jax.main"]
SPACED = "--config.data.path=gs://my bucket/it's"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  """Environment without VJEPA_* defaults and with cloud/cluster tools that must not be run."""
  stubs = tmp_path_factory.mktemp("stubs")
  for tool in ("gcloud", "gsutil", "sbatch"):
    stub = stubs / tool
    stub.write_text(f"#!/bin/sh\necho '{tool} must not run in a dry run' >&2\nexit 99\n")
    stub.chmod(0o755)
  clean = {k: v for k, v in os.environ.items() if not k.startswith("VJEPA_")}
  clean["PATH"] = f"{stubs}{os.pathsep}{clean['PATH']}"
  return clean


def _run(env, script, *args, check=True):
  proc = subprocess.run(["bash", str(script), *args], capture_output=True, text=True, env=env,
                        cwd=REPO, timeout=30)
  if check:
    assert proc.returncode == 0, proc.stderr
  return proc


def _lines(env, script, *args):
  """The dry-run output as one argv per line."""
  out = _run(env, script, "--dry-run", *args).stdout
  return [shlex.split(line) for line in out.splitlines()]


def _flag(argv, name):
  values = [a.split("=", 1)[1] for a in argv if a.startswith(name + "=")]
  assert len(values) == 1, (name, argv)
  return values[0]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_help(env, script):
  """--help exits 0 with usage text naming the script, and runs nothing."""
  proc = _run(env, script, "--help")
  assert proc.stdout.startswith(f"Usage: {script.name} ")
  assert "--dry-run" in proc.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_unknown_argument_is_an_error(env, script):
  """A typo in an option stops the script with exit 2 and names the word."""
  proc = _run(env, script, "--bogus-option", check=False)
  assert proc.returncode == 2
  assert "--bogus-option" in proc.stderr


def test_create_tpu_vm_spot(env):
  """A spot TPU VM: one gcloud create with zone, type, the runtime for v6e and full scopes."""
  lines = _lines(env, TPU / "create.sh", "--name", "vj-pod", "--zone", "us-east5-b",
                 "--accelerator-type", "v6e-16", "--spot")
  assert lines == [["gcloud", "compute", "tpus", "tpu-vm", "create", "vj-pod",
                    "--zone=us-east5-b", "--accelerator-type=v6e-16",
                    "--version=v2-alpha-tpuv6e", "--spot", SCOPE]]


def test_create_preemptible_with_service_account_and_project(env):
  """--preemptible, --service-account, --project and --runtime-version reach gcloud."""
  (argv,) = _lines(env, TPU / "create.sh", "--name=vj", "--zone=us-central2-b",
                   "--accelerator-type=v4-8", "--preemptible", "--project", "my-proj",
                   "--service-account", "trainer@my-proj.iam.gserviceaccount.com",
                   "--runtime-version", "tpu-ubuntu2204-base")
  assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "vj"]
  assert _flag(argv, "--project") == "my-proj"
  assert _flag(argv, "--version") == "tpu-ubuntu2204-base"
  assert _flag(argv, "--service-account") == "trainer@my-proj.iam.gserviceaccount.com"
  assert "--preemptible" in argv and "--spot" not in argv


def test_create_queued_resource(env):
  """--queued makes a queued resource whose node has the TPU's name; --wait polls its state."""
  lines = _lines(env, TPU / "create.sh", "--name", "vj-pod", "--zone", "us-east5-a",
                 "--accelerator-type", "v5p-32", "--spot", "--queued", "--wait")
  assert lines[0] == ["gcloud", "compute", "tpus", "queued-resources", "create", "vj-pod",
                      "--zone=us-east5-a", "--accelerator-type=v5p-32",
                      "--runtime-version=v2-alpha-tpuv5", "--node-id=vj-pod", "--spot", SCOPE]
  assert lines[1] == ["gcloud", "compute", "tpus", "queued-resources", "describe", "vj-pod",
                      "--zone=us-east5-a", "--format=value(state.state)"]
  assert len(lines) == 2


@pytest.mark.parametrize("args, message", [
    (["--accelerator-type", "v5p-32", "--queued", "--preemptible"], "use --spot"),
    (["--accelerator-type", "v5p-32", "--reserved"], "--reserved needs --queued"),
    (["--accelerator-type", "tpu-big"], "looks like v5p-32"),
    (["--accelerator-type", "v9x-8"], "pass --runtime-version"),
    (["--accelerator-type"], "needs a value"),
    ([], "--accelerator-type is required"),
])
def test_create_rejects_bad_input(env, args, message):
  """Impossible combinations fail before any command, with a message naming the problem."""
  proc = _run(env, TPU / "create.sh", "--dry-run", "--name", "vj", "--zone", "z", *args,
              check=False)
  assert proc.returncode == 2 and proc.stdout == ""
  assert message in proc.stderr


def test_common_options_are_required(env):
  """Without --name or --zone nothing runs."""
  proc = _run(env, TPU / "logs.sh", "--zone", "z", check=False)
  assert proc.returncode == 2 and "--name is required" in proc.stderr
  proc = _run(env, TPU / "delete.sh", "--name", "vj", check=False)
  assert proc.returncode == 2 and "--zone is required" in proc.stderr


def test_setup_from_git_ref(env):
  """Git source: one ssh on every worker that clones, checks out the ref and installs [tpu]."""
  (argv,) = _lines(env, TPU / "setup.sh", "--name", "vj", "--zone", "us-east5-a", "--git-ref",
                   "v0.2", "--repo-url", "https://example.com/vjepa-jax.git")
  assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "vj"]
  assert _flag(argv, "--worker") == "all"
  assert _flag(argv, "--zone") == "us-east5-a"
  remote = _flag(argv, "--command")
  assert "git clone --quiet https://example.com/vjepa-jax.git vjepa-jax" in remote
  assert "fetch --quiet origin v0.2" in remote
  assert "uv venv --seed --python 3.11 vjepa-jax/.venv" in remote
  words = shlex.split(remote.split("&& cd vjepa-jax &&")[1])
  assert words == [".venv/bin/python", "-m", "pip", "install", "--quiet", "-e", ".[tpu]"]


def test_setup_warns_when_origin_is_not_a_network_url(env, tmp_path):
  """An origin the workers cannot clone (a local path) gives a warning naming --repo-url."""
  repo = tmp_path / "checkout"
  shutil.copytree(TPU, repo / "launch" / "tpu")
  subprocess.run(["git", "init", "-q", str(repo)], check=True)
  subprocess.run(["git", "-C", str(repo), "remote", "add", "origin", "/home/me/vjepa-jax"],
                 check=True)
  proc = _run(env, repo / "launch" / "tpu" / "setup.sh", "--dry-run", "--name", "vj", "--zone",
              "z", "--git-ref", "main")
  assert "warning: origin is /home/me/vjepa-jax" in proc.stderr and "--repo-url" in proc.stderr
  subprocess.run(["git", "-C", str(repo), "remote", "set-url", "origin",
                  "git@github.com:me/vjepa-jax.git"], check=True)
  proc = _run(env, repo / "launch" / "tpu" / "setup.sh", "--dry-run", "--name", "vj", "--zone",
              "z", "--git-ref", "main")
  assert "warning" not in proc.stderr


def test_setup_from_wheel(env, tmp_path):
  """Wheel source: scp of the wheel and configs/ to every worker, then install with [tpu]."""
  wheel = tmp_path / "vjepa_jax-0.1.0-py3-none-any.whl"
  wheel.write_bytes(b"")
  lines = _lines(env, TPU / "setup.sh", "--name", "vj", "--zone", "z", "--wheel", str(wheel))
  assert [_flag(argv, "--worker") for argv in lines] == ["all", "all", "all"]
  assert lines[1][:6] == ["gcloud", "compute", "tpus", "tpu-vm", "scp", "--recurse"]
  assert lines[1][6:9] == [str(wheel), str(REPO / "configs"), "vj:vjepa-jax/"]
  remote = _flag(lines[2], "--command")
  assert "install --quiet './vjepa_jax-0.1.0-py3-none-any.whl[tpu]'" in remote
  assert "--force-reinstall vjepa_jax-0.1.0-py3-none-any.whl" in remote


def test_setup_needs_a_source(env):
  proc = _run(env, TPU / "setup.sh", "--name", "vj", "--zone", "z", check=False)
  assert proc.returncode == 2 and "--git-ref REF or --wheel FILE" in proc.stderr


def _trainer_argv(remote):
  """The trainer's argv inside run.sh's remote command."""
  match = re.search(r"\{ setsid (.*) >> logs/train\.log 2>&1 < /dev/null &", remote)
  assert match, remote
  return shlex.split(match.group(1))


def test_run_on_all_workers_with_quoted_overrides(env):
  """run.sh starts the same trainer command on every worker, then tails worker 0.

  Overrides (including one with a space and a quote) survive both shells: the local one that
  pastes the printed line and the worker's.
  """
  lines = _lines(env, TPU / "run.sh", "--name", "vj", "--zone", "us-east5-a", "--config",
                 "configs/vjepa2_ac_droid.py:full", "--workdir", "gs://bkt/runs/r1",
                 "--config.lr=1e-4", SPACED, "--env", "XLA_FLAGS=--xla_a=1 --xla_b",
                 "--", "--config.seed", "3")
  assert len(lines) == 2
  start, follow = lines
  assert start[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "vj"]
  assert _flag(start, "--worker") == "all" and _flag(start, "--zone") == "us-east5-a"
  assert _trainer_argv(_flag(start, "--command")) == [
      "env", "VJEPA_DISTRIBUTED=1", "XLA_FLAGS=--xla_a=1 --xla_b", *TRAINER,
      "--config", "configs/vjepa2_ac_droid.py:full", "--workdir", "gs://bkt/runs/r1",
      "--config.lr=1e-4", SPACED, "--config.seed", "3"]
  assert _flag(follow, "--worker") == "0"
  assert _flag(follow, "--command") == "tail -n 100 -F vjepa-jax/logs/train.log"


@pytest.mark.parametrize("args, message", [
    (["--workdir", "/local/dir"], "gs:// path"),
    (["--workdir", "gs://b/r", "--config.lr", "1e-4"], "--config.key=value"),
    (["--workdir", "gs://b/r", "--env", "1BAD=x"], "KEY=VALUE"),
])
def test_run_rejects_bad_input(env, args, message):
  proc = _run(env, TPU / "run.sh", "--dry-run", "--name", "vj", "--zone", "z", "--config",
              "configs/demo.py", *args, check=False)
  assert proc.returncode == 2 and proc.stdout == ""
  assert message in proc.stderr


def _wait_for(path, timeout=15.0):
  deadline = time.monotonic() + timeout
  while not path.exists() or not path.read_text().strip():
    assert time.monotonic() < deadline, f"{path} never appeared"
    time.sleep(0.05)
  return path.read_text()


def test_run_remote_command_starts_and_restarts_the_trainer(env, tmp_path):
  """The worker-side command, run here in a fake home: it starts the trainer in the background
  with the exact argv and environment, records its pid, and a second call (a resume) stops the
  first trainer before starting the next."""
  home = tmp_path
  venv_bin = home / "vjepa-jax" / ".venv" / "bin"
  venv_bin.mkdir(parents=True)
  fake = venv_bin / "python"
  fake.write_text(
      f"#!{shutil.which('python3')}\n"
      "import json, os, sys, time\n"
      "json.dump({'argv': sys.argv[1:], 'env': os.environ.get('VJEPA_DISTRIBUTED'),\n"
      "           'xla': os.environ.get('XLA_FLAGS')}, open(f'started.{os.getpid()}', 'w'))\n"
      "time.sleep(60)\n")
  fake.chmod(0o755)
  (argv,) = _lines(env, TPU / "run.sh", "--name", "vj", "--zone", "z", "--config",
                   "configs/demo.py", "--workdir", "gs://b/r", SPACED, "--env", "XLA_FLAGS=a b",
                   "--no-tail")
  remote = _flag(argv, "--command")
  pid_file = home / "vjepa-jax" / "logs" / "train.pid"
  pids = []
  try:
    for attempt in range(2):
      proc = subprocess.run(["bash", "-c", remote], cwd=home, capture_output=True, text=True,
                            timeout=60)
      assert proc.returncode == 0, proc.stderr
      pids.append(int(_wait_for(pid_file)))
      record = json.loads(_wait_for(home / "vjepa-jax" / f"started.{pids[-1]}"))
      assert record == {"argv": ["-m", "vjepa_jax.main", "--config", "configs/demo.py",
                                 "--workdir", "gs://b/r", SPACED],
                        "env": "1", "xla": "a b"}
      if attempt:
        assert f"stopping the previous trainer ({pids[0]})" in proc.stdout
        assert not pathlib.Path(f"/proc/{pids[0]}").exists()
    assert pids[0] != pids[1]
    log = (home / "vjepa-jax" / "logs" / "train.log").read_text()
    assert log.count("=== vjepa-jax run started") == 2
  finally:
    for pid in pids:
      try:
        os.kill(pid, signal.SIGKILL)
      except ProcessLookupError:
        pass


def test_run_remote_command_refuses_without_setup(env, tmp_path):
  """Before setup.sh there is no venv: the worker command fails and says what to do."""
  (argv,) = _lines(env, TPU / "run.sh", "--name", "vj", "--zone", "z", "--config",
                   "configs/demo.py", "--workdir", "gs://b/r", "--no-tail")
  (tmp_path / "vjepa-jax").mkdir()
  proc = subprocess.run(["bash", "-c", _flag(argv, "--command")], cwd=tmp_path,
                        capture_output=True, text=True, timeout=30)
  assert proc.returncode != 0 and "run setup.sh first" in proc.stderr
  assert not (tmp_path / "vjepa-jax" / "logs").exists()


def test_logs(env):
  """logs.sh follows worker 0 by default; --worker/--lines/--no-follow change that."""
  assert _lines(env, TPU / "logs.sh", "--name", "vj", "--zone", "z") == [[
      "gcloud", "compute", "tpus", "tpu-vm", "ssh", "vj", "--zone=z", "--worker=0",
      "--command=tail -n 100 -F vjepa-jax/logs/train.log"]]
  (argv,) = _lines(env, TPU / "logs.sh", "--name", "vj", "--zone", "z", "--worker", "3",
                   "--lines", "20", "--no-follow")
  assert _flag(argv, "--worker") == "3"
  assert _flag(argv, "--command") == "tail -n 20 vjepa-jax/logs/train.log"


def test_copy_metrics_skips_checkpoints(env):
  """copy_metrics.sh rsyncs the workdir without orbax step directories (unless asked)."""
  mkdir, rsync = _lines(env, TPU / "copy_metrics.sh", "--workdir", "gs://bkt/runs/r1/")
  assert mkdir == ["mkdir", "-p", "workdir-r1"]
  assert rsync[:4] == ["gcloud", "storage", "rsync", "--recursive"]
  assert rsync[-2:] == ["gs://bkt/runs/r1", "workdir-r1"]
  exclude = re.compile(_flag(rsync, "--exclude"))
  assert "," not in exclude.pattern  # gcloud splits list flags on commas
  for path in ("checkpoints/100/params/x", "200/state/d", "300.orbax-checkpoint-tmp-17/a",
               "base/encoder/x"):
    assert exclude.match(path), path
  for path in ("metrics.jsonl", "train/events.out.tfevents.1", "config.json", "loss_2.png"):
    assert not exclude.match(path), path
  _, rsync = _lines(env, TPU / "copy_metrics.sh", "--workdir", "gs://b/r", "--dest", "out",
                    "--with-checkpoints")
  assert rsync == ["gcloud", "storage", "rsync", "--recursive", "gs://b/r", "out"]


def test_delete(env):
  assert _lines(env, TPU / "delete.sh", "--name", "vj", "--zone", "z") == [[
      "gcloud", "compute", "tpus", "tpu-vm", "delete", "vj", "--zone=z", "--quiet"]]
  assert _lines(env, TPU / "delete.sh", "--name", "vj", "--zone", "z", "--queued") == [[
      "gcloud", "compute", "tpus", "queued-resources", "delete", "vj", "--zone=z", "--force",
      "--quiet"]]


def _submit(env, *args):
  out = _run(env, GPU / "submit.sh", "--dry-run", "--config", "configs/vjepa2_ac_droid.py",
             "--workdir", "gs://bkt/r1", *args).stdout
  command, header, script = out.split("\n", 2)
  return shlex.split(command), header, script


def _srun_argv(script):
  match = re.search(r"^srun (.*?) \\\n\s*env (.*)$", script, re.M)
  assert match, script
  return shlex.split(match.group(1)), shlex.split(match.group(2))


def test_submit_one_process_per_node(env):
  """N nodes x M GPUs, one process per node that sees all M GPUs; sbatch flags pass through."""
  argv, header, script = _submit(env, "--nodes", "4", "--gpus-per-node", "8", "--partition",
                                 "gpu", "--time", "2:00:00", "--config.lr=1e-4", SPACED)
  assert argv[:3] == ["sbatch", "--partition=gpu", "--time=2:00:00"]
  assert re.fullmatch(r".*/logs/slurm/vjepa-jax-\d{8}-\d{6}\.sbatch", argv[3])
  assert header == f"# {argv[3]}:"
  assert script.startswith("#!/bin/bash\n")
  for line in ("#SBATCH --nodes=4", "#SBATCH --gpus-per-node=8", "#SBATCH --ntasks-per-node=1",
               "#SBATCH --job-name=vjepa-jax", f"cd {REPO}"):
    assert line in script.splitlines(), line
  assert not re.search(r"@[A-Z_]+@", script)
  srun, command = _srun_argv(script)
  assert srun == ["--kill-on-bad-exit=1"]
  assert command == ["VJEPA_LOCAL_DEVICE_IDS=0,1,2,3,4,5,6,7", str(REPO / ".venv/bin/python"),
                     "-m", "vjepa_jax.main", "--config", "configs/vjepa2_ac_droid.py",
                     "--workdir", "gs://bkt/r1", "--config.lr=1e-4", SPACED]


def test_submit_one_process_per_gpu(env):
  """--process-per-gpu: M tasks per node, each left to JAX's per-task GPU (SLURM_LOCALID)."""
  _, _, script = _submit(env, "--nodes", "2", "--gpus-per-node", "4", "--process-per-gpu",
                         "--env", "WANDB_MODE=offline", "--job-name", "ac-lora")
  assert "#SBATCH --ntasks-per-node=4" in script.splitlines()
  assert "#SBATCH --job-name=ac-lora" in script.splitlines()
  _, command = _srun_argv(script)
  assert command[0] == "WANDB_MODE=offline"
  assert not any(w.startswith("VJEPA_LOCAL_DEVICE_IDS") for w in command)


def test_submit_rendered_script_passes_shellcheck(env, shellcheck):
  _, _, script = _submit(env, "--nodes", "2", "--gpus-per-node", "8", SPACED)
  proc = subprocess.run([shellcheck, "-s", "bash", "-"], input=script, capture_output=True,
                        text=True, timeout=60)
  assert proc.returncode == 0, proc.stdout


def test_local_dry_run(env):
  """local.sh: K processes with coordinator, count and index; CPU devices or GPU groups."""
  lines = _run(env, GPU / "local.sh", "--num-processes", "2", "--port", "4321", "--python",
               "python3", "--cpu-devices-per-process", "2", "--log-dir", "/tmp/l", "--config",
               "configs/demo.py", "--workdir", "/tmp/w", SPACED, "--dry-run").stdout.splitlines()
  assert lines[-1] == "wait" and len(lines) == 3
  for i, line in enumerate(lines[:2]):
    argv = shlex.split(line)
    assert argv[-1] == "&"
    if i:
      assert argv[-4:-1] == [">", f"/tmp/l/process_{i}.log", "2>&1"]
      argv = argv[:-4]
    else:
      argv = argv[:-1]
    assert argv == ["env", "VJEPA_COORDINATOR=127.0.0.1:4321", "VJEPA_NUM_PROCESSES=2",
                    f"VJEPA_PROCESS_ID={i}", "JAX_PLATFORMS=cpu", "VJEPA_CPU_DEVICES=2",
                    "python3", "-m", "vjepa_jax.main", "--config", "configs/demo.py",
                    "--workdir", "/tmp/w", SPACED]
  lines = _run(env, GPU / "local.sh", "--num-processes", "2", "--port", "1", "--python", "py",
               "--gpus-per-process", "4", "--module", "vjepa_jax.distributed",
               "--dry-run").stdout.splitlines()
  assert "CUDA_VISIBLE_DEVICES=4,5,6,7" in shlex.split(lines[1])


def test_local_stops_the_others_when_one_fails(env, tmp_path):
  """When a process fails, local.sh stops the rest (no hang) and exits with its status."""
  fake = tmp_path / "py"
  fake.write_text('#!/bin/sh\n[ "$VJEPA_PROCESS_ID" = 1 ] && exit 3\nexec sleep 60\n')
  fake.chmod(0o755)
  start = time.monotonic()
  proc = _run(env, GPU / "local.sh", "--num-processes", "3", "--port", "1", "--python",
              str(fake), "--module", "x", "--log-dir", str(tmp_path), "--grace-seconds", "1",
              check=False)
  assert proc.returncode == 3, proc.stderr
  assert "exited with status 3" in proc.stderr
  assert time.monotonic() - start < 20


@pytest.fixture(scope="module")
def shellcheck():
  path = shutil.which("shellcheck")
  if path is None:
    pytest.fail("shellcheck is not installed: `make test` installs it (apt-get install -y "
                "shellcheck); the launch scripts must pass it.")
  return path


def test_shellcheck(shellcheck):
  """Every launch script and the SLURM template pass shellcheck (sourced files followed)."""
  files = [str(p.relative_to(REPO)) for p in sorted((REPO / "launch").rglob("*"))
           if p.suffix in (".sh", ".sbatch")]
  assert len(files) == 10
  proc = subprocess.run([shellcheck, "-x", *files], cwd=REPO, capture_output=True, text=True,
                        timeout=60)
  assert proc.returncode == 0, proc.stdout
