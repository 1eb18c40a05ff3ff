"""The fine-tuning loop: mesh -> base weights -> adapters -> shardings -> jitted step -> resume
-> data -> loop with logging, checkpoints and preemption handling."""
from __future__ import annotations

import json
import logging
import signal
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath
from flax import nnx

from vjepa_jax import distributed
from vjepa_jax.models import configs as model_configs
from vjepa_jax.models import pretrained
from vjepa_jax.train import checkpoint as ckpt_lib
from vjepa_jax.train import metrics as metrics_lib
from vjepa_jax.train import model as model_lib
from vjepa_jax.train import optim
from vjepa_jax.train import sharding
from vjepa_jax.train import step as step_lib


class NonFiniteLoss(RuntimeError):
  pass


def _model_overrides(cfg) -> dict:
  keep = {"dtype": cfg.model.dtype, "attention_impl": cfg.model.attention_impl,
          "remat": cfg.model.remat, "rope_mode": cfg.model.rope_mode}
  return {"encoder": keep, "predictor": keep}


def validate(cfg: ml_collections.ConfigDict, num_devices: int, process_count: int) -> None:
  """Fails fast, before anything compiles, on impossible settings."""
  errors = []
  if cfg.mode not in model_lib.MODES:
    errors.append(f"mode must be one of {model_lib.MODES}, got {cfg.mode!r}")
  if cfg.batch_size % process_count:
    errors.append(f"batch_size {cfg.batch_size} is not divisible by the {process_count} processes")
  try:
    shape = sharding.mesh_shape(cfg.mesh, num_devices)
  except ValueError as e:
    errors.append(str(e))
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
  p = cfg.model.predictor
  if cfg.data.image_size != p.img_size:
    errors.append(f"data.image_size {cfg.data.image_size} != model.predictor.img_size "
                  f"{p.img_size}: the predictor only runs on the grid it was built for")
  if p.img_size % p.patch_size:
    errors.append(f"model.predictor.img_size {p.img_size} is not a multiple of the patch "
                  f"{p.patch_size}")
  if cfg.optim.total_steps < cfg.optim.warmup_steps + cfg.optim.anneal_steps:
    errors.append("optim.total_steps must cover warmup_steps + anneal_steps")
  if errors:
    raise ValueError("invalid config:\n  " + "\n  ".join(errors))


def _base_weights(cfg, workdir: str) -> str:
  """Directory of the converted base checkpoint; random init is written once to workdir/base."""
  if cfg.init.converted:
    return cfg.init.converted
  base = str(ckpt_lib.workdir_path(workdir) / "base")
  if not (epath.Path(base) / pretrained.ARCH_FILE).exists():
    enc = model_configs.EncoderConfig(**cfg.model.encoder.to_dict())
    pred = model_configs.PredictorConfig(**cfg.model.predictor.to_dict())
    model = model_lib.random_init(enc, pred, cfg.init.seed)
    converted = {"encoder": (enc, pretrained.flat_params(model.encoder)),
                 "predictor": (pred, pretrained.flat_params(model.predictor))}
    from weights_conversion.convert import params_digest
    source = {"random_init_seed": cfg.init.seed, "params_sha256": params_digest(
        {k: (c, {p: np.asarray(v) for p, v in f.items()}) for k, (c, f) in converted.items()})}
    # Orbax saves are collective (every process calls, the primary host writes).
    for kind, (_, flat) in converted.items():
      pretrained.save_item(base, kind, flat)
    if jax.process_index() == 0:
      pretrained.write_architecture(base, {k: c for k, (c, _) in converted.items()}, source)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices("vjepa_jax_base_weights_written")
  return base


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
  base_dir: str
  base_sha: str
  adapted: list
  graphdef: object         # with `rest`, rebuilds the model from (trainable, frozen)
  rest: object


def periodic_eval(cfg: ml_collections.ConfigDict, model) -> dict[str, float]:
  """Held-out metrics (`vjepa_jax.evaluate`) of the current model on `data.split="val"`."""
  from vjepa_jax import evaluate
  from vjepa_jax.data import droid
  data = ml_collections.ConfigDict(cfg.data.to_dict())
  # Square host-resized frames: the evaluation preprocessing then only normalises them.
  data.update(split="val", num_epochs=1, deterministic=True, shuffle=False,
              resize_on_host=True, process_index=0, process_count=1)
  batches = droid.batch_iterator(droid.make_clip_dataset(data), cfg.eval.batch_size)
  return evaluate.run(model.encoder, model.predictor, batches, cfg.eval)


def setup(cfg: ml_collections.ConfigDict, workdir: str, mesh) -> Setup:
  """Base weights, adapters, sharded state and the jitted step for `mesh`."""
  base_dir = _base_weights(cfg, workdir)
  base_sha = pretrained.params_sha256(base_dir)
  base = pretrained.load_converted(base_dir, overrides=_model_overrides(cfg))
  model = model_lib.WorldModel(base["encoder"], base["predictor"])
  if cfg.data.image_size != model.predictor.cfg.img_size:
    raise ValueError(f"data.image_size {cfg.data.image_size} != the base predictor's img_size "
                     f"{model.predictor.cfg.img_size}")
  adapted = model_lib.attach_adapters(model, cfg.mode, cfg.lora)
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
  return Setup(state, frozen, step_fn, mesh, base_dir, base_sha, adapted, graphdef, rest)


