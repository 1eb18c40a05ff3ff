"""The planner config: search method, its sizes, and the action space."""
from __future__ import annotations

from absl import logging
import ml_collections

from vjepa_jax.data import specs
from vjepa_jax.planning import space

METHODS = ("cem", "mppi", "gd")

# Official CEM settings. "paper": the V-JEPA 2 paper's robot experiments (800 samples, 10
# iterations, top-10, horizon 1, actions within a 0.075 m ball per step); the paper gives no
# momenta, so they are the official `WorldModel` defaults. "wrapper": the defaults of the official
# `WorldModel.mpc_args`. "cem_function": the defaults in the signature of the official `cem`.
# "notebook": the energy-landscape notebook's quick CPU demo.
PRESETS = {
    "paper": dict(samples=800, iterations=10, topk=10, horizon=1, momentum_mean=0.15,
                  momentum_std=0.15, momentum_mean_gripper=0.15, momentum_std_gripper=0.15,
                  maxnorm=0.075),
    "wrapper": dict(samples=400, iterations=10, topk=10, horizon=2, momentum_mean=0.15,
                    momentum_std=0.15, momentum_mean_gripper=0.15, momentum_std_gripper=0.15,
                    maxnorm=0.05),
    "cem_function": dict(samples=100, iterations=100, topk=10, horizon=1, momentum_mean=0.25,
                         momentum_std=0.95, momentum_mean_gripper=0.15,
                         momentum_std_gripper=0.15, maxnorm=0.05),
    "notebook": dict(samples=25, iterations=2, topk=10, horizon=2, momentum_mean=0.15,
                     momentum_std=0.75, momentum_mean_gripper=0.15, momentum_std_gripper=0.15,
                     maxnorm=0.075),
}


def default_config(preset: str = "paper") -> ml_collections.ConfigDict:
  """Planner config (CEM by default).

  Args:
    preset: one of `PRESETS` ("paper" by default; see the comment on `PRESETS`).

  Fields:
    method: "cem" (the official cross-entropy method), "mppi" (softmax-weighted updates) or "gd"
      (Adam on the action sequence through the differentiable rollout).
    samples, iterations, horizon: samples per iteration, iterations, planned steps (official
      `samples`, `cem_steps`, `rollout`); used by CEM, MPPI and the gradient planner's CEM
      warm-up.
    topk: CEM elites.
    momentum_mean, momentum_std: blending of the non-gripper mean/std with the previous
      iteration's (CEM and MPPI); momentum_mean_gripper, momentum_std_gripper: the same for the
      gripper.
    mppi.temperature: MPPI weights are softmax(-z / temperature) with z the energies
      standardised over the iteration's samples (so the temperature does not depend on the
      energy's scale; smaller is greedier, 0.5 keeps ~2% of the samples' weight effective).
    gd.samples: action sequences optimised in parallel (the best one is returned).
    gd.steps: Adam steps; gd.learning_rate: Adam's step size in units of each dimension's bound
      (actions are optimised as a / bound in [-1, 1], projected back after every step),
      cosine-decayed to 0 over the steps.
    gd.cem_iterations: CEM iterations (with `samples`, `topk`, momenta) run first; their final
      mean is the first start and their std spreads the others. 0: starts from the initial
      distribution (first start at its mean).
    maxnorm: xyz bound (m per step), also the initial xyz std (DROID layout).
    gripper_max: gripper-delta bound (official 0.75). The initial gripper std is 1.
    gripper_round: a planned gripper delta with |g| below this is returned as 0 (official 0.25).
    search_rotation: also search droll/dpitch/dyaw (vjepa-jax extension; official pins them to
      0), bounded by and starting at std rotation_maxnorm (rad), with the xyz momenta.
    fixed_axes: ((axis, value), ...) action dimensions held fixed (DROID: 0-2 xyz, 3-5 rotation,
      6 gripper); the official `axis` dict indexes [x, y, z, gripper] instead, so its key 3 is
      our 6.
    close_gripper: if set, the gripper delta is 1 from this horizon step on (official).
    action_dim: action (= state) width; None takes the predictor's `action_dim`.
    controllable: searched action dimensions; None = DROID's xyz + gripper (+ rotations with
      `search_rotation`). Others are 0 unless in `fixed_axes`.
    bounds: per-action-dimension bounds `|a_d| <= bounds[d]`; None = DROID's (maxnorm x3,
      rotation_maxnorm x3, gripper_max).
    init_std: per-action-dimension initial std; None = `bounds` (DROID: the official maxnorm x3,
      rotation_maxnorm x3, 1).
    gripper_dim: the gripper dimension (its own momenta, `gripper_round`, `close_gripper`);
      None for none. DROID: 6.
    integration: how states follow actions along a rollout: "pose" (DROID's xyz + euler-xyz +
      gripper, `poses.integrate_pose`; width 7 only) or "additive" (s + a).
    sample_chunk: roll the samples out in chunks of this size (must divide the sample count);
      0 = all at once; -1 = automatic: chunks of at most 64 samples on CPU (activations then
      stay in cache; about 2x faster than one 800-sample batch on 2 cores), all at once on
      accelerators.
    reuse_context: share the context step's sample-independent work across samples
      (`models.world_model.rollout`); False recomputes it per sample as the official planner
      does.
    crop: how `planner.Planner` crops camera frames (`vjepa_jax.preprocess`): "ac" (default, the
      training crop, so the planner sees what the model was trained on) or "square" (the official
      notebook's centre square crop).
    seed: base PRNG seed of `planner.Planner`.
  """
  if preset not in PRESETS:
    raise ValueError(f"unknown CEM preset {preset!r}; known: {sorted(PRESETS)}")
  c = ml_collections.ConfigDict()
  c.method = "cem"
  for k, v in PRESETS[preset].items():
    setattr(c, k, v)
  c.mppi = ml_collections.ConfigDict(dict(temperature=0.5))
  c.gd = ml_collections.ConfigDict(dict(samples=16, steps=20, learning_rate=0.1,
                                        cem_iterations=0))
  c.gripper_max = 0.75
  c.gripper_round = 0.25
  c.search_rotation = False
  c.rotation_maxnorm = 0.1
  c.fixed_axes = ()
  c.close_gripper = ml_collections.config_dict.placeholder(int)
  c.action_dim = ml_collections.config_dict.placeholder(int)
  c.controllable = ml_collections.config_dict.placeholder(tuple)
  c.bounds = ml_collections.config_dict.placeholder(tuple)
  c.init_std = ml_collections.config_dict.placeholder(tuple)
  c.gripper_dim = space.GRIPPER
  c.integration = "pose"
  c.sample_chunk = -1
  c.reuse_context = True
  c.crop = "ac"
  c.seed = 0
  return c


