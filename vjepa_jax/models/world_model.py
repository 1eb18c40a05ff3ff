"""The world model at inference: frames -> latents, action sequences -> predicted latents -> energy.

Evaluation, the planners and the training loss's rollout term all go through these functions,
which call the one `ACPredictor` forward pass (with its key/value cache):

- `encode_latents`: uint8 camera frames -> layer-normed per-frame encoder tokens (the
  `vjepa_jax.preprocess` crop, resize and normalisation, then every frame encoded on its own).
- `rollout_frames`: the autoregressive continuation from a cache, each prediction fed back as the
  next step's frame (true or planned states and actions given per step).
- `prepare_context` / `rollout` / `rollout_energy`: many candidate action sequences rolled out
  from one observation. The context (history steps and the current frame and state) is shared by
  every candidate: history keys/values are computed once at batch 1 and broadcast, and the
  current step's shared tokens take the predictor's shared-row path (`layers.Block.shared_rows`).
  Candidates are rolled out in chunks (`resolve_sample_chunk`), which keeps activations in cache
  on CPU.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from vjepa_jax import preprocess
from vjepa_jax.models import layers
from vjepa_jax.models.ac_predictor import ACPredictor
from vjepa_jax.models.ac_predictor import Cache
from vjepa_jax.models.vit import VisionTransformer
from vjepa_jax.models.vit import encode_frames

Integrate = Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]


def module_of(model: Any) -> nnx.Module:
  """Accepts an NNX module or a wrapper holding one in `.module` (`pretrained.Loaded`)."""
  return getattr(model, "module", model)


def inference_module(graphdef, state) -> nnx.Module:
  """The module rebuilt inside a traced function in inference mode (dropout of LoRA adapters
  off), without touching the caller's module."""
  model = nnx.merge(graphdef, state)
  model.eval()
  return model


def encode_latents(encoder: VisionTransformer, frames: jnp.ndarray, size: int,
                   crop: str = "ac") -> jnp.ndarray:
  """uint8 frames `[B, T, H, W, 3]` -> layer-normed per-frame tokens `[B, T*h*w, D]`."""
  video = preprocess.model_input(frames, size, crop)
  return layers.layer_norm_no_affine(encode_frames(encoder, video))


def rollout_frames(predictor: ACPredictor, cache: Cache, frame: jnp.ndarray,
                   actions: jnp.ndarray, states: jnp.ndarray,
                   normalize: Callable[[jnp.ndarray], jnp.ndarray]) -> list[jnp.ndarray]:
  """Autoregressive rollout from cached steps: each prediction is the next step's frame.

  Args:
    predictor: the AC predictor.
    cache: keys/values of the steps before `frame`'s step.
    frame: `[B or 1, h*w, D]` tokens of the first step to run (e.g. a normalised prediction).
    actions, states: `[B or 1, N, A]` of the N steps to run.
    normalize: applied to each raw prediction before it is returned and fed back.

  Returns:
    N normalised predictions `[B, h*w, D]`, of the frames after each step.
  """
  frames = []
  for n in range(actions.shape[1]):
    out, cache = predictor(frame, actions[:, n:n + 1], states[:, n:n + 1], cache=cache)
    frame = normalize(out)
    frames.append(frame)
  return frames


class Context(NamedTuple):
  """What a plan computes once and shares across all candidate action sequences.

  Attributes:
    cache: the predictor's keys/values of the history steps (batch 1; empty without history).
    frame: `[1, h*w, D]` layer-normed tokens of the current observation.
    state: `[1, A]` the current state.
  """
  cache: Cache
  frame: jnp.ndarray
  state: jnp.ndarray


def check_context(predictor: ACPredictor, tokens, states, actions) -> int:
  """Validates the predictor and the shapes of a context; returns the context's step count."""
  if not predictor.cfg.is_frame_causal:
    raise ValueError("step-wise rollout needs a frame-causal predictor (is_frame_causal=True): "
                     "without the block-causal mask later steps change earlier ones")
  hw, d, a = predictor.tokens_per_frame, predictor.cfg.embed_dim, predictor.cfg.action_dim
  if (tokens.ndim != 3 or tokens.shape[0] != 1 or tokens.shape[1] % hw or tokens.shape[2] != d
      or tokens.shape[1] == 0):
    raise ValueError(f"context tokens must be [1, T*{hw}, {d}] with T >= 1, got "
                     f"{tuple(tokens.shape)}")
  t = tokens.shape[1] // hw
  if tuple(states.shape) != (1, t, a):
    raise ValueError(f"context states must be [1, {t}, {a}], got {tuple(states.shape)}")
  want = (1, t - 1, a)
  if (actions is None and t > 1) or (actions is not None and tuple(actions.shape) != want):
    raise ValueError(f"context actions must be [1, {t - 1}, {a}] (the actions between the "
                     f"{t} context frames), got {None if actions is None else actions.shape}")
  return t


