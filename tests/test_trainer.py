"""Trainer invariants: sharded == single-device step, LoRA freezes the base exactly, targets carry
no gradient, input-less layers stay frozen, the audit counts what the mode trains, checkpoints
resume on another mesh, and bad settings, data paths or resumes are refused before any work."""
import json
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

import train_tiny
from vjepa_jax import models
from vjepa_jax.models import lora as lora_lib
from vjepa_jax.models import pretrained
from vjepa_jax.train import metrics as metrics_lib
from vjepa_jax.train import model as model_lib
from vjepa_jax.train import sharding
from vjepa_jax.train import step as step_lib
from vjepa_jax.train import trainer


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
  return train_tiny.make_dataset(tmp_path_factory.mktemp("synthetic"))


def ml(**kw):
  return ml_collections.ConfigDict(kw)


def _run_steps(cfg, workdir, mesh, n=2):
  st = trainer.setup(cfg, str(workdir), mesh)
  state, losses = st.state, []
  for i in range(n):
    batch = sharding.global_batch(train_tiny.fixed_batch(cfg, i), mesh)
    state, m = st.step_fn(state, st.frozen, batch)
    losses.append(float(m["loss"]))
  params = {tuple(p): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(state.trainable)}
  return losses, params


@pytest.mark.parametrize("mode, shapes", [
    ("full", (dict(data=8, fsdp=1, tensor=1), dict(data=2, fsdp=2, tensor=2))),
    ("lora", (dict(data=2, fsdp=4, tensor=1),)),
])
def test_sharded_step_equals_single_device(tmp_path, data_path, mode, shapes):
  """The same two updates on 1 device and on 8 devices under several mesh shapes agree to
  float32 round-off (loss and every updated parameter)."""
  cfg = train_tiny.tiny_config(data_path, mode=mode)
  single = sharding.make_mesh(ml(data=1, fsdp=1, tensor=1), devices=jax.devices()[:1])
  ref_loss, ref_params = _run_steps(cfg, tmp_path, single)
  for shape in shapes:
    loss, params = _run_steps(cfg, tmp_path, sharding.make_mesh(ml(**shape)))
    np.testing.assert_allclose(loss, ref_loss, rtol=2e-5, err_msg=str(shape))
    for k in ref_params:
      np.testing.assert_allclose(params[k], ref_params[k], atol=2e-6, err_msg=f"{shape} {k}")
  assert ref_loss[1] != ref_loss[0]


def test_fsdp_really_shards_weights(tmp_path, data_path):
  cfg = train_tiny.tiny_config(data_path)
  st = trainer.setup(cfg, str(tmp_path), sharding.make_mesh(ml(data=2, fsdp=4, tensor=1)))
  specs = [v.get_value().sharding.spec for _, v in nnx.to_flat_state(st.frozen)]
  assert any("fsdp" in str(s) for s in specs)


def test_lora_step0_equals_base_and_base_stays_bit_identical(tmp_path, data_path):
  cfg = train_tiny.tiny_config(data_path, steps=3, mode="lora")
  mesh = sharding.make_mesh(ml(data=8, fsdp=1, tensor=1))
  full_loss, _ = _run_steps(train_tiny.tiny_config(data_path), tmp_path / "a", mesh, n=1)
  lora_loss, _ = _run_steps(cfg, tmp_path / "a", mesh, n=1)
  np.testing.assert_allclose(lora_loss[0], full_loss[0], rtol=1e-6)

  trainer.train(cfg, str(tmp_path / "run"))
  enc, pred = models.load(str(tmp_path / "run"))
  base = pretrained.load_converted(str(tmp_path / "run" / "base"))
  _, trained, frozen, _ = model_lib.split(model_lib.WorldModel(enc, pred), "lora")
  base_flat = {(kind,) + k: v for kind in ("encoder", "predictor")
               for k, v in pretrained.flat_params(base[kind]).items()}
  frozen_flat = {tuple(p): v.get_value() for p, v in nnx.to_flat_state(frozen)}
  assert set(frozen_flat) == set(base_flat)
  for k, v in frozen_flat.items():
    np.testing.assert_array_equal(v, base_flat[k], err_msg=str(k))
  b = [v.get_value() for p, v in nnx.to_flat_state(trained) if p[-1] == "lora_b"]
  assert b and any(np.abs(x).max() > 0 for x in b), "adapters did not train"


