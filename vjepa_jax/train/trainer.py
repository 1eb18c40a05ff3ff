"""The training loop: accept the config -> base weights -> adapters -> shardings -> jitted step ->
resume -> data -> steps with logging, evaluation, checkpoints and preemption handling.

Everything that can refuse a run (bad settings, a missing dataset, a resume that would change the
model) runs before any model is built or anything is written to the workdir.
"""
from __future__ import annotations

import dataclasses
import logging
import signal
import threading
import time
from typing import Any, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath
from flax import nnx

from vjepa_jax import data
from vjepa_jax import distributed
from vjepa_jax import models
from vjepa_jax.models import lora as lora_lib
from vjepa_jax.models import params as params_lib
from vjepa_jax.models import pretrained
from vjepa_jax.models import workdir as workdir_lib
from vjepa_jax.train import checkpoint as ckpt_lib
from vjepa_jax.train import metrics as metrics_lib
from vjepa_jax.train import model as model_lib
from vjepa_jax.train import optim
from vjepa_jax.train import sharding
from vjepa_jax.train import step as step_lib

INIT_PREDICTOR = ("converted", "random")


class NonFiniteLoss(RuntimeError):
  pass


class RefusedRun(ValueError):
  """A run refused before it started (bad settings, missing data, a changed model on resume)."""


# -- Accepting a config ------------------------------------------------------------------------


def validate(cfg: ml_collections.ConfigDict, num_devices: int, process_count: int) -> None:
  """Fails fast, before anything is read or compiled, listing every impossible setting."""
  errors = []
  if cfg.mode not in model_lib.MODES:
    errors.append(f"mode must be one of {model_lib.MODES}, got {cfg.mode!r}")
  if cfg.init.predictor not in INIT_PREDICTOR:
    errors.append(f"init.predictor must be one of {INIT_PREDICTOR}, got {cfg.init.predictor!r}")
  elif cfg.init.predictor == "converted" and not cfg.init.converted:
    errors.append("init.predictor='converted' needs init.converted (a converted V-JEPA 2-AC "
                  "checkpoint); set init.predictor='random' to train a new predictor")
  if cfg.batch_size % process_count:
    errors.append(f"batch_size {cfg.batch_size} is not divisible by the {process_count} processes")
  try:
    shape = sharding.mesh_shape(cfg.mesh, num_devices)
  except ValueError as e:
    note = ""
    if jax.default_backend() == "cpu" and process_count == 1:
      note = " (" + distributed.describe_cpu_devices(cfg.batch_size, cfg.mesh,
                                                     cfg.get("cpu_devices", 0)) + ")"
    errors.append(str(e) + note)
  else:
    dp = shape["data"] * shape["fsdp"]
    if cfg.batch_size % dp:
      errors.append(f"batch_size {cfg.batch_size} is not divisible by the data-parallel size "
                    f"{dp} (mesh data x fsdp)")
  t = cfg.data.frames_per_clip
  if t < 2:
    errors.append(f"data.frames_per_clip must be >= 2, got {t}")
  elif not 1 <= cfg.loss.auto_steps <= t - 1:
    errors.append(f"loss.auto_steps {cfg.loss.auto_steps} must be in [1, frames_per_clip-1 = "
                  f"{t - 1}]")
  if cfg.data.image_size != cfg.model.predictor.img_size:
    errors.append(f"data.image_size {cfg.data.image_size} != model.predictor.img_size "
                  f"{cfg.model.predictor.img_size}: the predictor only runs on the grid it was "
                  "built for (set model.predictor.img_size; data.image_size follows it)")
  if cfg.model.predictor.img_size % cfg.model.encoder.patch_size:
    errors.append(f"model.predictor.img_size {cfg.model.predictor.img_size} is not a multiple of "
                  f"the patch {cfg.model.encoder.patch_size}")
  for block, fields in (("encoder", model_lib.ENCODER_FIELDS),
                        ("predictor", model_lib.PREDICTOR_FIELDS)):
    unknown = sorted(set(cfg.model[block]) - set(fields))
    if unknown:
      errors.append(f"model.{block} holds {unknown}, which are not {block} architecture fields "
                    f"({list(fields)}): numerics are set once in model.* (dtype, "
                    "attention_impl, remat, rope_mode), the image size in "
                    "model.predictor.img_size, the predictor's input width by the encoder")
  for name, allowed in models.loading.OVERRIDES.items():
    if name in model_lib.NUMERICS and cfg.model[name] not in allowed:
      errors.append(f"model.{name} must be one of {list(allowed)}, got {cfg.model[name]!r}")
  errors += optim.check(cfg.optim)
  if cfg.eval.every and cfg.data.val_fraction == 0.0:
    errors.append("eval.every > 0 needs held-out episodes: set data.val_fraction > 0")
  if errors:
    raise RefusedRun("invalid config:\n  " + "\n  ".join(errors))