def prepare_context(predictor: ACPredictor, tokens: jnp.ndarray, states: jnp.ndarray,
                    actions: jnp.ndarray | None = None) -> Context:
  """The shared part of every rollout from an observation.

  Args:
    predictor: the AC predictor.
    tokens: `[1, T*h*w, D]` layer-normed encoder tokens of the T context frames (the last one is
      the current observation).
    states: `[1, T, A]` their states.
    actions: `[1, T-1, A]` the actions taken between them (None for T = 1, the official
      planner's single-frame context).
  """
  t = check_context(predictor, tokens, states, actions)
  hw = predictor.tokens_per_frame
  cache = predictor.empty_cache()
  if t > 1:
    _, cache = predictor(tokens[:, :-hw], actions, states[:, :-1], cache=cache)
  return Context(cache=cache, frame=tokens[:, -hw:], state=states[:, -1])


def rollout(predictor: ACPredictor, ctx: Context, actions: jnp.ndarray, integrate: Integrate,
            share_context: bool = True) -> jnp.ndarray:
  """Rolls the world model out over a horizon for a batch of action sequences.

  Args:
    predictor: the AC predictor.
    ctx: from `prepare_context`.
    actions: `[B, H, A]` action sequences starting at the context step.
    integrate: `(states [B, A], actions [B, A]) -> states [B, A]`, the proprioceptive step.
    share_context: False recomputes the context step's shared tokens for every sample (the
      official algorithm's cost; kept to measure what sharing saves).

  Returns:
    `[B, h*w, D]` layer-normed prediction of the frame after the last action.
  """
  b, horizon, a = actions.shape
  states = [jnp.broadcast_to(ctx.state, (b, a))]
  for h in range(1, horizon):
    states.append(integrate(states[-1], actions[:, h - 1]))
  states = jnp.stack(states, axis=1)
  frame, state = ctx.frame, ctx.state[:, None]
  if not share_context:
    frame = jnp.broadcast_to(frame, (b,) + frame.shape[1:])
    state = states[:, :1]
  out, cache = predictor(frame, actions[:, :1], state, cache=ctx.cache)
  z = layers.layer_norm_no_affine(out)
  later = rollout_frames(predictor, cache, z, actions[:, 1:], states[:, 1:],
                         layers.layer_norm_no_affine)
  return later[-1] if later else z


def energy(z: jnp.ndarray, goal: jnp.ndarray) -> jnp.ndarray:
  """Mean L1 distance `[B]` between layer-normed predictions `[B, N, D]` and a goal `[N, D]`."""
  return jnp.mean(jnp.abs(z.astype(jnp.float32) - goal.astype(jnp.float32)), axis=(-2, -1))


def resolve_sample_chunk(chunk: int, samples: int | Sequence[int], devices: int = 1,
                         platform: str | None = None) -> int:
  """The chunk size to roll samples out in: `chunk` itself if >= 0 (0 = all at once), else the
  automatic choice: on CPU the largest multiple of `devices`, at most 64 per device, that
  divides every sample count in `samples` larger than it (activations then stay in cache; about
  2x faster than one 800-sample batch on 2 cores); 0 (no chunking) elsewhere or when no chunk
  would be smaller than the largest count."""
  if chunk >= 0:
    return chunk
  counts = (samples,) if isinstance(samples, int) else tuple(samples)
  platform = platform or jax.default_backend()
  if platform != "cpu":
    return 0
  largest = max(counts)
  for size in range(min(64 * devices, largest), 0, -1):
    if size % devices == 0 and all(n % size == 0 for n in counts if n > size):
      return 0 if size == largest else size
  return 0


def rollout_energy(predictor: ACPredictor, ctx: Context, actions: jnp.ndarray,
                   goal: jnp.ndarray, integrate: Integrate, sample_chunk: int = 0,
                   share_context: bool = True) -> jnp.ndarray:
  """Energies `[S]` of action sequences `[S, H, A]` rolled out from a prepared context.

  `sample_chunk` (a resolved size, see `resolve_sample_chunk`) rolls the samples out in chunks.
  Chunk j holds samples j, j + n, j + 2n, ... (n chunks), so a sample axis sharded in contiguous
  blocks stays sharded inside every chunk. Differentiable with respect to `actions`.
  """
  def one(chunk):
    return energy(rollout(predictor, ctx, chunk, integrate, share_context), goal)

  if not sample_chunk or sample_chunk >= actions.shape[0]:
    return one(actions)
  chunks = jnp.swapaxes(actions.reshape((sample_chunk, -1) + actions.shape[1:]), 0, 1)
  return jnp.swapaxes(jax.lax.map(one, chunks), 0, 1).reshape(-1)
