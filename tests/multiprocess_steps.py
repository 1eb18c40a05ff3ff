"""Three sharded train steps on a fixed global batch; prints losses and the parameter norm.

Run by tests/test_multiprocess_train.py once as a single process and once as each of two
processes (jax.distributed on localhost); every process feeds only its own rows of the batch.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from vjepa_jax import distributed  # noqa: E402

distributed.maybe_initialize()

import jax  # noqa: E402
import optax  # noqa: E402

import train_tiny  # noqa: E402
from vjepa_jax.train import sharding  # noqa: E402
from vjepa_jax.train import trainer  # noqa: E402


def main(workdir: str) -> None:
  jax.config.update("jax_default_matmul_precision", "highest")
  cfg = train_tiny.tiny_config("unused")
  mesh = sharding.make_mesh(cfg.mesh)
  st = trainer.setup(cfg, workdir, mesh)
  n, i = jax.process_count(), jax.process_index()
  per = cfg.batch_size // n
  state, losses = st.state, []
  for k in range(3):
    full = train_tiny.fixed_batch(cfg, k)
    local = {key: v[i * per:(i + 1) * per] for key, v in full.items()}
    state, m = st.step_fn(state, st.frozen, sharding.global_batch(local, mesh))
    losses.append(float(m["loss"]))
  norm = jax.jit(optax.global_norm, out_shardings=sharding.replicated(mesh))(state.trainable)
  print(json.dumps({"process": i, "processes": n, "devices": jax.device_count(),
                    "losses": losses, "param_norm": float(norm)}), flush=True)


if __name__ == "__main__":
  main(sys.argv[1])