def check_data(cfg: ml_collections.ConfigDict) -> None:
  """Fails naming what is wrong with `data` (a missing, empty or parent-folder path, a bad
  field) and when the dataset's action width is not the predictor's, before anything is built."""
  try:
    data.check_config(cfg.data)
    width = data.spec_of(cfg.data).action_dim
  except ValueError as e:
    raise RefusedRun(f"data: {e}") from None
  if width != cfg.model.predictor.action_dim:
    hint = ("set --config.model.predictor.action_dim=%d (a new predictor: init.predictor="
            "'random')" % width if cfg.init.predictor == "random" else
            "a converted predictor keeps its action width: train a new one with "
            f"init.predictor='random' and model.predictor.action_dim={width}, or give a spec "
            f"whose actions have {cfg.model.predictor.action_dim} values")
    raise RefusedRun(f"the dataset's actions have {width} values (spec {data.spec_of(cfg.data).name}"
                     f") but model.predictor.action_dim is {cfg.model.predictor.action_dim}: {hint}")


def converted_architecture(cfg: ml_collections.ConfigDict) -> dict | None:
  """architecture.json of `init.converted` (None without one), checked against the config."""
  if not cfg.init.converted:
    return None
  src = cfg.init.converted
  if src.endswith(".pt"):
    raise RefusedRun(f"init.converted must be a converted checkpoint directory, got the .pt file "
                     f"{src}: run python -m weights_conversion.convert --checkpoint {src} "
                     "--output DIR and pass DIR")
  try:
    arch = pretrained.read_architecture(src)
  except FileNotFoundError as e:
    raise RefusedRun(f"init.converted: {e}") from None
  enc_cfg, pred_cfg = model_lib.model_configs(cfg.model)
  errors = []
  wanted = [("encoder", enc_cfg, model_lib.ENCODER_FIELDS)]
  if cfg.init.predictor == "converted":
    if "predictor" not in arch["models"]:
      errors.append(f"init.predictor='converted' but {src} holds no AC predictor (a pre-training "
                    "checkpoint): set init.predictor='random' to train one from scratch")
    else:
      wanted.append(("predictor", pred_cfg,
                     tuple(f for f in model_lib.PREDICTOR_FIELDS if f != "img_size")))
  for kind, want, fields in wanted:
    if kind not in arch["models"]:
      continue
    have = arch["models"][kind]
    errors += [f"model.{kind}.{f} is {getattr(want, f)!r} but the {kind} in init.converted has "
               f"{have[f]!r}" for f in fields if have[f] != getattr(want, f)]
  if errors:
    raise RefusedRun(
        "the config does not describe the converted weights it starts from:\n  "
        + "\n  ".join(errors) + f"\nset these fields to the values of {src}/"
        f"{pretrained.ARCH_FILE}" + (", or use init.predictor='random' for a new predictor"
                                     if cfg.init.predictor == "converted" else ""))
  return arch


