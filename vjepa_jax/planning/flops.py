"""Analytic predictor FLOPs of a plan, so planners can be compared at equal compute.

Counted: every matrix product of the world model that a plan runs (2 FLOPs per multiply-add), for
the cached, context-sharing rollout of `models.world_model` (block 0 of the context step runs only the
sampled action's token; the state and frame tokens' work is done once per plan). Element-wise work
(GELU, softmax, layer norms, the search's own arithmetic) is not counted; XLA's cost analysis of
a compiled plan, which counts it, is a few percent higher (checked in the tests).

A rollout's products are split into those with a weight matrix and those between two
activations (attention scores and mixing). A gradient step (forward and backward with respect to
the actions, not the weights) costs the forward plus one more pass of the weight products (the
input gradient) and two more of the activation products (both operands are differentiated).

The official planner's cost is higher: it reruns the predictor on all frames at every rollout
step (`benchmarks/plan.py` gives both).
"""
from __future__ import annotations

from typing import NamedTuple

import ml_collections

from vjepa_jax.models import PredictorConfig

NUM_COND = 2  # action and state tokens per step (planning runs without extrinsics)


class Cost(NamedTuple):
  """FLOPs split by kind: `weights` (activation x weight) and `attention` (activation x
  activation)."""
  weights: int
  attention: int

  def __add__(self, other: "Cost") -> "Cost":
    return Cost(self.weights + other.weights, self.attention + other.attention)

  @property
  def forward(self) -> int:
    return self.weights + self.attention

  @property
  def with_grad(self) -> int:
    """Forward plus the backward pass with respect to the inputs."""
    return 2 * self.weights + 3 * self.attention


def block_cost(n_q: int, n_kv: int, n_k: int, p: int, m: int) -> Cost:
  """One transformer block: q/k/v for `n_kv` tokens, attention of `n_q` queries over `n_k` keys,
  output projection and MLP (hidden `m`) for the `n_q` query tokens, width `p`."""
  return Cost(2 * n_kv * p * 3 * p + 2 * n_q * p * p + 4 * n_q * p * m, 4 * n_q * n_k * p)


def _sizes(cfg: PredictorConfig) -> tuple[int, int, int, int, int, int]:
  hw = cfg.grid[0] * cfg.grid[1]
  return hw, NUM_COND + hw, cfg.predictor_embed_dim, cfg.mlp_hidden, cfg.embed_dim, cfg.depth


def _step(cfg: PredictorConfig, keys: int) -> Cost:
  """A full predictor step (frame embedding, conditioning tokens, blocks, output head) for one
  sample attending to `keys` keys."""
  hw, n, p, m, d, depth = _sizes(cfg)
  embed = Cost(2 * hw * d * p + 2 * NUM_COND * cfg.action_dim * p + 2 * hw * p * d, 0)
  return sum([block_cost(n, n, keys, p, m)] * depth, embed)


def rollout_cost(cfg: PredictorConfig, horizon: int, context_frames: int = 1,
                 reuse_context: bool = True) -> Cost:
  """Per-sample cost of one rollout over `horizon` steps from `context_frames` frames."""
  hw, n, p, m, d, depth = _sizes(cfg)
  total = Cost(0, 0)
  for h in range(horizon):
    keys = (context_frames + h) * n
    step = _step(cfg, keys)
    if h == 0 and reuse_context:
      heads = cfg.num_heads
      shared = n - 1
      # Block 0 for the action token alone, plus folding its key into the shared rows
      # (`layers.Block.shared_rows`); no frame embedding, only the action encoder.
      block0 = Cost(2 * p * 3 * p + 2 * p * p + 2 * p * p + 4 * n * p * m,
                    4 * keys * p + 2 * shared * p + 4 * shared * heads * p)
      full0 = block_cost(n, n, keys, p, m)
      step = Cost(step.weights - full0.weights + block0.weights
                  - 2 * hw * d * p - 2 * cfg.action_dim * p,
                  step.attention - full0.attention + block0.attention)
    total = total + step
  return total


def context_flops(cfg: PredictorConfig, context_frames: int = 1,
                  reuse_context: bool = True) -> int:
  """Once-per-plan cost: the history steps and, when shared, the context step's
  sample-independent part."""
  hw, n, p, m, d, depth = _sizes(cfg)
  total = 0
  for s in range(context_frames - 1):
    keys = (s + 1) * n
    total += (2 * hw * d * p + 2 * NUM_COND * cfg.action_dim * p + 2 * n * p * 3 * p
              + (depth - 1) * block_cost(n, n, keys, p, m).forward)
  if reuse_context:
    keys, shared = context_frames * n, n - 1
    total += (2 * hw * d * p + 2 * cfg.action_dim * p + 2 * shared * p * 3 * p
              + 6 * shared * keys * p + 2 * shared * p * p)
  return total


def plan_flops(cfg: ml_collections.ConfigDict, predictor_cfg: PredictorConfig,
               context_frames: int = 1) -> int:
  """Predictor FLOPs of one plan with planner config `cfg` (any method).

  CEM and MPPI: `samples x iterations` rollouts. Gradient: `gd.samples x gd.steps` rollouts with
  their backward pass, plus `samples x gd.cem_iterations` rollouts of the CEM warm start. Both
  add the once-per-plan context work.
  """
  rollout = rollout_cost(predictor_cfg, cfg.horizon, context_frames, cfg.reuse_context)
  total = context_flops(predictor_cfg, context_frames, cfg.reuse_context)
  if cfg.method == "gd":
    total += cfg.gd.samples * cfg.gd.steps * rollout.with_grad
    total += cfg.samples * cfg.gd.cem_iterations * rollout.forward
  else:
    total += cfg.samples * cfg.iterations * rollout.forward
  return total
