"""Training checkpoints: the train state by structure, written with orbax standard handlers.

Each checkpoint holds the items of `vjepa_jax.models.workdir` (`params`, `opt_state`, `train`,
`meta`) keyed by parameter and field names. Frozen base weights are not copied: a run records the
sha256 of its base weights and refuses to resume on others. Restoring asks orbax for the
shardings of the state it fills, so a checkpoint written on N devices resumes on any mesh.
Paths may be local or gs:// (orbax + etils.epath).
"""
from __future__ import annotations

import json
from typing import Any

import jax
import orbax.checkpoint as ocp

from vjepa_jax.models import workdir as workdir_lib
from vjepa_jax.train import step as step_lib


def _abstract(tree):
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def _items(state: step_lib.TrainState) -> dict[str, Any]:
  return {workdir_lib.PARAMS: workdir_lib.to_nested(state.trainable),
          workdir_lib.OPT_STATE: workdir_lib.to_nested(state.opt_state),
          workdir_lib.TRAIN: {"step": state.step, "rng": state.rng}}


class Checkpointer:
  """orbax CheckpointManager over `<workdir>/checkpoints` (async saves, keep the last K)."""

  def __init__(self, workdir: str, every: int, keep: int, async_save: bool = True):
    self.workdir = workdir
    self.dir = workdir_lib.checkpoint_root(workdir)
    self.mngr = ocp.CheckpointManager(
        self.dir,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=every,
                                             enable_async_checkpointing=async_save,
                                             create=True),
        item_handlers=workdir_lib.handlers())

  def latest_step(self) -> int | None:
    return self.mngr.latest_step()

  def should_save(self, step: int) -> bool:
    return self.mngr.should_save(step)

  def save(self, step: int, state: step_lib.TrainState, meta: dict, force: bool = False) -> bool:
    items = {k: ocp.args.StandardSave(v) for k, v in _items(state).items()}
    return self.mngr.save(step, args=ocp.args.Composite(
        **items, **{workdir_lib.META: ocp.args.JsonSave(meta)}), force=force)

  def restore(self, step: int, template: step_lib.TrainState
              ) -> tuple[step_lib.TrainState, dict]:
    """Restores into the structure and shardings of `template` (a state of the same run, on
    any mesh)."""
    want = _items(template)
    for item in (workdir_lib.PARAMS, workdir_lib.OPT_STATE):
      stored = workdir_lib.item_shapes(self.workdir, step, item)
      expected = workdir_lib.flat_shapes(want[item])
      if stored != expected:
        diff = sorted(set(stored.items()) ^ set(expected.items()))[:10]
        raise ValueError(
            f"checkpoint {self.dir}/{step} does not fit this run's {item} (path, shape) "
            f"differences: {[('/'.join(k), s) for k, s in diff]}; resume with the config the run "
            "was started with, or train in a new --workdir")
    args = {k: ocp.args.StandardRestore(_abstract(v)) for k, v in want.items()}
    restored = self.mngr.restore(step, args=ocp.args.Composite(
        **args, **{workdir_lib.META: ocp.args.JsonRestore()}))
    state = step_lib.TrainState(
        step=restored[workdir_lib.TRAIN]["step"],
        trainable=workdir_lib.from_nested(template.trainable, restored[workdir_lib.PARAMS]),
        opt_state=workdir_lib.from_nested(template.opt_state, restored[workdir_lib.OPT_STATE]),
        rng=restored[workdir_lib.TRAIN]["rng"])
    return state, restored[workdir_lib.META]

  def close(self) -> None:
    self.mngr.wait_until_finished()
    self.mngr.close()


def write_run(workdir: str, run: dict) -> None:
  """Writes run.json (process 0): only once the run's configuration was accepted."""
  if jax.process_index() == 0:
    path = workdir_lib.root(workdir)
    path.mkdir(parents=True, exist_ok=True)
    (path / workdir_lib.RUN_FILE).write_text(json.dumps(run, indent=2, sort_keys=True,
                                                         default=str))
