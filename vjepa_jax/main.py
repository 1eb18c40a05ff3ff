"""Entry point: `python -m vjepa_jax.main --config configs/<name>.py[:arg] --workdir DIR`.

Any config field can be overridden on the command line (`--config.optim.lr=1e-4`). Re-running the
same command resumes from the newest checkpoint in DIR (local or gs://). Ctrl-C (SIGINT) and
SIGTERM finish the current step, save and exit 0; a second Ctrl-C aborts without saving.
"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (local or gs://).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv) -> None:
  del argv
  if not flags.FLAGS["verbosity"].present:
    # Checkpoint libraries log every save at INFO; progress lines are printed separately.
    logging.set_verbosity(logging.WARNING)
  # The CPU device count and the distributed runtime are fixed before any other JAX call.
  from vjepa_jax import distributed
  cfg = _CONFIG.value
  distributed.configure_cpu_devices(cfg.batch_size, cfg.mesh, cfg.get("cpu_devices", 0))
  distributed.maybe_initialize()
  import jax
  import tensorflow as tf
  # tf.data must never claim accelerator memory.
  tf.config.set_visible_devices([], "GPU")
  jax.config.update("jax_default_matmul_precision", _CONFIG.value.get("matmul_precision",
                                                                      "default"))
  from vjepa_jax.train import trainer
  logging.info("process %d/%d, %d local / %d global devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  try:
    trainer.train(_CONFIG.value, _WORKDIR.value)
  except trainer.RefusedRun as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(2)
  except trainer.NonFiniteLoss as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(1)
  except KeyboardInterrupt:
    print("aborted by Ctrl-C: nothing saved since the last checkpoint", file=sys.stderr,
          flush=True)
    sys.exit(130)


if __name__ == "__main__":
  app.run(main)