def test_audit_counts_match_mode_and_freezes_inputless_layers(tmp_path, data_path):
  cfg = train_tiny.tiny_config(data_path)
  base, _ = trainer.base_models(cfg, str(tmp_path))
  count = lambda flat: sum(int(np.prod(v.shape)) for v in flat.values())  # noqa: E731
  pred_flat = pretrained.flat_params(base["predictor"])
  extr = count({p: v for p, v in pred_flat.items() if p[0] == "extrinsics_encoder"})
  model = model_lib.WorldModel(base["encoder"], base["predictor"])
  rows = model_lib.audit(model, "full")
  assert extr > 0
  assert rows["predictor"]["trainable"] == count(pred_flat) - extr
  assert rows["predictor.extrinsics_encoder (no input)"] == {
      "trainable": 0, "frozen": extr, "trainable_bytes": 0, "frozen_bytes": 4 * extr}
  assert rows["encoder"]["trainable"] == 0
  assert rows["encoder"]["frozen"] == count(pretrained.flat_params(base["encoder"]))
  assert "(no input)" in model_lib.format_audit(rows)
  adapted = lora_lib.attach(model.encoder, model.predictor, "lora_encoder", cfg.lora)
  rows = model_lib.audit(model, "lora_encoder")
  lins = {**{"predictor." + k: v for k, v in lora_lib.linear_layers(model.predictor).items()},
          **{"encoder." + k: v for k, v in lora_lib.linear_layers(model.encoder).items()}}
  expected = sum(cfg.lora.rank * (lins[p].in_features + lins[p].out_features) for p in adapted)
  assert rows["predictor.lora"]["trainable"] + rows["encoder.lora"]["trainable"] == expected
  assert rows["predictor"]["trainable"] == 0


def test_inputless_layers_are_not_updated_or_decayed(tmp_path, data_path):
  """In full mode the extrinsics encoder (no extrinsics are fed) gets no optimizer state and
  keeps its base values, while every other predictor tensor moves."""
  cfg = train_tiny.tiny_config(data_path)
  st = trainer.setup(cfg, str(tmp_path), sharding.make_mesh(ml(data=8, fsdp=1, tensor=1)))
  paths = [tuple(p) for p, _ in nnx.to_flat_state(st.state.trainable)]
  assert paths and not any("extrinsics_encoder" in p for p in paths)
  frozen = {tuple(p) for p, _ in nnx.to_flat_state(st.frozen)}
  assert ("predictor", "extrinsics_encoder", "kernel") in frozen


def test_lora_encoder_targets_receive_no_gradient(tmp_path, data_path):
  """With encoder adapters training, the gradient through the target path is exactly zero and
  the gradient through the context path is not."""
  cfg = train_tiny.tiny_config(data_path, mode="lora_encoder")
  base, _ = trainer.base_models(cfg, str(tmp_path))
  model = model_lib.WorldModel(base["encoder"], base["predictor"])
  lora_lib.attach(model.encoder, model.predictor, "lora_encoder", cfg.lora)
  # Non-zero B so that every adapter parameter has a gradient path.
  for lin in lora_lib.linear_layers(model.encoder).values():
    if lin.lora is not None:
      lin.lora.lora_b[...] = 0.01 * jnp.ones_like(lin.lora.lora_b[...])
  graphdef, trainable, frozen, rest = model_lib.split(model, "lora_encoder")
  video = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 32, 32, 3)), jnp.float32)

  def through(which):
    def f(params):
      m = nnx.merge(graphdef, params, frozen, rest)
      context, targets = step_lib.context_and_targets(m, video, True)
      return jnp.sum(jnp.sin({"context": context, "targets": targets}[which]))
    return jax.grad(f)(trainable)

  enc_grads = lambda g: [np.asarray(v.get_value()) for p, v in nnx.to_flat_state(g)  # noqa
                         if p[0] == "encoder"]
  assert enc_grads(through("targets")) and all(
      not np.any(g) for g in enc_grads(through("targets")))
  assert any(np.any(g) for g in enc_grads(through("context")))


