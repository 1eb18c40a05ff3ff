"""Test set-up: 8 simulated CPU devices and full-precision matmuls.

Both settings must be applied before JAX creates its backend, which is why they live here and not
in the tests: the sharded-step tests need a pod-like device count, and parity against the float32
goldens needs `highest` matmul precision (the default on accelerators is TF32/bf16).
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_default_matmul_precision", "highest")

import pathlib  # noqa: E402

import pytest  # noqa: E402

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> pathlib.Path:
  return FIXTURES
