"""One way to get models: `load(source, **overrides) -> (encoder, predictor)`, and random init.

`source` is any of
- a converted checkpoint directory (`python -m weights_conversion.convert` output),
- an official `.pt` file (`vitg.pt`, `vjepa2-ac-vitg.pt`, ...; needs PyTorch, the `convert`
  extra), converted in memory,
- a training workdir (`python -m vjepa_jax.main --workdir`): its base weights with the trained
  parameters of its latest (or `step=`) checkpoint on top, LoRA adapters attached, or folded into
  the base kernels with `merge_lora=True`,

local or `gs://`. Overrides change how the models compute, never their parameters: `dtype`,
`attention_impl`, `remat`, `rope_mode`, and `img_size` (the predictor's patch grid; RoPE makes
the encoder size-agnostic). Options that cannot take effect on the given source are errors.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
from etils import epath
from flax import nnx

from vjepa_jax.models import lora as lora_lib
from vjepa_jax.models import pretrained
from vjepa_jax.models import workdir as workdir_lib
from vjepa_jax.models.ac_predictor import ACPredictor
from vjepa_jax.models.vit import VisionTransformer

OVERRIDES = {"dtype": ("float32", "bfloat16", "float64", "float16"),
             "attention_impl": ("xla", "cudnn"), "remat": (True, False),
             "rope_mode": ("official", "interleaved"), "img_size": None}
Sharding = jax.sharding.Sharding | Callable[[tuple, tuple], jax.sharding.Sharding]


def source_kind(source: str) -> str:
  """"pt", "converted" or "workdir"; a clear error for anything else."""
  path = epath.Path(source)
  if str(source).endswith(".pt"):
    return "pt"
  if not path.exists():
    raise FileNotFoundError(f"{source} does not exist")
  if path.is_dir():
    if (path / pretrained.ARCH_FILE).exists():
      return "converted"
    if (path / workdir_lib.RUN_FILE).exists():
      return "workdir"
    raise ValueError(f"{source} is neither a converted checkpoint (no {pretrained.ARCH_FILE}) "
                     f"nor a training workdir (no {workdir_lib.RUN_FILE})")
  if path.is_file():
    return "pt"
  raise ValueError(f"{source} is not a .pt file or a directory")


def check_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
  """Validates config overrides; returns them. Shape-changing or unknown fields are errors."""
  for name, value in overrides.items():
    if name not in OVERRIDES:
      raise ValueError(
          f"cannot override {name!r} when loading: only {sorted(OVERRIDES)} change how a loaded "
          "model computes; every other field is fixed by the weights")
    allowed = OVERRIDES[name]
    if allowed is not None and value not in allowed:
      raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
    if name == "img_size" and (not isinstance(value, int) or value <= 0):
      raise ValueError(f"img_size must be a positive integer, got {value!r}")
  return dict(overrides)


def _apply_sharding(module: nnx.Module, sharding: Sharding | None) -> nnx.Module:
  if sharding is None:
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  state = nnx.state(module)
  placed = []
  for keys, leaf in workdir_lib.leaf_paths(state):
    where = sharding(keys, tuple(leaf.shape)) if callable(sharding) else sharding
    placed.append(jax.device_put(leaf, where))
  nnx.update(module, jax.tree.unflatten(jax.tree.structure(state), placed))
  return module


def random_model(kind: str, cfg, seed: int) -> nnx.Module:
  """A randomly initialised `encoder` (VisionTransformer) or `predictor` (ACPredictor) with the
  official initialisation (truncated normal 0.02, residual projections scaled by depth)."""
  ctor = {"encoder": VisionTransformer, "predictor": ACPredictor}[kind]
  return ctor(cfg, rngs=nnx.Rngs(seed))


def load(source: str, *, step: int | None = None, merge_lora: bool = False,
         sharding: Sharding | None = None, encoder_num_heads: int | None = None,
         predictor_num_heads: int | None = None, encoder_key: str | None = None,
         allow_nonfinite: bool = False, **overrides) -> tuple[nnx.Module, nnx.Module | None]:
  """(encoder, predictor) NNX modules from a converted directory, `.pt` file or training workdir.

  Args:
    source: local or gs:// path (see the module docstring).
    step: workdirs only: the checkpoint step (default: the latest).
    merge_lora: workdirs only: fold LoRA adapters into the base kernels (no-op without them).
    sharding: where the parameters go: one `jax.sharding.Sharding` for all, or a function of
      (parameter path, shape); default: the first local device.
    encoder_num_heads, predictor_num_heads, encoder_key, allow_nonfinite: `.pt` files only, as
      the converter's options (head counts are needed only for sizes that were not released).
    **overrides: `dtype`, `attention_impl`, `remat`, `rope_mode`, `img_size`.

  Returns:
    (encoder, predictor); predictor is None when the source has none (a pre-training checkpoint).
  """
  overrides = check_overrides(overrides)
  kind = source_kind(source)
  pt_options = {"encoder_num_heads": encoder_num_heads, "predictor_num_heads": predictor_num_heads,
                "encoder_key": encoder_key, "allow_nonfinite": allow_nonfinite or None}
  problems = []
  given = [k for k, v in pt_options.items() if v is not None]
  if given and kind != "pt":
    problems.append(f"{', '.join(given)} only apply to .pt files")
  given = [k for k, v in (("step", step), ("merge_lora", merge_lora or None)) if v is not None]
  if given and kind != "workdir":
    problems.append(f"{', '.join(given)} only apply to training workdirs")
  if problems:
    raise ValueError(f"cannot take effect on {source} (a {kind} source): "
                     + "; ".join(problems))
  if kind == "pt":
    models = _from_pt(source, encoder_num_heads, predictor_num_heads, encoder_key,
                      allow_nonfinite, overrides)
  elif kind == "converted":
    models = pretrained.load_converted(source, overrides={"encoder": overrides,
                                                          "predictor": overrides})
  else:
    models = _from_workdir(source, step, merge_lora, overrides)
  encoder = _apply_sharding(models["encoder"], sharding)
  predictor = models.get("predictor")
  if predictor is not None:
    predictor = _apply_sharding(predictor, sharding)
  return encoder, predictor


def _from_pt(path: str, encoder_num_heads, predictor_num_heads, encoder_key, allow_nonfinite,
             overrides) -> dict[str, nnx.Module]:
  from vjepa_jax.models import params
  ckpt = params.load_torch_file(path)
  converted = params.convert_checkpoint(ckpt, encoder_num_heads, predictor_num_heads,
                                        overrides.get("img_size", 256), encoder_key,
                                        allow_nonfinite)
  return {kind: pretrained.build_model(kind, cfg.replace(**overrides), flat)
          for kind, (cfg, flat) in converted.items()}


def base_models(workdir: str, run: Mapping, overrides: Mapping[str, Any]
                ) -> dict[str, nnx.Module]:
  """The base encoder and predictor a run trained from, checked against its recorded sha256."""
  out = {}
  for kind, rec in run["base"].items():
    directory = workdir_lib.base_dir(workdir, rec["dir"])
    try:
      sha = pretrained.params_sha256(directory)
    except FileNotFoundError:
      raise FileNotFoundError(
          f"{workdir} was trained from the {kind} in {directory}, which is no longer there: "
          f"restore it (sha256 {rec['sha256'][:16]}...) to load the run") from None
    if sha != rec["sha256"]:
      raise ValueError(
          f"{workdir} was trained from the {kind} in {directory} with sha256 "
          f"{rec['sha256'][:16]}..., but that directory now holds other weights (sha256 "
          f"{sha[:16]}...): put the original weights back to load the run")
    out[kind] = pretrained.load_converted(directory, kinds=(kind,),
                                          overrides={kind: dict(overrides)})[kind]
  return out


def _from_workdir(workdir: str, step: int | None, merge_lora: bool,
                  overrides: Mapping[str, Any]) -> dict[str, nnx.Module]:
  run = workdir_lib.read_run(workdir)
  overrides = {"rope_mode": run["config"]["model"]["rope_mode"], **overrides}
  models = base_models(workdir, run, overrides)
  lora_lib.attach(models["encoder"], models["predictor"], run["config"]["mode"],
                  run["config"]["lora"])
  available = workdir_lib.steps(workdir)
  if not available:
    raise FileNotFoundError(f"{workdir} holds no checkpoint yet (nothing under "
                            f"{workdir_lib.checkpoint_root(workdir)})")
  step = available[-1] if step is None else step
  if step not in available:
    raise ValueError(f"{workdir} has no checkpoint at step {step}; it has {available}")
  restore_trained(workdir, step, models)
  if merge_lora:
    for module in models.values():
      lora_lib.merge_lora(module)
  return models


def restore_trained(workdir: str, step: int, models: Mapping[str, nnx.Module]) -> None:
  """Writes the `params` item of checkpoint `step` into `models` ({"encoder": ..,
  "predictor": ..} with the run's adapters attached), on the device of each parameter."""
  variables = {}
  for kind, module in models.items():
    for path, var in nnx.to_flat_state(nnx.state(module, nnx.Param)):
      variables[(kind,) + tuple(str(p) for p in path)] = var
  stored = workdir_lib.item_shapes(workdir, step, workdir_lib.PARAMS)
  bad = [("/".join(k), s, tuple(variables[k].get_value().shape) if k in variables else None)
         for k, s in stored.items()
         if k not in variables or tuple(variables[k].get_value().shape) != s]
  if bad:
    raise ValueError(f"{workdir} step {step} holds parameters this model does not have or with "
                     f"other shapes (path, stored, model): {bad[:10]}")
  abstract: dict = {}
  for keys in stored:
    value = variables[keys].get_value()
    node = abstract
    for k in keys[:-1]:
      node = node.setdefault(k, {})
    node[keys[-1]] = jax.ShapeDtypeStruct(value.shape, value.dtype, sharding=value.sharding)
  restored = workdir_lib.restore_item(workdir, step, workdir_lib.PARAMS, abstract)
  for keys in stored:
    variables[keys].set_value(workdir_lib.lookup(restored, keys))