@pytest.mark.parametrize("override, message", [
    (dict(batch_size=6), "data-parallel size"),
    (dict(mode="half"), "mode must be one of"),
    (dict(**{"loss.auto_steps": 4}), "auto_steps"),
    (dict(**{"model.predictor.img_size": 40}), "not a multiple of the patch"),
    (dict(**{"optim.lr": -1e-3}), "optim.lr must be > 0"),
    (dict(**{"optim.lr": 0.0}), "optim.lr must be > 0"),
    (dict(**{"optim.warmup_steps": 7}), "exceed total_steps"),
    (dict(**{"optim.anneal_steps": -1}), "anneal_steps must be >= 0"),
    (dict(**{"optim.b2": 1.0}), "optim.b2 must be in"),
    (dict(**{"init.predictor": "converted"}), "needs init.converted"),
    (dict(**{"init.predictor": "scratch"}), "init.predictor must be one of"),
    (dict(**{"model.dtype": "fp8"}), "model.dtype must be one of"),
    (dict(**{"model.encoder.img_size": 64}), "not encoder architecture fields"),
])
def test_invalid_configs_fail_before_compiling(data_path, override, message):
  cfg = train_tiny.tiny_config(data_path, **override)
  with pytest.raises(ValueError, match=message):
    trainer.validate(cfg, num_devices=8, process_count=1)


def test_every_problem_is_reported_at_once(data_path):
  cfg = train_tiny.tiny_config(data_path, mode="half", batch_size=6, **{"optim.lr": -1.0})
  with pytest.raises(ValueError) as e:
    trainer.validate(cfg, num_devices=8, process_count=1)
  for message in ("mode must be one of", "data-parallel size", "optim.lr must be > 0"):
    assert message in str(e.value)


def test_too_few_cpu_devices_says_why_and_how_to_change_it(data_path):
  cfg = train_tiny.tiny_config(data_path, **{"mesh.data": 2})
  with pytest.raises(ValueError, match="needs 2 devices, 1 available") as e:
    trainer.validate(cfg, num_devices=1, process_count=1)
  assert "cpu_devices" in str(e.value) and "VJEPA_CPU_DEVICES" in str(e.value)


def test_data_image_size_follows_the_predictor(data_path):
  cfg = train_tiny.tiny_config(data_path)
  cfg.model.predictor.img_size = 48
  assert cfg.data.image_size == 48
  cfg.data.image_size = 64
  assert cfg.model.predictor.img_size == 64


def test_numerics_are_set_once():
  from configs import common
  cfg = common.base_config()
  cfg.lock()
  for block in ("encoder", "predictor"):
    with pytest.raises(AttributeError):
      cfg.model[block].dtype = "float32"
  assert "num_steps" not in cfg


