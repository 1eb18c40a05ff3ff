"""The world model to plan with: a training run or a converted checkpoint."""
from __future__ import annotations

from typing import Any


def load_world_model(workdir: str | None = None, converted: str | None = None
                     ) -> tuple[Any, Any]:
  """(encoder, predictor) NNX modules from exactly one of a training `workdir` (latest
  checkpoint, LoRA adapters merged) or a `converted` checkpoint directory."""
  if (workdir is None) == (converted is None):
    raise ValueError("give exactly one of --workdir (a training run) or --converted (a converted "
                     f"checkpoint); got workdir={workdir!r}, converted={converted!r}")
  from vjepa_jax import models
  encoder, predictor = (models.load(workdir, merge_lora=True) if workdir
                        else models.load(converted))
  if predictor is None:
    raise ValueError(f"{workdir or converted} holds no action-conditioned predictor: planning "
                     "needs V-JEPA 2-AC weights (convert the V-JEPA 2-AC checkpoint)")
  return encoder, predictor
