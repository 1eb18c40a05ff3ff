"""The world model to plan with: a training run or a converted checkpoint, behind one function."""
from __future__ import annotations

import json
from typing import Any


def load_world_model(workdir: str | None = None, converted: str | None = None
                     ) -> tuple[Any, Any]:
  """(encoder, predictor) NNX modules from exactly one of a training `workdir` (latest
  checkpoint, LoRA adapters merged) or a `converted` checkpoint directory.

  Call it before any other JAX computation: a CPU training run is restored onto as many CPU
  devices as it trained on.
  """
  if (workdir is None) == (converted is None):
    raise ValueError("give exactly one of --workdir (a training run) or --converted (a converted "
                     f"checkpoint); got workdir={workdir!r}, converted={converted!r}")
  if workdir is not None:
    _match_training_devices(workdir)
    from vjepa_jax.train import checkpoint
    return checkpoint.load_models(workdir, merge=True)
  from vjepa_jax.models import pretrained
  models = pretrained.load_converted(converted)
  missing = [k for k in ("encoder", "predictor") if k not in models]
  if missing:
    raise ValueError(f"{converted} holds no {' or '.join(missing)}: planning needs the encoder "
                     "and the action-conditioned predictor (convert the V-JEPA 2-AC checkpoint)")
  return models["encoder"], models["predictor"]


def _match_training_devices(workdir: str) -> None:
  """Uses the CPU device count the run trained with (its checkpoints restore onto the device
  topology they were saved from); must run before JAX starts its backend."""
  from etils import epath
  from vjepa_jax import distributed
  run = epath.Path(workdir) / "run.json"
  if not run.exists():
    raise FileNotFoundError(f"{workdir} is not a training run: no run.json")
  cfg = json.loads(run.read_text())["config"]
  distributed.configure_cpu_devices(cfg["batch_size"], cfg["mesh"], cfg.get("cpu_devices", 0))