def identity(cfg: ml_collections.ConfigDict, arch: dict | None) -> dict[str, Any]:
  """What a run's checkpoints depend on: a resume may change anything but these."""
  enc_cfg, pred_cfg = model_lib.model_configs(cfg.model)
  out = {"mode": cfg.mode, "model.rope_mode": cfg.model.rope_mode}
  out.update({f"model.encoder.{f}": getattr(enc_cfg, f) for f in model_lib.ENCODER_FIELDS})
  out.update({f"model.predictor.{f}": getattr(pred_cfg, f) for f in model_lib.PREDICTOR_FIELDS
              if f != "img_size"})
  sha = arch["source"].get("params_sha256") if arch else None
  out["base.encoder"] = f"sha256 {sha}" if sha else f"random (init.seed {cfg.init.seed})"
  out["base.predictor"] = (f"sha256 {sha}" if cfg.init.predictor == "converted"
                           else f"random (init.seed {cfg.init.seed})")
  if cfg.mode != "full":
    for f in ("rank", "alpha", "targets", "seed") + (
        ("encoder_targets",) if cfg.mode == "lora_encoder" else ()):
      value = cfg.lora[f]
      out[f"lora.{f}"] = list(value) if isinstance(value, (list, tuple)) else value
  return out


def check_resume(workdir: str, ident: dict[str, Any]) -> dict | None:
  """The recorded run of `workdir` (None for a new one); refuses a run that would change what
  its checkpoints hold, naming the differing fields."""
  root = workdir_lib.root(workdir)
  if not (root / workdir_lib.RUN_FILE).exists():
    if workdir_lib.checkpoint_root(workdir).exists() and any(
        True for _ in workdir_lib.checkpoint_root(workdir).iterdir()):
      raise RefusedRun(f"{workdir} holds checkpoints but no {workdir_lib.RUN_FILE}, so it cannot "
                       "be resumed: train in a new --workdir")
    return None
  try:
    run = workdir_lib.read_run(workdir)
  except ValueError as e:
    raise RefusedRun(str(e)) from None
  recorded = run["identity"]
  diff = [f"{k}: {recorded.get(k, '(not set)')!r} in the run, {ident.get(k, '(not set)')!r} now"
          for k in sorted(set(recorded) | set(ident)) if recorded.get(k) != ident.get(k)]
  if diff:
    raise RefusedRun(
        f"refusing to resume {workdir}: its checkpoints belong to another model or base "
        "weights:\n  " + "\n  ".join(diff) + "\nEither run with the settings the run was started "
        f"with (recorded in {root / workdir_lib.RUN_FILE}), or start a new run in another "
        "--workdir.")
  return run


# -- Models and the jitted step ---------------------------------------------------------------


def _write_random_base(directory: str, modules: dict[str, nnx.Module], seed: int) -> str:
  """Writes randomly initialised models in the converted format; returns their sha256."""
  flats = {k: (m.cfg, {p: np.asarray(v) for p, v in pretrained.flat_params(m).items()})
           for k, m in modules.items()}
  sha = params_lib.params_digest(flats)
  # Orbax saves are collective (every process calls, the primary host writes).
  for kind, (_, flat) in flats.items():
    pretrained.save_item(directory, kind, flat)
  if jax.process_index() == 0:
    # Loaders of the run compute in float32 unless told otherwise.
    cfgs = {k: dataclasses.replace(c, dtype="float32", attention_impl="xla", remat=False)
            for k, (c, _) in flats.items()}
    pretrained.write_architecture(directory, cfgs, {"random_init_seed": seed,
                                                    "params_sha256": sha})
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices("vjepa_jax_base_weights_written")
  return sha