# Search flags of the planning, serving and simulation CLIs: flag -> (config field, type).
SEARCH_FLAGS = {
    "samples": ("samples", int), "iterations": ("iterations", int), "topk": ("topk", int),
    "horizon": ("horizon", int), "maxnorm": ("maxnorm", float),
    "temperature": ("mppi.temperature", float), "gd-samples": ("gd.samples", int),
    "gd-steps": ("gd.steps", int), "gd-lr": ("gd.learning_rate", float),
    "gd-cem-iterations": ("gd.cem_iterations", int),
}


def add_search_flags(parser) -> None:
  """Adds `SEARCH_FLAGS` to an argparse parser (each defaults to the preset's value)."""
  for flag, (field, kind) in SEARCH_FLAGS.items():
    parser.add_argument(f"--{flag}", type=kind, default=None,
                        help=f"planner config {field} (default: the preset's)")


def search_overrides(args) -> dict:
  """{config field: value} of the search flags given on the command line."""
  values = {field: getattr(args, flag.replace("-", "_"))
            for flag, (field, _) in SEARCH_FLAGS.items()}
  return {field: v for field, v in values.items() if v is not None}


def with_overrides(cfg: ml_collections.ConfigDict, overrides: dict) -> ml_collections.ConfigDict:
  """`cfg` with dotted fields set (`{"gd.steps": 8}`); ValueError naming an unknown field."""
  for dotted, value in overrides.items():
    node = cfg
    *parents, leaf = dotted.split(".")
    for name in parents:
      node = node.get(name)
      if not isinstance(node, ml_collections.ConfigDict):
        raise ValueError(f"planner config has no field {dotted!r}")
    if leaf not in node:
      raise ValueError(f"planner config has no field {dotted!r}; fields: {sorted(node)}")
    node[leaf] = value
  return cfg


