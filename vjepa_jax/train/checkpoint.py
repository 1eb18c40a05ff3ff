"""Training checkpoints: trainable params, optimizer state, step, RNG, config, data position.

Frozen base weights are not copied into checkpoints; each records the sha256 of the converted
base checkpoint it was trained from and refuses to resume on another. Paths may be local or gs://
(orbax + etils.epath; no local-file assumptions).
"""
from __future__ import annotations

import json
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

from vjepa_jax.models import pretrained

META_FILE = "run.json"


def _leaves_dict(tree) -> dict[str, Any]:
  leaves = jax.tree.leaves(tree)
  return {f"leaf_{i:05d}": x for i, x in enumerate(leaves)}


def _paths(tree) -> list[str]:
  return [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def workdir_path(workdir: str) -> epath.Path:
  path = epath.Path(workdir)
  return path if "://" in str(workdir) else path.resolve()


class Checkpointer:
  """orbax CheckpointManager over `<workdir>/checkpoints` (async saves, keep the last K)."""

  def __init__(self, workdir: str, every: int, keep: int, async_save: bool = True):
    self.dir = workdir_path(workdir) / "checkpoints"
    self.mngr = ocp.CheckpointManager(
        self.dir,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=every,
                                             enable_async_checkpointing=async_save,
                                             create=True))

  def latest_step(self) -> int | None:
    return self.mngr.latest_step()

  def save(self, step: int, state, meta: dict, force: bool = False) -> bool:
    meta = dict(meta, leaf_paths=_paths(state))
    return self.mngr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(_leaves_dict(state)), meta=ocp.args.JsonSave(meta)),
        force=force)

  def restore(self, step: int, template) -> tuple[Any, dict]:
    """Restores into the structure and shardings of `template` (a state of the same run)."""
    meta = self.mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    if meta["leaf_paths"] != _paths(template):
      raise ValueError(f"checkpoint {self.dir}/{step} was written for another model or mode: its "
                       "parameter tree differs from this run's (check mode / lora settings)")
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), template)
    restored = self.mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(_leaves_dict(abstract))))["state"]
    leaves = [restored[k] for k in sorted(restored)]
    return jax.tree.unflatten(jax.tree.structure(template), leaves), meta

  def wait(self) -> None:
    self.mngr.wait_until_finished()

  def close(self) -> None:
    self.mngr.wait_until_finished()
    self.mngr.close()


def check_base(meta: dict, base_dir: str, base_sha: str) -> None:
  if meta.get("base_sha256") != base_sha:
    raise ValueError(
        f"refusing to resume: the checkpoint was trained from base weights "
        f"{meta.get('base_dir')} (sha256 {str(meta.get('base_sha256'))[:16]}...), but this run "
        f"loads {base_dir} (sha256 {base_sha[:16]}...)")


def write_run_meta(workdir: str, meta: dict) -> None:
  if jax.process_index() == 0:
    path = workdir_path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    (path / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))


def load_models(workdir: str, step: int | None = None, merge: bool = False):
  """(encoder, predictor) NNX modules of a training run, at its latest (or given) step.

  The base weights come from the converted checkpoint recorded in the run; trained parameters
  (full predictor or LoRA adapters) are restored on top. `merge=True` folds adapters into the
  base kernels.
  """
  from vjepa_jax.train import model as model_lib
  from vjepa_jax.train import lora as lora_lib
  import ml_collections
  root = workdir_path(workdir)
  run = json.loads((root / META_FILE).read_text())
  cfg = ml_collections.ConfigDict(run["config"])
  base = pretrained.load_converted(run["base_dir"])
  model = model_lib.WorldModel(base["encoder"], base["predictor"])
  model_lib.attach_adapters(model, cfg.mode, cfg.lora)
  graphdef, trainable, frozen, rest = model_lib.split(model, cfg.mode)
  ckpt = Checkpointer(workdir, every=1, keep=1000, async_save=False)
  step = ckpt.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {root}/checkpoints")
  meta = ckpt.mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
  check_base(meta, run["base_dir"], pretrained.params_sha256(run["base_dir"]))
  restored = ckpt.mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  ckpt.close()
  leaves = [restored["state"][k] for k in sorted(restored["state"])]
  n_train = len(jax.tree.leaves(trainable))
  # TrainState leaf order: step, trainable..., opt_state..., rng.
  trained = jax.tree.unflatten(jax.tree.structure(trainable), leaves[1:1 + n_train])
  model = nnx.merge(graphdef, trained, frozen, rest)
  if merge:
    lora_lib.merge_lora(model)
  return model.encoder, model.predictor
