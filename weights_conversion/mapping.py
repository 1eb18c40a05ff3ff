"""Torch-free mapping from official V-JEPA 2 state dicts to vjepa-jax parameter trees.

Input: a flat `{name: array}` state dict with the DDP/wrapper prefixes already stripped. Output:
a flat `{param_path: np.ndarray}` keyed like `nnx.state(model).flat_state()` paths. Every source
tensor must be consumed and every target parameter filled with the right shape; anything else is
a `ConversionError` listing missing, unexpected and mis-shaped keys.
"""
from __future__ import annotations

import re
from typing import Callable, Iterable, Iterator, Mapping

import numpy as np

from vjepa_jax.models import configs

# Keys the official RoPE models may carry that hold no weights of a RoPE model.
IGNORED_KEYS = ("pos_embed",)
_PREFIXES = ("module.", "backbone.")


class ConversionError(ValueError):
  """A checkpoint that does not map exactly onto the target architecture."""

  def __init__(self, what: str, missing=(), unexpected=(), misshaped=()):
    self.missing, self.unexpected, self.misshaped = list(missing), list(unexpected), list(misshaped)
    lines = [f"{what}: the checkpoint does not match the architecture exactly; nothing loaded."]
    if self.missing:
      lines.append(f"  missing ({len(self.missing)}): " + ", ".join(self.missing[:20]))
    if self.unexpected:
      lines.append(f"  unexpected ({len(self.unexpected)}): " + ", ".join(self.unexpected[:20]))
    if self.misshaped:
      lines.append(f"  mis-shaped ({len(self.misshaped)}): " + ", ".join(
          f"{k} (checkpoint {s} -> expected {e})" for k, s, e in self.misshaped[:20]))
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


def _heads(width: int, given: int | None, known: Mapping[int, int], flag: str, what: str) -> int:
  if given is not None:
    heads = int(given)
  elif width in known:
    heads = known[width]
  else:
    raise ValueError(
        f"cannot infer the number of {what} attention heads for width {width} (it is not a "
        f"released size: {sorted(known)}); pass {flag}")
  if heads <= 0 or width % heads:
    raise ValueError(f"{what} width {width} is not divisible by {flag}={heads}")
  from vjepa_jax.models import rope
  try:
    rope.check_head_dim(width // heads)
  except ValueError as e:
    raise ValueError(f"{what}: {flag}={heads} gives {e}") from None
  return heads


def infer_encoder_config(sd: Mapping, num_heads: int | None = None,
                         img_size: int = 256) -> configs.EncoderConfig:
  """Architecture of an encoder state dict (everything but the head count is in the shapes)."""
  _require(sd, ["patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "blocks.0.mlp.fc1.weight",
                "norm.weight"], "encoder")
  e, c, t, p, p2 = _shape(sd["patch_embed.proj.weight"])
  if p != p2:
    raise ConversionError("patch embedding is not square",
                          misshaped=[("patch_embed.proj.weight", (e, c, t, p, p2), "[E,C,t,p,p]")])
  hidden = _shape(sd["blocks.0.mlp.fc1.weight"])[0]
  heads = _heads(e, num_heads, configs.KNOWN_ENCODER_HEADS, "--encoder-num-heads", "encoder")
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
  heads = _heads(p, num_heads, configs.KNOWN_PREDICTOR_HEADS, "--predictor-num-heads",
                 "predictor")
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
    exp = tuple(expected[path])
    got = tuple(reversed(src)) if fn is _linear else (
        tuple(src[i] for i in (2, 3, 4, 1, 0)) if fn is _conv3d else src)
    if got != exp:
      misshaped.append((name, src, exp))
  filled = {path for path, _ in out.values()}
  missing = [".".join(map(str, p)) for p in expected if p not in filled]
  if missing or unexpected or misshaped:
    raise ConversionError(what, missing=sorted(missing), unexpected=sorted(unexpected),
                          misshaped=misshaped)
  return out


def materialize(sd: Mapping, planned: Mapping[str, tuple[tuple, Callable]],
                dtype=np.float32) -> dict[tuple, np.ndarray]:
  """Converts the planned tensors one at a time (`sd` may be lazily memory-mapped)."""
  return {path: fn(_to_numpy(sd[name])).astype(dtype, copy=False)
          for name, (path, fn) in planned.items()}


def path_key(path: tuple) -> tuple[str, ...]:
  """Sort key of a parameter path (the order the parameter digest uses)."""
  return tuple(map(str, path))


def iter_materialize(sd: Mapping, planned: Mapping[str, tuple[tuple, Callable]],
                     release: Callable[[object], None], dtype=np.float32
                     ) -> Iterator[tuple[tuple, np.ndarray]]:
  """Yields `(path, array)` one converted tensor at a time, in `path_key` order.

  Each array owns its memory (never a view of the source), and `release(source tensor)` is called
  once it is made, so the caller holds only what it keeps of the yielded arrays.
  """
  for name, (path, fn) in sorted(planned.items(), key=lambda item: path_key(item[1][0])):
    src = sd[name]
    out = fn(_to_numpy(src)).astype(dtype, copy=False)
    if out.base is not None:
      out = out.copy()
    release(src)
    yield path, out


def convert(sd: Mapping, expected: Mapping[tuple, tuple], rules, what: str,
            dtype=np.float32) -> dict[tuple, np.ndarray]:
  """`plan` + `materialize`: strict accounting first, then the tensors."""
  return materialize(sd, plan(sd, expected, rules, what), dtype)


def _to_numpy(x) -> np.ndarray:
  if isinstance(x, np.ndarray):
    return x
  if hasattr(x, "detach"):
    x = x.detach()
    if str(x.dtype) == "torch.bfloat16":
      x = x.float()
    return x.numpy()
  return np.asarray(x)