def sample_batches(cfg: ml_collections.ConfigDict) -> tuple[int, ...]:
  """The sample counts the method rolls out at once (each must suit the chunk and the mesh)."""
  if cfg.method == "gd":
    return (cfg.gd.samples, cfg.samples) if cfg.gd.cem_iterations else (cfg.gd.samples,)
  return (cfg.samples,)


def validate_cem(cfg: ml_collections.ConfigDict) -> None:
  """Raises ValueError for a CEM (or MPPI) config the planner cannot run."""
  if cfg.samples < 2 or cfg.iterations < 1 or cfg.horizon < 1:
    raise ValueError(f"need samples >= 2, iterations >= 1, horizon >= 1; got samples="
                     f"{cfg.samples}, iterations={cfg.iterations}, horizon={cfg.horizon}")
  if not 2 <= cfg.topk <= cfg.samples:
    raise ValueError(f"topk must be in [2, samples={cfg.samples}] (the std of fewer than 2 "
                     f"samples is undefined), got {cfg.topk}")
  space.action_space(cfg)


def validate(cfg: ml_collections.ConfigDict) -> None:
  """Raises ValueError for a planner config that cannot run, naming the bad field."""
  if cfg.method not in METHODS:
    raise ValueError(f"method must be one of {METHODS}, got {cfg.method!r}")
  if cfg.method == "gd":
    g = cfg.gd
    if g.samples < 1 or g.steps < 1 or g.learning_rate <= 0 or g.cem_iterations < 0:
      raise ValueError(f"need gd.samples >= 1, gd.steps >= 1, gd.learning_rate > 0, "
                       f"gd.cem_iterations >= 0; got {g.to_dict()}")
    if cfg.horizon < 1:
      raise ValueError(f"need horizon >= 1, got {cfg.horizon}")
    if g.cem_iterations:
      validate_cem(cfg)
    space.action_space(cfg)
  else:
    validate_cem(cfg)
    if cfg.method == "mppi" and not cfg.mppi.temperature > 0:
      raise ValueError(f"mppi.temperature must be > 0, got {cfg.mppi.temperature}")
  chunk = cfg.sample_chunk
  if chunk < -1 or any(0 < chunk < b and b % chunk for b in sample_batches(cfg)):
    raise ValueError(f"sample_chunk={chunk} must be -1 (auto), 0 (all) or a divisor of the "
                     f"sample counts {sample_batches(cfg)} (or at least as large)")


def config_for_spec(spec, preset: str = "paper") -> ml_collections.ConfigDict:
  """The planner config (`default_config(preset)`) for a dataset's action space.

  Args:
    spec: a resolved dataset spec (`vjepa_jax.data.spec_of(data_cfg)`): its `action_dim`,
      `controllable` dimensions, `action_low` / `action_high` and `integration` set the action
      space; a pose layout with a gripper makes its last dimension the gripper.
    preset: the search preset (`PRESETS`).

  The planner searches symmetric bounds `|a_d| <= b_d`; an asymmetric spec range gives
  `b_d = min(|low_d|, |high_d|)` (with a warning), so no planned action leaves the range.
  """
  c = default_config(preset)
  width = spec.action_dim
  c.action_dim = width
  c.integration = spec.integration
  has_gripper = spec.is_pose and bool(spec.state.get("gripper"))
  c.gripper_dim = width - 1 if has_gripper else None
  low, high = spec.action_low, spec.action_high
  # A DROID-like pose keeps the preset's own bounds (its maxnorm, gripper_max) and search
  # dimensions (xyz + gripper, rotations with `search_rotation`).
  droid_like = (width == space.DROID_WIDTH and has_gripper and low is not None
                and tuple(high) == tuple(-x for x in low) == tuple(specs.POSE_BOUNDS))
  if not (droid_like and tuple(spec.controllable) == (0, 1, 2, 6)):
    c.controllable = tuple(int(d) for d in spec.controllable)
  if low is not None and high is not None and not droid_like:
    bounds = tuple(min(abs(lo), abs(hi)) for lo, hi in zip(low, high))
    uneven = [d for d, (lo, hi) in enumerate(zip(low, high)) if abs(lo) != abs(hi)]
    if uneven:
      logging.warning("spec %s: asymmetric action ranges in dimensions %s; the planner searches "
                      "|a_d| <= %s", spec.name, uneven, [bounds[d] for d in uneven])
    c.bounds = bounds
  return c