def base_models(cfg: ml_collections.ConfigDict, workdir: str
                ) -> tuple[dict[str, nnx.Module], dict[str, dict[str, str]]]:
  """The base encoder and predictor, and the record of where they come from.

  Converted parts come from `init.converted` (through `vjepa_jax.models.load`); random parts are
  drawn from `init.seed` and kept in `<workdir>/base` (written once, reused on resume).
  """
  enc_cfg, pred_cfg = model_lib.model_configs(cfg.model)
  loaded: dict[str, nnx.Module] = {}
  record: dict[str, dict[str, str]] = {}
  if cfg.init.converted:
    src = cfg.init.converted
    numerics = {k: cfg.model[k] for k in model_lib.NUMERICS}
    encoder, predictor = models.load(src, img_size=cfg.model.predictor.img_size, **numerics)
    kept = {"encoder": encoder}
    if cfg.init.predictor == "converted":
      kept["predictor"] = predictor
    sha = pretrained.params_sha256(src)
    where = src if "://" in src else str(epath.Path(src).resolve())
    for kind, module in kept.items():
      loaded[kind] = module
      record[kind] = {"dir": where, "sha256": sha}
  wanted = {"encoder": enc_cfg, "predictor": pred_cfg}
  random_kinds = [k for k in wanted if k not in loaded]
  if random_kinds:
    directory = str(workdir_lib.root(workdir) / workdir_lib.BASE_DIR)
    try:
      arch = pretrained.read_architecture(directory)
    except FileNotFoundError:
      arch = None
    runtime = ("img_size",) + model_lib.NUMERICS
    shape_of = lambda c: {f: v for f, v in c.items() if f not in runtime}  # noqa: E731
    reuse = (arch is not None and arch["source"].get("random_init_seed") == cfg.init.seed
             and {k: shape_of(c) for k, c in arch["models"].items()}
             == {k: shape_of(pretrained.config_to_dict(wanted[k])) for k in random_kinds})
    if reuse:
      sha = pretrained.params_sha256(directory)
      override = {n: getattr(enc_cfg, n) for n in runtime}
      fresh = pretrained.load_converted(directory, kinds=tuple(random_kinds),
                                        overrides={k: override for k in random_kinds})
    else:
      fresh = {k: models.random_model(k, wanted[k], cfg.init.seed + i)
               for i, k in enumerate(random_kinds)}
      sha = _write_random_base(directory, fresh, cfg.init.seed)
    for kind in random_kinds:
      loaded[kind] = fresh[kind]
      record[kind] = {"dir": workdir_lib.BASE_DIR, "sha256": sha}
  return loaded, record


def step_flops(compiled) -> float | None:
  try:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops")) if cost and cost.get("flops") else None
  except Exception:  # cost analysis is best effort and backend dependent
    return None


class Setup(NamedTuple):
  state: step_lib.TrainState
  frozen: object
  step_fn: object          # jitted (state, frozen, batch) -> (state, metrics)
  mesh: object
  base: dict               # {kind: {"dir", "sha256"}} of the base weights
  adapted: list
  graphdef: object         # with `rest`, rebuilds the model from (trainable, frozen)
  rest: object


def setup(cfg: ml_collections.ConfigDict, workdir: str, mesh) -> Setup:
  """Base weights, adapters, sharded state and the jitted step for `mesh`."""
  base, record = base_models(cfg, workdir)
  model = model_lib.WorldModel(base["encoder"], base["predictor"])
  adapted = lora_lib.attach(model.encoder, model.predictor, cfg.mode, cfg.lora)
  model_lib.log_audit(model, cfg.mode)
  graphdef, trainable, frozen, rest = model_lib.split(model, cfg.mode)
  del model, base

  frozen_sh = sharding.tree_shardings(frozen, mesh)
  train_sh = sharding.tree_shardings(trainable, mesh)
  frozen = jax.device_put(frozen, frozen_sh)
  trainable = jax.device_put(trainable, train_sh)
  tx = optim.make_optimizer(cfg.optim)
  opt_sh = sharding.tree_shardings(jax.eval_shape(tx.init, trainable), mesh)
  opt_state = jax.jit(tx.init, out_shardings=opt_sh)(trainable)
  repl = sharding.replicated(mesh)
  state = step_lib.TrainState(
      step=jax.device_put(jnp.zeros([], jnp.int32), repl), trainable=trainable,
      opt_state=opt_state,
      rng=jax.device_put(jax.random.key_data(jax.random.key(cfg.seed)), repl))
  state_sh = step_lib.TrainState(repl, train_sh, opt_sh, repl)
  step_fn = jax.jit(step_lib.make_train_step(graphdef, cfg.mode, rest, cfg, tx),
                    in_shardings=(state_sh, frozen_sh, sharding.batch_sharding(mesh)),
                    out_shardings=(state_sh, repl), donate_argnums=(0,))
  return Setup(state, frozen, step_fn, mesh, record, adapted, graphdef, rest)