def train(cfg: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs (or resumes) a fine-tune; returns the last logged metrics."""
  validate(cfg, jax.device_count(), jax.process_count())
  distributed.check_consistent(cfg.to_json_best_effort(sort_keys=True))
  mesh = sharding.make_mesh(cfg.mesh)
  writer_ok = jax.process_index() == 0
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  (state, frozen, step_fn, mesh, base_dir, base_sha, adapted, graphdef,
   rest) = setup(cfg, workdir, mesh)
  eval_every = cfg.eval.every
  if eval_every and jax.process_count() > 1:
    logging.warning("periodic evaluation runs in single-process jobs; evaluate checkpoints with "
                    "python -m vjepa_jax.evaluate --workdir instead")
    eval_every = 0
  if eval_every and cfg.data.val_fraction == 0.0:
    raise ValueError("eval.every > 0 needs held-out episodes: set data.val_fraction > 0")

  ckpt = ckpt_lib.Checkpointer(workdir, cfg.checkpoint.every, cfg.checkpoint.keep,
                               cfg.checkpoint.async_save)
  local_batch = cfg.batch_size // jax.process_count()
  run_meta = {"config": cfg.to_dict(), "base_dir": base_dir, "base_sha256": base_sha,
              "adapted_layers": adapted, "process_count": jax.process_count()}
  ckpt_lib.write_run_meta(workdir, json.loads(json.dumps(run_meta, default=list)))
  start = ckpt.latest_step()
  if start is not None:
    state, meta = ckpt.restore(start, state)
    ckpt_lib.check_base(meta, base_dir, base_sha)
    if meta["process_count"] != jax.process_count() or meta["batch_size"] != cfg.batch_size:
      logging.warning("resuming with a different process count or batch size: the data stream "
                      "restarts from the equivalent clip count, not the identical clips")
    logging.info("resumed from %s/%d", ckpt.dir, start)
  start = int(start or 0)

  from vjepa_jax.data import droid
  ds = droid.make_clip_dataset(cfg.data, skip=start * local_batch)
  batches = droid.batch_iterator(ds, local_batch)

  total = cfg.optim.total_steps if not cfg.get("num_steps") else cfg.num_steps
  writer = metrics_lib.MetricWriter(workdir, cfg.wandb.enabled, cfg.wandb.project, cfg.to_dict())
  stop = {"signal": None}

  def on_term(signum, frame):
    del frame
    stop["signal"] = signum

  old_handler = signal.signal(signal.SIGTERM, on_term)

  def meta_for(step):
    return {"step": step, "base_dir": base_dir, "base_sha256": base_sha,
            "clips_consumed_per_process": step * local_batch, "batch_size": cfg.batch_size,
            "process_count": jax.process_count(), "mode": cfg.mode, "seed": cfg.seed}

  peak = cfg.peak_flops_per_device or metrics_lib.peak_flops_per_device()
  flops = None
  last = {}
  skipped = 0
  t_last, n_last = time.time(), start
  # Finite flags of recent steps stay on the device and are read only where the host syncs
  # anyway (logging, checkpoints), so every bad step is caught without stalling each step.
  pending = []
  try:
    for step in range(start, total):
      local = next(batches)
      batch = sharding.global_batch(
          {k: local[k] for k in ("video", "states", "actions")}, mesh)
      if flops is None and step == start:
        flops = step_flops(step_fn.lower(state, frozen, batch).compile())
      state, m = step_fn(state, frozen, batch)
      done = step + 1
      pending.append((done, m["finite"]))
      # Read the flag once: a signal landing later must not skip the forced save below.
      stopping = stop["signal"] is not None
      log_now = done % cfg.log_every == 0 or done == total or stopping
      if log_now or ckpt.mngr.should_save(done) or stopping:
        bad = [s for s, ok in jax.device_get(pending) if not ok]
        pending.clear()
        if bad and not cfg.skip_nonfinite:
          raise NonFiniteLoss(
              f"non-finite loss or gradients at step {bad[0]}; last good checkpoint: "
              f"{ckpt.dir}/{ckpt.latest_step()} (set skip_nonfinite=True to skip such batches)")
        skipped += len(bad)
      if log_now:
        m = jax.device_get(m)
        dt = time.time() - t_last
        steps_done = done - n_last
        t_last, n_last = time.time(), done
        step_time = dt / max(steps_done, 1)
        last = {k: float(v) for k, v in m.items() if k != "finite"}
        last.update(step_time=step_time, clips_per_s=cfg.batch_size / step_time,
                    skipped_nonfinite=skipped)
        if flops:
          last["tflops_per_device"] = flops / step_time / jax.device_count() / 1e12
          if peak:
            last["mfu"] = flops / step_time / jax.device_count() / peak
        writer.write(done, last)
        if writer_ok:
          eta = (total - done) * step_time
          mfu = f" mfu {last['mfu']:.1%}" if "mfu" in last else ""
          print(f"step {done}/{total} loss {last['loss']:.4f} (tf {last['jloss']:.4f} "
                f"ar {last['sloss']:.4f}) lr {last['lr']:.2e} {last['clips_per_s']:.1f} clips/s "
                f"{step_time * 1e3:.0f} ms/step eta {eta / 60:.1f} min{mfu}", flush=True)
      if eval_every and (done % eval_every == 0 or done == total):
        scalars = periodic_eval(cfg, nnx.merge(graphdef, state.trainable, frozen, rest))
        writer.write(done, scalars)
        if writer_ok:
          print(f"eval step {done}: " + " ".join(f"{k.split('/')[-1]} {v:.4g}"
                                                 for k, v in sorted(scalars.items())), flush=True)
      ckpt.save(done, state, meta_for(done), force=stopping or done == total)
      if stopping:
        logging.warning("received signal %s: saved step %d, exiting", stop["signal"], done)
        break
  finally:
    ckpt.close()
    writer.close()
    signal.signal(signal.SIGTERM, old_handler)
  metrics_lib.plot_loss(workdir)
  return last