@pytest.mark.parametrize("kind", ["missing", "empty", "parent", "file"])
def test_bad_data_path_is_refused_before_the_workdir_is_written(tmp_path, data_path, kind):
  import pathlib
  path = {"missing": tmp_path / "nope", "empty": tmp_path / "empty",
          "parent": pathlib.Path(data_path).parent.parent, "file": tmp_path / "f"}[kind]
  if kind == "empty":
    path.mkdir()
  if kind == "file":
    path.write_text("x")
  message = {"missing": "does not exist", "empty": "is empty",
             "parent": re.escape(f"e.g. {data_path}"), "file": "is a file"}[kind]
  cfg = train_tiny.tiny_config(str(path))
  with pytest.raises(trainer.RefusedRun, match=message):
    trainer.train(cfg, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_lora_target_matching_nothing_is_an_error(tmp_path, data_path):
  cfg = train_tiny.tiny_config(data_path, mode="lora")
  cfg.lora.targets = (r"predictor_blocks\.\d+\.attn\.qkvv",)
  with pytest.raises(ValueError, match="matches no Linear layer"):
    trainer.setup(cfg, str(tmp_path), sharding.make_mesh(ml(data=8, fsdp=1, tensor=1)))


@pytest.fixture(scope="module")
def short_run(tmp_path_factory, data_path):
  """A 2-step full run (its workdir is copied by the tests that change it)."""
  workdir = tmp_path_factory.mktemp("short") / "run"
  trainer.train(train_tiny.tiny_config(data_path, steps=2), str(workdir))
  return workdir


@pytest.mark.parametrize("change, fields", [
    ({"model.predictor.depth": 3}, ["model.predictor.depth"]),
    ({"mode": "lora"}, ["mode", "lora.rank"]),
    ({"init.seed": 5}, ["base.encoder", "base.predictor"]),
    ({"model.encoder.embed_dim": 64, "model.encoder.mlp_hidden": 128},
     ["model.encoder.embed_dim", "model.encoder.mlp_hidden"]),
])
def test_resume_with_another_model_is_refused_and_leaves_run_json(
    tmp_path, data_path, short_run, change, fields):
  """Before any work: the message names every differing field and both ways out, and neither
  run.json nor the checkpoints change."""
  import shutil
  workdir = tmp_path / "run"
  shutil.copytree(short_run, workdir)
  before = (workdir / "run.json").read_bytes()
  cfg = train_tiny.tiny_config(data_path, steps=4, **change)
  with pytest.raises(trainer.RefusedRun, match="refusing to resume") as e:
    trainer.train(cfg, str(workdir))
  for field in fields:
    assert field in str(e.value)
  assert "settings the run was started with" in str(e.value) and "--workdir" in str(e.value)
  assert (workdir / "run.json").read_bytes() == before
  assert not (workdir / "checkpoints" / "4").exists()
  # The run still loads as it was.
  assert models.load(str(workdir))[1].cfg.depth == 2


def test_resume_refuses_other_base_weights(tmp_path, data_path, short_run):
  """A different init.converted (other weights) is refused with the same message."""
  import shutil
  workdir = tmp_path / "run"
  shutil.copytree(short_run, workdir)
  other = train_tiny.tiny_config(data_path, steps=2, **{"init.seed": 1})
  trainer.train(other, str(tmp_path / "other"))
  cfg = train_tiny.tiny_config(data_path, steps=4, **{"init.converted": str(
      tmp_path / "other" / "base"), "init.predictor": "converted"})
  with pytest.raises(trainer.RefusedRun, match="refusing to resume") as e:
    trainer.train(cfg, str(workdir))
  assert "base.encoder" in str(e.value)


def test_finished_run_says_so(data_path, short_run, capsys):
  trainer.train(train_tiny.tiny_config(data_path, steps=2), str(short_run))
  out = capsys.readouterr().out
  assert "is finished: step 2/2" in out and "parameter audit" not in out


def test_resume_on_another_mesh_continues_the_run(tmp_path, data_path):
  """Trained on 8 devices (data parallel), resumed on a (data 2, fsdp 4) mesh: the resumed steps
  equal the uninterrupted run's to float32 round-off, and metrics keep one row per step."""
  import shutil
  trainer.train(train_tiny.tiny_config(data_path, steps=4), str(tmp_path / "straight"))
  # A copy stopped after step 2, as a preemption would leave it.
  workdir = tmp_path / "moved"
  shutil.copytree(tmp_path / "straight", workdir)
  shutil.rmtree(workdir / "checkpoints" / "4")
  shutil.rmtree(workdir / "checkpoints" / "3", ignore_errors=True)
  resumed = train_tiny.tiny_config(data_path, steps=4, **{"mesh.data": 2, "mesh.fsdp": 4})
  trainer.train(resumed, str(workdir))
  ref = {r["step"]: r["loss"] for r in metrics_lib.read_jsonl(str(tmp_path / "straight"))}
  rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == [1, 2, 3, 4]
  np.testing.assert_allclose([r["loss"] for r in rows], [ref[s] for s in (1, 2, 3, 4)],
                             rtol=1e-5)


def test_skip_nonfinite_counts_and_keeps_params_finite(tmp_path, data_path):
  cfg = train_tiny.tiny_config(data_path, steps=3, skip_nonfinite=True)
  cfg.optim.update(lr=1e30, start_lr=1e30, final_lr=1e30)
  last = trainer.train(cfg, str(tmp_path / "run"))
  assert last["skipped_nonfinite"] >= 1
  enc, pred = models.load(str(tmp_path / "run"))
  _, trained, _, _ = model_lib.split(model_lib.WorldModel(enc, pred), "full")
  assert all(np.isfinite(v.get_value()).all() for _, v in nnx.to_flat_state(trained))


def test_periodic_eval_writes_held_out_metrics(tmp_path, data_path):
  cfg = train_tiny.tiny_config(data_path, steps=2)
  cfg.data.val_fraction = 0.5
  cfg.eval.update(every=2, batch_size=2, max_batches=1, rollout_horizon=2, grid_points=3,
                  max_pairs_per_batch=1)
  trainer.train(cfg, str(tmp_path / "run"))
  rows = metrics_lib.read_jsonl(str(tmp_path / "run"))
  evals = [r for r in rows if any(k.startswith("eval/") for k in r)]
  assert evals and evals[-1]["step"] == 2
  assert all(np.isfinite(v) for k, v in evals[-1].items() if k.startswith("eval/"))
