"""Test set-up: 8 simulated CPU devices and full-precision matmuls.

Both settings must be applied before JAX creates its backend, which is why they live here and not
in the tests: the sharded-step tests need a pod-like device count, and parity against the float32
goldens needs `highest` matmul precision (the default on accelerators is TF32/bf16).
"""
import atexit
import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Much of the suite's time is XLA compiling the same tiny programs again: every trainer.setup
# builds a fresh jitted step, and every subprocess (resume, signals, tools) compiles from scratch.
# One persistent compilation cache per session, inherited through the environment by subprocesses
# and pytest-xdist workers, compiles each program once. Unless JAX_COMPILATION_CACHE_DIR is given,
# it starts empty, so no result depends on an earlier session. The 0.1 s floor keeps out the
# op-by-op compiles of eager code (writing thousands of those costs more than it saves); the size
# bound turns on JAX's file lock, which concurrent processes need.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="vjepa-jax-cache-")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(4 << 30))

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_default_matmul_precision", "highest")

import pathlib  # noqa: E402

import pytest  # noqa: E402

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> pathlib.Path:
  return FIXTURES