# -- The loop's parts --------------------------------------------------------------------------


def data_batches(cfg: ml_collections.ConfigDict, state: dict | None) -> data.BatchIterator:
  """This process's batches of `cfg.data` (any format), continuing from a saved `state`."""
  return data.batches(cfg.data, cfg.batch_size // jax.process_count(), state=state)


def periodic_eval(cfg: ml_collections.ConfigDict, model) -> dict[str, float]:
  """Held-out metrics (`vjepa_jax.evaluate`) of the current model on `data.split="val"`."""
  from vjepa_jax import evaluate
  val = ml_collections.ConfigDict(cfg.data.to_dict())
  # Frames at their crop size, resized on the device by `vjepa_jax.preprocess` as in training and
  # planning, so evaluation scores exactly the model input the planner gives.
  val.update(split="val", num_epochs=1, deterministic=True, shuffle=False,
             resize_on_host=False, process_index=0, process_count=1)
  ecfg = evaluate.default_config()
  ecfg.update({k: v for k, v in cfg.eval.items() if k not in ("every", "batch_size")})
  it = data.batches(val, cfg.eval.batch_size)
  try:
    return evaluate.run(model.encoder, model.predictor, it, ecfg)
  finally:
    it.close()


class StopSignals:
  """SIGTERM (preemption) and the first SIGINT (Ctrl-C) ask the loop to finish its step, save
  and exit; a second Ctrl-C aborts at once without saving."""

  def __init__(self):
    self.signal = None
    self._old = {}

  def _on_signal(self, signum, frame):
    del frame
    if self.signal is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.signal = signum
    if jax.process_index() == 0:
      print(f"received {signal.Signals(signum).name}: finishing this step, saving a checkpoint "
            "and exiting (Ctrl-C again aborts without saving)", flush=True)

  def __enter__(self):
    # Python delivers signals to the main thread only; a loop run elsewhere keeps the defaults.
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._old[sig] = signal.signal(sig, self._on_signal)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._old.items():
      signal.signal(sig, handler)


class Progress:
  """Console lines and metric rows; step times exclude the compilation."""

  def __init__(self, cfg, total: int, start: int, writer: metrics_lib.MetricWriter,
               flops: float | None):
    self.cfg, self.total, self.writer, self.flops = cfg, total, writer, flops
    self.peak = cfg.peak_flops_per_device or metrics_lib.peak_flops_per_device()
    self.t_last, self.n_last = time.time(), start
    self.last: dict[str, float] = {}
    self.skipped = 0
    self.console = jax.process_index() == 0

  def log(self, done: int, m: dict) -> None:
    m = jax.device_get(m)
    now = time.time()
    step_time = (now - self.t_last) / max(done - self.n_last, 1)
    self.t_last, self.n_last = now, done
    last = {k: float(v) for k, v in m.items() if k != "finite"}
    last.update(step_time=step_time, clips_per_s=self.cfg.batch_size / step_time,
                skipped_nonfinite=self.skipped)
    if self.flops:
      last["tflops_per_device"] = self.flops / step_time / jax.device_count() / 1e12
      if self.peak:
        last["mfu"] = self.flops / step_time / jax.device_count() / self.peak
    self.last = last
    self.writer.write(done, last)
    if self.console:
      eta = (self.total - done) * step_time
      mfu = f" mfu {last['mfu']:.1%}" if "mfu" in last else ""
      losses = " ".join(f"{k} {last[k]:.4f}" for k in metrics_lib.LOSSES)
      print(f"step {done}/{self.total} {losses} lr {last['lr']:.2e} "
            f"{last['clips_per_s']:.1f} clips/s {step_time * 1e3:.0f} ms/step "
            f"eta {eta / 60:.1f} min{mfu}", flush=True)

  def log_eval(self, done: int, scalars: dict[str, float]) -> None:
    self.writer.write(done, scalars)
    if self.console:
      print(f"eval step {done}: " + " ".join(f"{k.split('/')[-1]} {v:.4g}"
                                             for k, v in sorted(scalars.items())), flush=True)


def check_finite(pending: list, cfg, ckpt: ckpt_lib.Checkpointer) -> int:
  """Reads the finite flags of the steps since the last read; returns how many were bad."""
  bad = [s for s, ok in jax.device_get(pending) if not ok]
  pending.clear()
  if bad and not cfg.skip_nonfinite:
    raise NonFiniteLoss(
        f"non-finite loss or gradients at step {bad[0]}; last good checkpoint: "
        f"{ckpt.dir}/{ckpt.latest_step()} (set skip_nonfinite=True to skip such batches)")
  return len(bad)


def summary(workdir: str, done: int, total: int, last: dict, seconds: float | None,
            stopped: str | None) -> str:
  """Where everything of a run is, after its last line of progress."""
  root = workdir_lib.root(workdir)
  if stopped:
    head = (f"stopped by {stopped} at step {done}/{total} (saved); run the same command again "
            "to resume")
  elif seconds is None:
    head = f"{workdir} is finished: step {done}/{total} was trained before; nothing to do"
  else:
    head = f"finished step {done}/{total} in {seconds / 60:.1f} min"
  losses = " ".join(f"{k} {last[k]:.4f}" for k in metrics_lib.LOSSES if k in last)
  lines = [head + (f": {losses}" if losses else ""),
           f"  checkpoints: {root / workdir_lib.CHECKPOINT_DIR}",
           f"  metrics:     {root / metrics_lib.METRICS_FILE}",
           f"  TensorBoard: tensorboard --logdir {root / 'tensorboard'}",
           f"  loss plot:   {root / 'loss.png'}"]
  return "\n".join(lines)


def _last_logged(workdir: str) -> dict:
  rows = [r for r in metrics_lib.read_jsonl(workdir) if "loss" in r]
  return {k: float(v) for k, v in rows[-1].items() if k not in ("step", "time")} if rows else {}


def _run_record(cfg, ident: dict, st: Setup) -> dict:
  return {"format_version": workdir_lib.FORMAT_VERSION, "config": cfg.to_dict(),
          "identity": ident, "base": st.base, "adapted_layers": st.adapted,
          "frozen_without_input": [f"predictor.{n}" for n in model_lib.UNUSED],
          "process_count": jax.process_count()}


def accept(cfg: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Every check that can refuse the run, before anything is built or written; returns what
  the run's checkpoints depend on (`identity`)."""
  validate(cfg, jax.device_count(), jax.process_count())
  check_data(cfg)
  ident = identity(cfg, converted_architecture(cfg))
  check_resume(workdir, ident)
  distributed.check_consistent(cfg.to_json_best_effort(sort_keys=True))
  return ident


def finished_run(workdir: str, total: int) -> dict | None:
  """The last metrics of a run that already trained `total` steps (None otherwise)."""
  done = workdir_lib.steps(workdir)
  if not done or done[-1] < total:
    return None
  last = _last_logged(workdir)
  if jax.process_index() == 0:
    print(summary(workdir, done[-1], total, last, None, None), flush=True)
  return last


def _data_meta(cfg, stream: data.BatchIterator) -> dict:
  """The data position a checkpoint records: the stream state after the step's batch."""
  return {"stream": stream.get_state(), "batch_size": cfg.batch_size,
          "process_count": jax.process_count()}


def data_state(cfg, meta: dict, step: int) -> dict | None:
  """Where the data stream of a run resumed at `step` continues: the saved stream state, or,
  after a change of batch size or process count, the equivalent clip count of this process."""
  if not step:
    return None
  saved = meta.get("data", {})
  if (saved.get("batch_size"), saved.get("process_count")) == (cfg.batch_size,
                                                               jax.process_count()):
    return saved["stream"]
  if data.is_mixture(cfg.data):
    logging.warning("resuming a mixture with a different process count or batch size: the "
                    "data stream starts again")
    return None
  logging.warning("resuming with a different process count or batch size: the data stream "
                  "continues from the equivalent clip count, not the identical clips")
  return {"format": data.resolve(cfg.data).format,
          "clips": step * (cfg.batch_size // jax.process_count())}


def resume(ckpt: ckpt_lib.Checkpointer, state, cfg, workdir: str):
  """(state, step, data state) of the newest checkpoint, restored onto `state`'s mesh, or
  (state, 0, None)."""
  start = ckpt.latest_step() or 0
  if not start:
    return state, 0, None
  state, meta = ckpt.restore(start, state)
  if jax.process_index() == 0:
    print(f"resumed from step {start} ({workdir})", flush=True)
  return state, start, data_state(cfg, meta, start)


def _eval_every(cfg) -> int:
  if cfg.eval.every and jax.process_count() > 1:
    logging.warning("periodic evaluation runs in single-process jobs; evaluate checkpoints with "
                    "python -m vjepa_jax.evaluate --workdir instead")
    return 0
  return cfg.eval.every


def run_steps(cfg, st: Setup, state, start: int, stream: data.BatchIterator,
              ckpt: ckpt_lib.Checkpointer, writer: metrics_lib.MetricWriter,
              stop: StopSignals) -> tuple[int, dict, str | None]:
  """Steps `start` .. total with logging, evaluation, checkpoints and stop signals; returns
  (last step done, last logged metrics, the signal that stopped it or None)."""
  total, eval_every = cfg.optim.total_steps, _eval_every(cfg)
  batches = (sharding.global_batch({k: b[k] for k in ("video", "states", "actions")}, st.mesh)
             for b in stream)
  batch = next(batches)
  t0 = time.time()
  step_fn = st.step_fn.lower(state, st.frozen, batch).compile()
  if jax.process_index() == 0:
    print(f"compiled the train step in {time.time() - t0:.1f} s", flush=True)
  progress = Progress(cfg, total, start, writer, step_flops(step_fn))
  # Finite flags of recent steps stay on the device and are read only where the host syncs
  # anyway (logging, checkpoints), so every bad step is caught without stalling each step.
  pending: list = []
  done = start
  for done in range(start + 1, total + 1):
    state, m = step_fn(state, st.frozen, batch if done == start + 1 else next(batches))
    pending.append((done, m["finite"]))
    # Read the flag once: a signal landing later must not skip the forced save below.
    stopping = stop.signal is not None
    log_now = done % cfg.log_every == 0 or done == total or stopping
    if log_now or ckpt.should_save(done) or stopping:
      progress.skipped += check_finite(pending, cfg, ckpt)
    if log_now:
      progress.log(done, m)
    if eval_every and (done % eval_every == 0 or done == total):
      progress.log_eval(done, periodic_eval(
          cfg, nnx.merge(st.graphdef, state.trainable, st.frozen, st.rest)))
    ckpt.save(done, state, {"step": done, "mode": cfg.mode, "data": _data_meta(cfg, stream)},
              force=stopping or done == total)
    if stopping:
      return done, progress.last, signal.Signals(stop.signal).name
  return done, progress.last, None


# -- The loop ---------------------------------------------------------------------------------


def train(cfg: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs (or resumes) a training run; returns the last logged metrics."""
  t_start = time.time()
  ident = accept(cfg, workdir)
  last = finished_run(workdir, cfg.optim.total_steps)
  if last is not None:
    return last
  st = setup(cfg, workdir, sharding.make_mesh(cfg.mesh))
  ckpt_lib.write_run(workdir, _run_record(cfg, ident, st))
  ckpt = ckpt_lib.Checkpointer(workdir, cfg.checkpoint.every, cfg.checkpoint.keep,
                               cfg.checkpoint.async_save)
  try:
    state, start, position = resume(ckpt, st.state, cfg, workdir)
    stream = data_batches(cfg, position)
    writer = metrics_lib.MetricWriter(workdir, cfg.wandb.enabled, cfg.wandb.project,
                                      cfg.to_dict(), resume_step=start)
    try:
      with StopSignals() as stop:
        done, last, stopped = run_steps(cfg, st, state, start, stream, ckpt, writer, stop)
    finally:
      writer.close()
      stream.close()
  finally:
    ckpt.close()
  metrics_lib.plot_loss(workdir)
  if jax.process_index() == 0:
    print(summary(workdir, done, cfg.optim.total_steps, last, time.time() - t_start, stopped),
          flush=True)
  return last
