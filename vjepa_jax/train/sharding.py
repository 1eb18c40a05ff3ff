"""Device mesh, the logical-axis rules table, and parameter / batch shardings.

Mesh axes are (data, fsdp, tensor). The batch is split over (data, fsdp); weights are split over
fsdp (and tensor for head/MLP dims). Every rule lives in the two tables below.
"""
from __future__ import annotations

import re

import jax
import ml_collections
import numpy as np
from jax.sharding import AxisType
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

AXES = ("data", "fsdp", "tensor")

# logical axis -> mesh axes.
RULES = {
    "batch": ("data", "fsdp"),
    "embed": "fsdp",
    "mlp": "tensor",
    "heads": "tensor",
    "vocab": None,
}

# parameter path regex -> logical axes of its dims (first match wins; unmatched = replicated).
PARAM_AXES = (
    (r".*attn\.qkv\.kernel", ("embed", "heads")),
    (r".*attn\.proj\.kernel", ("heads", "embed")),
    (r".*mlp\.fc1\.kernel", ("embed", "mlp")),
    (r".*mlp\.fc2\.kernel", ("mlp", "embed")),
    (r".*(predictor_embed|predictor_proj)\.kernel", ("embed", None)),
    (r".*lora\.lora_a", (None, None)),
    (r".*lora\.lora_b", (None, None)),
)


def mesh_shape(cfg: ml_collections.ConfigDict, num_devices: int) -> dict[str, int]:
  """{axis: size} from `cfg.data`, `cfg.fsdp`, `cfg.tensor`; one of them may be -1 (fill)."""
  sizes = [int(cfg.get(a, 1)) for a in AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"at most one mesh axis may be -1, got {dict(zip(AXES, sizes))}")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if num_devices % known:
      raise ValueError(f"{num_devices} devices do not divide into mesh "
                       f"{dict(zip(AXES, sizes))}")
    sizes[sizes.index(-1)] = num_devices // known
  if int(np.prod(sizes)) != num_devices:
    raise ValueError(f"mesh {dict(zip(AXES, sizes))} needs {int(np.prod(sizes))} devices, "
                     f"{num_devices} available")
  return dict(zip(AXES, sizes))


def make_mesh(cfg: ml_collections.ConfigDict, devices=None) -> Mesh:
  """Mesh over `devices` (default: all) with the sizes of `mesh_shape`."""
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(cfg, len(devices))
  arr = np.asarray(devices).reshape([shape[a] for a in AXES])
  return Mesh(arr, AXES, axis_types=(AxisType.Auto,) * len(AXES))


def _mesh_axes(logical, mesh: Mesh, dim: int):
  axes = RULES.get(logical) if logical else None
  if axes is None:
    return None
  names = (axes,) if isinstance(axes, str) else tuple(axes)
  size = int(np.prod([mesh.shape[a] for a in names]))
  if size == 1 or dim % size:
    return None
  return names[0] if len(names) == 1 else names


def param_spec(path: str, shape: tuple, mesh: Mesh) -> P:
  """PartitionSpec of one parameter from the rules; dims that do not divide stay replicated."""
  for pattern, logical in PARAM_AXES:
    if re.fullmatch(pattern, path) and len(logical) == len(shape):
      return P(*[_mesh_axes(l, mesh, d) for l, d in zip(logical, shape)])
  if len(shape) >= 2:
    # Other matrices (patch embedding, conditioning encoders): split the largest divisible dim.
    spec = [None] * len(shape)
    for i in np.argsort(shape)[::-1]:
      ax = _mesh_axes("embed", mesh, shape[i])
      if ax is not None:
        spec[i] = ax
        break
    return P(*spec)
  return P()


def tree_shardings(tree, mesh: Mesh):
  """NamedShardings for an `nnx.State` (or any pytree keyed by paths)."""
  def one(path, leaf):
    name = ".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
    name = re.sub(r"\.(value|raw_value)$", "", name)
    return NamedSharding(mesh, param_spec(name, tuple(leaf.shape), mesh))
  return jax.tree_util.tree_map_with_path(one, tree)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(RULES["batch"]))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_parallel_size(mesh: Mesh) -> int:
  return int(np.prod([mesh.shape[a] for a in RULES["batch"]]))


def global_batch(local: dict, mesh: Mesh) -> dict:
  """Assembles per-process NumPy batches into global arrays sharded over (data, fsdp)."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}
