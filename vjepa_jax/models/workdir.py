"""The layout of a training run directory, as the trainer writes it and `models.load` reads it.

    WORKDIR/
      run.json                  the accepted run: config, base weights (+ sha256), adapters
      base/                     converted-format checkpoint of the randomly initialised models
                                (only those the run did not take from `init.converted`)
      checkpoints/<step>/
        params/                 trainable parameters, nested dict keyed by their nnx paths
                                ({"predictor": {"predictor_blocks": {"0": {"attn": ...}}}})
        opt_state/              optimizer state, keyed the same way under the optax state's
                                own fields (`0/mu/predictor/...`)
        train/                  {"step": int32 [], "rng": uint32 [2]}
        meta/                   JSON: step, data position, base sha256, mode
      metrics.jsonl, tensorboard/, loss.png

Every array item is an orbax standard (pytree) item. Arrays are restored to whatever shardings
the reader asks for, so a run trained on N devices loads on any device count and mesh.
Paths may be local or gs://.
"""
from __future__ import annotations

import json
from typing import Any, Mapping

import jax
from etils import epath

RUN_FILE = "run.json"
BASE_DIR = "base"
CHECKPOINT_DIR = "checkpoints"
FORMAT_VERSION = 3
PARAMS, OPT_STATE, TRAIN, META = "params", "opt_state", "train", "meta"


def root(workdir: str) -> epath.Path:
  """orbax needs absolute local paths; remote (gs://) paths are used as given."""
  path = epath.Path(workdir)
  return path if "://" in str(workdir) else path.resolve()


def read_run(workdir: str) -> dict:
  """The `run.json` of a training run.

  Raises:
    FileNotFoundError: no run.json (not a training run, or a run refused before it started).
    ValueError: a run written by another vjepa-jax checkpoint format.
  """
  path = root(workdir) / RUN_FILE
  if not path.exists():
    raise FileNotFoundError(f"{workdir} is not a vjepa-jax training run: no {RUN_FILE}")
  run = json.loads(path.read_text())
  if run.get("format_version") != FORMAT_VERSION:
    raise ValueError(
        f"{workdir} was written in workdir format {run.get('format_version', 'before 3')}; this "
        f"vjepa-jax reads format {FORMAT_VERSION} (checkpoints are stored by parameter name "
        "since then): train again in a new workdir")
  return run


def base_dir(workdir: str, recorded: str) -> str:
  """A base directory of run.json: relative ones are inside the workdir."""
  if "://" in recorded or recorded.startswith("/"):
    return recorded
  return str(root(workdir) / recorded)


def checkpoint_root(workdir: str) -> epath.Path:
  return root(workdir) / CHECKPOINT_DIR


def steps(workdir: str) -> list[int]:
  """Steps of the complete checkpoints (orbax renames a checkpoint into place when done)."""
  ckpts = checkpoint_root(workdir)
  if not ckpts.exists():
    return []
  return sorted(int(p.name) for p in ckpts.iterdir()
                if p.name.isdigit() and (p / PARAMS).exists())


def _key(k) -> str:
  for attr in ("key", "idx", "name"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  raise TypeError(f"unsupported pytree key {k!r}")


def leaf_paths(tree) -> list[tuple[tuple[str, ...], Any]]:
  """[(key path, leaf)] of a pytree with string keys; an nnx Variable's `.value` is left out,
  so a parameter's path is its nnx path (`predictor/predictor_blocks/0/attn/qkv/kernel`)."""
  out = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    keys = tuple(_key(k) for k in path)
    if path and type(path[-1]).__name__ == "GetAttrKey" and keys[-1] == "value":
      keys = keys[:-1]
    out.append((keys, leaf))
  return out


def to_nested(tree) -> dict:
  """Any pytree -> nested dict of its leaves keyed by `leaf_paths` (what orbax stores)."""
  out: dict = {}
  for keys, leaf in leaf_paths(tree):
    node = out
    for k in keys[:-1]:
      node = node.setdefault(k, {})
    if keys[-1] in node:
      raise ValueError(f"two leaves share the key path {'/'.join(keys)}")
    node[keys[-1]] = leaf
  return out


def lookup(nested: Mapping, keys: tuple[str, ...]):
  node = nested
  for k in keys:
    node = node[k]
  return node


def from_nested(template, nested: Mapping):
  """The inverse of `to_nested`: `nested`'s leaves in `template`'s structure."""
  leaves = [lookup(nested, keys) for keys, _ in leaf_paths(template)]
  return jax.tree.unflatten(jax.tree.structure(template), leaves)


def flat_shapes(nested: Mapping, prefix=()) -> dict[tuple[str, ...], tuple]:
  """{key path: shape} of a nested dict of arrays, shape structs or orbax array metadata."""
  out = {}
  for k, v in nested.items():
    if isinstance(v, Mapping):
      out.update(flat_shapes(v, prefix + (str(k),)))
    else:
      out[prefix + (str(k),)] = tuple(getattr(v, "shape", ()))
  return out


def handlers() -> dict:
  """The orbax handler of each checkpoint item (reading one item then needs no others)."""
  import orbax.checkpoint as ocp
  out = {k: ocp.StandardCheckpointHandler() for k in (PARAMS, OPT_STATE, TRAIN)}
  out[META] = ocp.JsonCheckpointHandler()
  return out


def _reader(workdir: str):
  import orbax.checkpoint as ocp
  return ocp.CheckpointManager(checkpoint_root(workdir),
                               options=ocp.CheckpointManagerOptions(create=False),
                               item_handlers=handlers())


def item_shapes(workdir: str, step: int, item: str) -> dict[tuple[str, ...], tuple]:
  """{key path: shape} of one stored item, read from its metadata (no array data)."""
  mngr = _reader(workdir)
  try:
    return flat_shapes(mngr.item_metadata(step)[item])
  finally:
    mngr.close()


def restore_item(workdir: str, step: int, item: str, abstract: Mapping):
  """Restores one array item into `abstract` (nested dict of `jax.ShapeDtypeStruct`s whose
  shardings say where each array goes)."""
  import orbax.checkpoint as ocp
  mngr = _reader(workdir)
  try:
    return mngr.restore(step, args=ocp.args.Composite(
        **{item: ocp.args.StandardRestore(abstract)}))[item]
  finally:
    mngr.close()
