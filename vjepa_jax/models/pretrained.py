"""Building models from parameter trees, and reading/writing converted checkpoints.

A converted checkpoint is a directory with `architecture.json` (the configs, written last) and
one folder per model (`encoder`, `predictor`) holding its parameter tree split over orbax items
`part-00000`, `part-00001`, ... of a few hundred MB each, so that writing a model never holds more
than one part in memory. Paths may be local or `gs://`.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import nnx

from vjepa_jax.models.ac_predictor import ACPredictor
from vjepa_jax.models.configs import EncoderConfig
from vjepa_jax.models.configs import PredictorConfig
from vjepa_jax.models.vit import VisionTransformer

ARCH_FILE = "architecture.json"
FORMAT_VERSION = 2
PART_PREFIX = "part-"
PART_BYTES = 256 * 2**20


def abstract_model(kind: str, cfg) -> nnx.Module:
  """A model whose parameters are shape structs (no memory allocated)."""
  ctor = {"encoder": VisionTransformer, "predictor": ACPredictor}[kind]
  return nnx.eval_shape(lambda: ctor(cfg, rngs=nnx.Rngs(0)))


def param_shapes(kind: str, cfg) -> dict[tuple, tuple]:
  """{parameter path: shape} of a model, from its abstract state."""
  state = nnx.state(abstract_model(kind, cfg), nnx.Param)
  return {tuple(path): tuple(v.shape) for path, v in nnx.to_flat_state(state)}


def build_model(kind: str, cfg, flat_params: Mapping[tuple, Any]) -> nnx.Module:
  """Builds a model directly from `{path: array}` without a random-init copy in memory."""
  model = abstract_model(kind, cfg)
  graphdef, state = nnx.split(model)
  flat = nnx.to_flat_state(state)
  leaves = []
  for path, var in flat:
    path = tuple(path)
    if path not in flat_params:
      raise KeyError(f"no value for parameter {'.'.join(map(str, path))}")
    value = flat_params[path]
    if tuple(value.shape) != tuple(var.shape):
      raise ValueError(f"parameter {'.'.join(map(str, path))}: shape {tuple(value.shape)} != "
                       f"{tuple(var.shape)}")
    leaves.append((path, var.replace(jnp.asarray(value))))
  return nnx.merge(graphdef, nnx.from_flat_state(leaves))


def flat_params(model: nnx.Module) -> dict[tuple, jax.Array]:
  """{path: array} of the base parameters (LoRA adapters excluded)."""
  state = nnx.state(model, nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam)))
  return {tuple(p): v.get_value() for p, v in nnx.to_flat_state(state)}


def _nested(flat: Mapping[tuple, Any]) -> dict:
  out: dict = {}
  for path, v in flat.items():
    d = out
    for p in path[:-1]:
      d = d.setdefault(str(p), {})
    d[str(path[-1])] = v
  return out


def _flatten(tree: Mapping, prefix=()) -> dict[tuple, Any]:
  out = {}
  for k, v in tree.items():
    key = int(k) if k.isdigit() else k
    if isinstance(v, Mapping):
      out.update(_flatten(v, prefix + (key,)))
    else:
      out[prefix + (key,)] = v
  return out


def _root(directory: str) -> epath.Path:
  """orbax needs absolute local paths; remote (gs://) paths are used as given."""
  path = epath.Path(directory)
  return path if "://" in str(directory) else path.resolve()


def config_to_dict(cfg) -> dict:
  return dataclasses.asdict(cfg)


def _part_name(i: int) -> str:
  return f"{PART_PREFIX}{i:05d}"


def save_item(directory: str, kind: str,
              params: Mapping[tuple, Any] | Iterable[tuple[tuple, Any]],
              part_bytes: int = PART_BYTES) -> None:
  """Writes one model's parameters as orbax items `<directory>/<kind>/part-NNNNN`.

  Args:
    directory: converted checkpoint directory (local or gs://).
    kind: `encoder` or `predictor`.
    params: `{path: array}`, or an iterator of `(path, array)` pairs that makes each array only
      when asked (the converter's), so that no more than one part is ever held in memory.
    part_bytes: parameters are grouped into orbax items of about this size. orbax stages about
      two copies of what one save writes, so small parts keep that cost small; any array larger
      than this is a part of its own.
  """
  import orbax.checkpoint as ocp
  item = _root(directory) / kind
  # Parts of an earlier write must not mix with these; orbax creates the folders it writes to
  # (on the primary process, like this removal).
  if jax.process_index() == 0 and item.exists():
    item.rmtree()
  pairs = params.items() if isinstance(params, Mapping) else params
  part: dict[tuple, np.ndarray] = {}
  size = count = 0
  with ocp.StandardCheckpointer() as ckptr:

    def flush():
      ckptr.save(item / _part_name(count), _nested(part), force=True)
      ckptr.wait_until_finished()

    for path, value in pairs:
      value = np.asarray(value)
      if part and size + value.nbytes > part_bytes:
        flush()
        part, size, count = {}, 0, count + 1
      part[path] = value
      size += value.nbytes
    if not part:
      raise ValueError(f"{kind}: no parameters to save")
    flush()


def write_architecture(directory: str, configs: Mapping[str, Any],
                       source: Mapping[str, Any]) -> None:
  """Writes `architecture.json` last: its presence marks a complete converted checkpoint."""
  arch = {"format_version": FORMAT_VERSION, "source": dict(source),
          "models": {kind: config_to_dict(cfg) for kind, cfg in configs.items()}}
  (_root(directory) / ARCH_FILE).write_text(json.dumps(arch, indent=2, sort_keys=True))


def save_converted(directory: str, models: Mapping[str, tuple[Any, Mapping[tuple, Any]]],
                   source: Mapping[str, Any]) -> None:
  """Writes `{kind: (config, flat params)}` as orbax items plus `architecture.json`."""
  for kind, (_, flat) in models.items():
    save_item(directory, kind, flat)
  write_architecture(directory, {kind: cfg for kind, (cfg, _) in models.items()}, source)


def read_architecture(directory: str) -> dict:
  path = epath.Path(directory) / ARCH_FILE
  if not path.exists():
    raise FileNotFoundError(f"{directory} is not a converted vjepa-jax checkpoint: no {ARCH_FILE}")
  return json.loads(path.read_text())


def params_sha256(directory: str) -> str:
  """Identity of a converted checkpoint: the sha256 of its parameters, written at conversion."""
  arch = read_architecture(directory)
  digest = arch.get("source", {}).get("params_sha256")
  if not digest:
    raise ValueError(f"{directory}/{ARCH_FILE} records no params_sha256")
  return digest


def load_converted(directory: str, kinds=("encoder", "predictor"),
                   overrides: Mapping[str, Mapping[str, Any]] | None = None
                   ) -> dict[str, nnx.Module]:
  """Loads the models of a converted checkpoint.

  Args:
    directory: output of `python -m weights_conversion.convert`.
    kinds: which models to load (those absent from the checkpoint are skipped).
    overrides: per-kind config fields to change that do not affect parameters (dtype,
      attention_impl, remat, rope_mode).
  """
  arch = read_architecture(directory)
  if arch.get("format_version") != FORMAT_VERSION:
    raise ValueError(f"{directory} was written in format {arch.get('format_version')}; this "
                     f"vjepa-jax reads format {FORMAT_VERSION}: convert the checkpoint again")
  overrides = overrides or {}
  out = {}
  root = _root(directory)
  for kind in kinds:
    if kind not in arch["models"]:
      continue
    ctor = EncoderConfig if kind == "encoder" else PredictorConfig
    cfg = ctor(**arch["models"][kind]).replace(**dict(overrides.get(kind, {})))
    out[kind] = build_model(kind, cfg, _restore_item(root / kind, param_shapes(kind, cfg)))
  return out


def _restore_item(item: epath.Path, shapes: Mapping[tuple, tuple]) -> dict[tuple, Any]:
  """Reads every part of one model, checking that together they hold exactly `shapes`."""
  import orbax.checkpoint as ocp
  # Only finished parts: orbax writes into a temporary folder and renames it when done.
  parts = sorted(p for p in item.iterdir() if p.name.startswith(PART_PREFIX)
                 and p.name[len(PART_PREFIX):].isdigit()) if item.exists() else []
  if not parts:
    raise FileNotFoundError(f"{item} holds no parameters (expected {PART_PREFIX}* items)")
  flat: dict[tuple, Any] = {}
  with ocp.StandardCheckpointer() as ckptr:
    for part in parts:
      stored = {tuple(int(k.key) if k.key.isdigit() else k.key for k in keypath): meta.shape
                for keypath, meta in jax.tree_util.tree_flatten_with_path(
                    ckptr.metadata(part).item_metadata)[0]}
      bad = [".".join(map(str, p)) for p, s in stored.items()
             if p in flat or tuple(shapes.get(p, ())) != tuple(s)]
      if bad:
        raise ValueError(f"{part}: unexpected, repeated or mis-shaped parameters: {bad[:20]}")
      target = _nested({p: jax.ShapeDtypeStruct(shapes[p], jnp.float32) for p in stored})
      flat.update(_flatten(ckptr.restore(part, target)))
  missing = [".".join(map(str, p)) for p in shapes if p not in flat]
  if missing:
    raise ValueError(f"{item}: missing parameters ({len(missing)}): {missing[:20]}")
  return flat


class Loaded:
  """A model with its parameters, callable on NumPy or JAX inputs through one jitted function.

  Attributes:
    module: the NNX module (parameters inside).
    params: its parameter state (`nnx.State`), a printable pytree.
    config: the architecture config.
  """

  def __init__(self, module: nnx.Module):
    self.module = module
    self.config = module.cfg
    graphdef, self.params = nnx.split(module)

    def apply(state, *args, **kwargs):
      return nnx.merge(graphdef, state)(*args, **kwargs)

    self._apply: Callable = jax.jit(apply)

  def __call__(self, *args, **kwargs):
    args = [None if a is None else jnp.asarray(a) for a in args]
    kwargs = {k: None if v is None else jnp.asarray(v) for k, v in kwargs.items()}
    return self._apply(self.params, *args, **kwargs)

  def __repr__(self) -> str:
    return f"Loaded({type(self.module).__name__}, {self.config})"
