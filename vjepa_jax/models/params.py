"""Official V-JEPA 2 state dicts <-> vjepa-jax parameter trees, without PyTorch.

Input of the import direction: a `{name: tensor}` state dict (torch tensors, memory-mapped or not,
or NumPy arrays). Output: `{param_path: np.ndarray}` keyed like `nnx.to_flat_state` paths. Every
source tensor must be consumed, every target parameter filled with the right shape and every
value finite; anything else is a `ConversionError` naming the tensors. `to_state_dict` is the way
back (export). `.pt` files are opened by `load_torch_file` (PyTorch imported only then).
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import zipfile
from typing import Any, Callable, Iterable, Iterator, Mapping, NamedTuple

import numpy as np

from vjepa_jax.models import configs
from vjepa_jax.models import pretrained

# Keys the official RoPE models may carry that hold no weights of a RoPE model.
IGNORED_KEYS = ("pos_embed",)
_PREFIXES = ("module.", "backbone.")
AC_KEYS = ("encoder", "predictor")
PRETRAIN_KEYS = ("encoder", "target_encoder")


class ConversionError(ValueError):
  """A checkpoint that does not map exactly onto the target architecture.

  Shapes are given in the checkpoint's (PyTorch) layout, the expected one included.
  """

  def __init__(self, what: str, missing=(), unexpected=(), misshaped=(), nonfinite=()):
    self.missing, self.unexpected = list(missing), list(unexpected)
    self.misshaped, self.nonfinite = list(misshaped), list(nonfinite)
    lines = [f"{what}: the checkpoint does not match the architecture exactly; nothing loaded."]
    if self.missing:
      lines.append(f"  missing ({len(self.missing)}): " + ", ".join(self.missing[:20]))
    if self.unexpected:
      lines.append(f"  unexpected ({len(self.unexpected)}): " + ", ".join(self.unexpected[:20]))
    if self.misshaped:
      lines.append(f"  mis-shaped ({len(self.misshaped)}): " + ", ".join(
          f"{k} {list(s)}, expected {list(e)}" for k, s, e in self.misshaped[:20]))
    if self.nonfinite:
      lines.append(f"  non-finite values (NaN or Inf) in ({len(self.nonfinite)}): "
                   + ", ".join(self.nonfinite[:20]))
    super().__init__("\n".join(lines))


def strip_prefixes(state_dict: Mapping[str, object]) -> dict[str, object]:
  """Removes every `module.` and `backbone.` component, as the official hub loader does."""
  out = {}
  for k, v in state_dict.items():
    name = k
    for prefix in _PREFIXES:
      name = name.replace(prefix, "")
    if name in out:
      raise ConversionError(f"two tensors map to {name!r} after stripping prefixes",
                            unexpected=[k])
    out[name] = v
  return out


def _linear(w):
  return np.ascontiguousarray(np.asarray(w).T)


def _identity(w):
  return np.asarray(w)


def _conv3d(w):
  return np.ascontiguousarray(np.transpose(np.asarray(w), (2, 3, 4, 1, 0)))


def _official_shape(fn, shape: tuple) -> tuple:
  """The checkpoint-layout shape of a parameter of vjepa-jax shape `shape` under transform `fn`."""
  if fn is _linear:
    return tuple(reversed(shape))
  if fn is _conv3d:
    t, h, w, i, o = shape
    return (o, i, t, h, w)
  return tuple(shape)


def _rules(prefix_blocks: str) -> list[tuple[re.Pattern, Callable[[re.Match], tuple], Callable]]:
  """(source regex, target path builder, tensor transform) for a block stack."""
  b = re.escape(prefix_blocks)
  return [
      (re.compile(rf"{b}\.(\d+)\.(norm1|norm2)\.weight"),
       lambda m: (prefix_blocks, int(m[1]), m[2], "scale"), _identity),
      (re.compile(rf"{b}\.(\d+)\.(norm1|norm2)\.bias"),
       lambda m: (prefix_blocks, int(m[1]), m[2], "bias"), _identity),
      (re.compile(rf"{b}\.(\d+)\.(attn|mlp)\.(qkv|proj|fc1|fc2)\.weight"),
       lambda m: (prefix_blocks, int(m[1]), m[2], m[3], "kernel"), _linear),
      (re.compile(rf"{b}\.(\d+)\.(attn|mlp)\.(qkv|proj|fc1|fc2)\.bias"),
       lambda m: (prefix_blocks, int(m[1]), m[2], m[3], "bias"), _identity),
  ]


def _top_rules(linears: Iterable[str], norms: Iterable[str]):
  rules = []
  for name in linears:
    rules.append((re.compile(rf"{name}\.weight"), lambda m, n=name: (n, "kernel"), _linear))
    rules.append((re.compile(rf"{name}\.bias"), lambda m, n=name: (n, "bias"), _identity))
  for name in norms:
    rules.append((re.compile(rf"{name}\.weight"), lambda m, n=name: (n, "scale"), _identity))
    rules.append((re.compile(rf"{name}\.bias"), lambda m, n=name: (n, "bias"), _identity))
  return rules


ENCODER_RULES = _rules("blocks") + _top_rules([], ["norm"]) + [
    (re.compile(r"patch_embed\.proj\.weight"), lambda m: ("patch_embed", "kernel"), _conv3d),
    (re.compile(r"patch_embed\.proj\.bias"), lambda m: ("patch_embed", "bias"), _identity),
]
PREDICTOR_RULES = _rules("predictor_blocks") + _top_rules(
    ["predictor_embed", "action_encoder", "state_encoder", "extrinsics_encoder",
     "predictor_proj"], ["predictor_norm"])


def official_name(kind: str, path: tuple) -> tuple[str, Callable]:
  """(official tensor name without prefix, import transform) of a vjepa-jax parameter path."""
  for pattern, target, fn in ENCODER_RULES if kind == "encoder" else PREDICTOR_RULES:
    *parents, leaf = (str(p) for p in path)
    if parents == ["patch_embed"]:
      parents = ["patch_embed", "proj"]
    name = ".".join(parents + ["weight" if leaf in ("kernel", "scale") else leaf])
    m = pattern.fullmatch(name)
    if m and target(m) == tuple(path):
      return name, fn
  raise ValueError(f"{kind} parameter {'.'.join(map(str, path))} has no official counterpart")


def to_state_dict(kind: str, flat: Mapping[tuple, Any]) -> dict[str, np.ndarray]:
  """{param path: array} -> {official name: float32 array} in the checkpoint's layout.

  Dense kernels [in, out] become weights [out, in]; the tubelet conv kernel [t, h, w, I, O]
  becomes [O, I, t, h, w]; LayerNorm scales become weights.
  """
  out = {}
  for path, value in flat.items():
    name, fn = official_name(kind, path)
    w = np.asarray(value, dtype=np.float32)
    if fn is _linear:
      w = w.T
    elif fn is _conv3d:
      w = np.transpose(w, (4, 3, 0, 1, 2))
    out[name] = np.array(w, dtype=np.float32, order="C")
  return out


def _shape(x) -> tuple:
  return tuple(int(d) for d in x.shape)


def _depth(keys: Iterable[str], prefix: str) -> int:
  idx = [int(m[1]) for k in keys if (m := re.match(rf"{re.escape(prefix)}\.(\d+)\.", k))]
  return max(idx) + 1 if idx else 0


def _require(sd: Mapping, keys: Iterable[str], what: str) -> None:
  missing = [k for k in keys if k not in sd]
  if missing:
    raise ConversionError(f"not a V-JEPA 2 {what} state dict", missing=missing,
                          unexpected=sorted(sd)[:10])


HEAD_FLAGS = {"encoder": "--encoder-num-heads", "predictor": "--predictor-num-heads"}


def _heads(width: int, given: int | None, known: Mapping[int, int], what: str
           ) -> tuple[int | None, str | None]:
  """(head count, None) or (None, the problem in words)."""
  flag = HEAD_FLAGS[what]
  if given is not None:
    heads = int(given)
  elif width in known:
    heads = known[width]
  else:
    return None, (f"cannot infer the number of {what} attention heads for width {width} (not a "
                  f"released size: {sorted(known)}); pass {flag} "
                  f"({what}_num_heads in Python)")
  if heads <= 0 or width % heads:
    return None, f"{what} width {width} is not divisible by {flag}={heads}"
  from vjepa_jax.models import rope
  try:
    rope.check_head_dim(width // heads)
  except ValueError as e:
    return None, f"{what}: {flag}={heads} gives {e}"
  return heads, None


def _raise_head_problems(problems: list[str]) -> None:
  problems = [p for p in problems if p]
  if problems:
    raise ValueError("; ".join(problems))


def infer_encoder_config(sd: Mapping, num_heads: int | None = None,
                         img_size: int = 256) -> configs.EncoderConfig:
  """Architecture of an encoder state dict (everything but the head count is in the shapes)."""
  _require(sd, ["patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "blocks.0.mlp.fc1.weight",
                "norm.weight"], "encoder")
  e, c, t, p, p2 = _shape(sd["patch_embed.proj.weight"])
  if p != p2:
    raise ConversionError("patch embedding is not square",
                          misshaped=[("patch_embed.proj.weight", (e, c, t, p, p2),
                                      (e, c, t, p, p))])
  hidden = _shape(sd["blocks.0.mlp.fc1.weight"])[0]
  heads, problem = _heads(e, num_heads, configs.KNOWN_ENCODER_HEADS, "encoder")
  _raise_head_problems([problem])
  return configs.EncoderConfig(embed_dim=e, depth=_depth(sd, "blocks"), num_heads=heads,
                               mlp_hidden=hidden, patch_size=p, tubelet_size=t, in_chans=c,
                               img_size=img_size)


def infer_predictor_config(sd: Mapping, num_heads: int | None = None, img_size: int = 256,
                           patch_size: int = 16, tubelet_size: int = 2) -> configs.PredictorConfig:
  """Architecture of an AC predictor state dict; the patch grid comes from `img_size`."""
  _require(sd, ["predictor_embed.weight", "action_encoder.weight", "state_encoder.weight",
                "predictor_blocks.0.mlp.fc1.weight", "predictor_proj.weight"], "AC predictor")
  p, e = _shape(sd["predictor_embed.weight"])
  action_dim = _shape(sd["action_encoder.weight"])[1]
  hidden = _shape(sd["predictor_blocks.0.mlp.fc1.weight"])[0]
  heads, problem = _heads(p, num_heads, configs.KNOWN_PREDICTOR_HEADS, "predictor")
  _raise_head_problems([problem])
  if img_size % patch_size:
    raise ValueError(f"img_size {img_size} is not a multiple of the patch size {patch_size}")
  return configs.PredictorConfig(embed_dim=e, predictor_embed_dim=p,
                                 depth=_depth(sd, "predictor_blocks"), num_heads=heads,
                                 mlp_hidden=hidden, patch_size=patch_size,
                                 tubelet_size=tubelet_size, img_size=img_size,
                                 action_dim=action_dim)


def is_ac_predictor(sd: Mapping) -> bool:
  return "action_encoder.weight" in sd and "predictor_embed.weight" in sd


def plan(sd: Mapping, expected: Mapping[tuple, tuple], rules, what: str
         ) -> dict[str, tuple[tuple, Callable]]:
  """Checks a stripped state dict against `expected` ({target path: shape}) without reading any
  tensor data; returns {source name: (target path, transform)}.

  Raises:
    ConversionError: listing missing, unexpected and mis-shaped keys.
  """
  out, unexpected, misshaped = {}, [], []
  for name in sd:
    if name in IGNORED_KEYS:
      continue
    for pattern, target, fn in rules:
      m = pattern.fullmatch(name)
      if m:
        out[name] = (target(m), fn)
        break
    else:
      unexpected.append(name)
  for name, (path, fn) in list(out.items()):
    if path not in expected:
      unexpected.append(name)
      del out[name]
      continue
    src = _shape(sd[name])
    want = _official_shape(fn, tuple(expected[path]))
    if src != want:
      misshaped.append((name, src, want))
  filled = {path for path, _ in out.values()}
  missing = [".".join(map(str, p)) for p in expected if p not in filled]
  if missing or unexpected or misshaped:
    raise ConversionError(what, missing=sorted(missing), unexpected=sorted(unexpected),
                          misshaped=misshaped)
  return out


def path_key(path: tuple) -> tuple[str, ...]:
  """Sort key of a parameter path (the order the parameter digest uses)."""
  return tuple(map(str, path))


def iter_materialize(sd: Mapping, planned: Mapping[str, tuple[tuple, Callable]],
                     release: Callable[[object], None] = lambda t: None, dtype=np.float32
                     ) -> Iterator[tuple[str, tuple, np.ndarray]]:
  """Yields `(source name, path, array)` one converted tensor at a time, in `path_key` order.

  Each array owns its memory (never a view of the source), and `release(source tensor)` is called
  once it is made, so the caller holds only what it keeps of the yielded arrays.
  """
  for name, (path, fn) in sorted(planned.items(), key=lambda item: path_key(item[1][0])):
    src = sd[name]
    out = fn(_to_numpy(src)).astype(dtype, copy=False)
    if out.base is not None:
      out = out.copy()
    release(src)
    yield name, path, out


def materialize(sd: Mapping, planned: Mapping[str, tuple[tuple, Callable]], what: str = "",
                dtype=np.float32, allow_nonfinite: bool = False) -> dict[tuple, np.ndarray]:
  """Converts the planned tensors one at a time (`sd` may be lazily memory-mapped).

  Raises:
    ConversionError: naming every tensor with NaN or Inf values, unless `allow_nonfinite`.
  """
  out, bad = {}, []
  for name, path, value in iter_materialize(sd, planned, dtype=dtype):
    if not np.isfinite(value).all():
      bad.append(name)
    out[path] = value
  if bad and not allow_nonfinite:
    raise ConversionError(what or "checkpoint", nonfinite=bad)
  return out


def convert(sd: Mapping, expected: Mapping[tuple, tuple], rules, what: str,
            dtype=np.float32, allow_nonfinite: bool = False) -> dict[tuple, np.ndarray]:
  """`plan` + `materialize`: strict accounting first, then the tensors."""
  return materialize(sd, plan(sd, expected, rules, what), what, dtype, allow_nonfinite)


def _to_numpy(x) -> np.ndarray:
  if isinstance(x, np.ndarray):
    return x
  if hasattr(x, "detach"):
    x = x.detach()
    if str(x.dtype) == "torch.bfloat16":
      x = x.float()
    return x.numpy()
  return np.asarray(x)


# -- Whole checkpoints ------------------------------------------------------------------------


def pick_encoder_key(ckpt: Mapping[str, Any], encoder_key: str | None) -> str:
  """Which encoder copy to convert.

  AC checkpoints hold two identical copies; pre-training checkpoints hold the gradient-trained
  `encoder` and its EMA `target_encoder`. The AC recipe starts from `target_encoder`, so that is
  the default for pre-training files.
  """
  if encoder_key is not None:
    if encoder_key not in ckpt:
      raise ValueError(f"checkpoint has no {encoder_key!r} entry; top-level keys: {sorted(ckpt)}")
    return encoder_key
  if "target_encoder" in ckpt and not _has_ac_predictor(ckpt):
    return "target_encoder"
  if "encoder" in ckpt:
    return "encoder"
  if "target_encoder" in ckpt:
    return "target_encoder"
  raise ValueError(
      "not a V-JEPA 2 checkpoint: expected top-level 'encoder'/'target_encoder' (pre-training) or "
      f"'encoder'/'predictor' (V-JEPA 2-AC) state dicts, found keys {sorted(ckpt)[:20]}")


def _has_ac_predictor(ckpt: Mapping[str, Any]) -> bool:
  pred = ckpt.get("predictor")
  return isinstance(pred, Mapping) and is_ac_predictor(strip_prefixes(pred))


class Job(NamedTuple):
  """One model to convert: its config, stripped state dict and checked tensor plan."""
  kind: str
  config: Any
  state_dict: Mapping[str, Any]
  plan: dict
  what: str


def plan_checkpoint(ckpt: Mapping[str, Any], encoder_num_heads: int | None = None,
                    predictor_num_heads: int | None = None, img_size: int = 256,
                    encoder_key: str | None = None) -> list[Job]:
  """Infers the architectures and checks every tensor's name and shape, reading no tensor data.

  Raises (before anything is converted or written) on any mismatch; head counts that cannot be
  inferred are reported together.
  """
  if not isinstance(ckpt, Mapping):
    raise ValueError(f"not a V-JEPA 2 checkpoint: top level is a {type(ckpt).__name__}, "
                     "expected a dict of state dicts")
  key = pick_encoder_key(ckpt, encoder_key)
  enc_sd = ckpt[key]
  if not isinstance(enc_sd, Mapping):
    raise ValueError(f"not a V-JEPA 2 checkpoint: {key!r} is not a state dict")
  enc_sd = strip_prefixes(enc_sd)
  pred = ckpt.get("predictor")
  pred_sd = strip_prefixes(pred) if isinstance(pred, Mapping) else None
  if pred_sd is not None and not is_ac_predictor(pred_sd):
    logging.info("skipping the checkpoint's mask-token (pre-training) predictor: only the "
                 "encoder of pre-training checkpoints is converted")
    pred_sd = None
  if "patch_embed.proj.weight" in enc_sd:
    problems = [_heads(_shape(enc_sd["patch_embed.proj.weight"])[0], encoder_num_heads,
                       configs.KNOWN_ENCODER_HEADS, "encoder")[1]]
    if pred_sd is not None and "predictor_embed.weight" in pred_sd:
      problems.append(_heads(_shape(pred_sd["predictor_embed.weight"])[0], predictor_num_heads,
                             configs.KNOWN_PREDICTOR_HEADS, "predictor")[1])
    _raise_head_problems(problems)
  enc_cfg = infer_encoder_config(enc_sd, encoder_num_heads, img_size)
  jobs = [Job("encoder", enc_cfg, enc_sd, plan(
      enc_sd, pretrained.param_shapes("encoder", enc_cfg), ENCODER_RULES,
      f"encoder ({key})"), f"encoder ({key})")]
  if pred_sd is not None:
    pred_cfg = infer_predictor_config(pred_sd, predictor_num_heads, img_size,
                                      enc_cfg.patch_size, enc_cfg.tubelet_size)
    if pred_cfg.embed_dim != enc_cfg.embed_dim:
      raise ConversionError("predictor", misshaped=[(
          "predictor_embed.weight", _shape(pred_sd["predictor_embed.weight"]),
          (pred_cfg.predictor_embed_dim, enc_cfg.embed_dim))])
    jobs.append(Job("predictor", pred_cfg, pred_sd, plan(
        pred_sd, pretrained.param_shapes("predictor", pred_cfg), PREDICTOR_RULES,
        "AC predictor"), "AC predictor"))
  return jobs


def convert_checkpoint(ckpt: Mapping[str, Any], encoder_num_heads: int | None = None,
                       predictor_num_heads: int | None = None, img_size: int = 256,
                       encoder_key: str | None = None, allow_nonfinite: bool = False
                       ) -> dict[str, tuple[Any, dict]]:
  """Converts an in-memory (or memory-mapped) official checkpoint dict.

  Returns:
    `{"encoder": (EncoderConfig, flat params), ["predictor": (PredictorConfig, flat params)]}`.
  """
  jobs = plan_checkpoint(ckpt, encoder_num_heads, predictor_num_heads, img_size, encoder_key)
  return {job.kind: (job.config, materialize(job.state_dict, job.plan, job.what,
                                             allow_nonfinite=allow_nonfinite)) for job in jobs}


def hash_tensor(h, kind: str, path: tuple, value) -> None:
  h.update(".".join(map(str, (kind,) + path)).encode())
  h.update(np.ascontiguousarray(value).tobytes())


def params_digest(models: Mapping[str, tuple[Any, Mapping[tuple, Any]]]) -> str:
  """sha256 over every tensor of `{kind: (config, flat params)}`, kinds and paths sorted (the
  `params_sha256` of a converted checkpoint)."""
  h = hashlib.sha256()
  for kind in sorted(models):
    flat = models[kind][1]
    for path in sorted(flat, key=path_key):
      hash_tensor(h, kind, path, np.asarray(flat[path]))
  return h.hexdigest()


# -- .pt files --------------------------------------------------------------------------------


def check_archive(path: str) -> None:
  """Verifies the CRC-32 of every record of a torch zip archive (reads the file once, in chunks).

  Raises:
    ValueError: naming the damaged record (bytes changed after the file was written).
  """
  with zipfile.ZipFile(path) as z:
    for info in z.infolist():
      try:
        with z.open(info) as f:
          while f.read(1 << 24):
            pass
      except zipfile.BadZipFile as e:
        raise ValueError(f"{path} is damaged: record {info.filename} fails its CRC-32 check "
                         f"({e}); download the checkpoint again") from None


def load_torch_file(path: str, verify: bool = True) -> Mapping[str, Any]:
  """Opens an official checkpoint memory-mapped (local) or streamed (gs://); tensors are read
  only when converted.

  Raises:
    ImportError: PyTorch is not installed (the `convert` extra).
    ValueError: the file is missing, truncated, damaged or not a torch checkpoint.
  """
  try:
    import torch
  except ImportError as e:
    raise ImportError("reading .pt checkpoints needs PyTorch: pip install 'vjepa-jax[convert]'"
                      ) from e
  if "://" in str(path):
    from etils import epath
    remote = epath.Path(path)
    if not remote.exists():
      raise ValueError(f"checkpoint file not found: {path}")
    with remote.open("rb") as f:
      return torch.load(f, map_location="cpu", weights_only=True)
  if not os.path.isfile(path):
    raise ValueError(f"checkpoint file not found: {path}")
  if not zipfile.is_zipfile(path):
    raise ValueError(f"{path} is not a readable PyTorch checkpoint (not a torch zip archive; "
                     "truncated or corrupt download?)")
  if verify:
    check_archive(path)
  try:
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
  except Exception as e:  # torch raises several unrelated types for damaged archives
    raise ValueError(f"{path} could not be read as a PyTorch checkpoint (truncated or corrupt "
                     f"file?): {type(e).__name__}: {e}") from e
