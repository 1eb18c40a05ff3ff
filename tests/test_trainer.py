"""Trainer invariants: sharded == single-device step, LoRA freezes the base exactly, the audit
counts what the mode trains, and bad configs fail before anything compiles."""
import jax
import numpy as np
import pytest
from flax import nnx

import train_tiny
from vjepa_jax.train import checkpoint as ckpt_lib
from vjepa_jax.train import model as model_lib
from vjepa_jax.train import sharding
from vjepa_jax.train import trainer


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
  return train_tiny.make_dataset(tmp_path_factory.mktemp("synthetic"))


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


def ml(**kw):
  import ml_collections
  return ml_collections.ConfigDict(kw)


def test_fsdp_really_shards_weights(tmp_path, data_path):
  cfg = train_tiny.tiny_config(data_path)
  st = trainer.setup(cfg, str(tmp_path), sharding.make_mesh(ml(data=2, fsdp=4, tensor=1)))
  specs = [v.get_value().sharding.spec for _, v in nnx.to_flat_state(st.frozen)]
  assert any("fsdp" in str(s) for s in specs)


def test_lora_step0_equals_base_and_base_stays_bit_identical(tmp_path, data_path):
  cfg = train_tiny.tiny_config(data_path, mode="lora", num_steps=3)
  mesh = sharding.make_mesh(ml(data=8, fsdp=1, tensor=1))
  full_loss, _ = _run_steps(train_tiny.tiny_config(data_path), tmp_path / "a", mesh, n=1)
  lora_loss, _ = _run_steps(cfg, tmp_path / "a", mesh, n=1)
  np.testing.assert_allclose(lora_loss[0], full_loss[0], rtol=1e-6)

  trainer.train(cfg, str(tmp_path / "run"))
  enc, pred = ckpt_lib.load_models(str(tmp_path / "run"))
  base = trainer.pretrained.load_converted(str(tmp_path / "run" / "base"))
  model = model_lib.WorldModel(enc, pred)
  _, trained, frozen, _ = model_lib.split(model, "lora")
  base_flat = {("encoder",) + k: v for k, v in trainer.pretrained.flat_params(
      base["encoder"]).items()}
  base_flat.update({("predictor",) + k: v for k, v in trainer.pretrained.flat_params(
      base["predictor"]).items()})
  frozen_flat = {tuple(p): v.get_value() for p, v in nnx.to_flat_state(frozen)}
  assert set(frozen_flat) == set(base_flat)
  for k, v in frozen_flat.items():
    np.testing.assert_array_equal(v, base_flat[k], err_msg=str(k))
  b = [v.get_value() for p, v in nnx.to_flat_state(trained) if p[-1] == "lora_b"]
  assert b and any(np.abs(x).max() > 0 for x in b), "adapters did not train"


def test_audit_counts_match_mode(tmp_path, data_path):
  cfg = train_tiny.tiny_config(data_path)
  base = trainer.pretrained.load_converted(trainer._base_weights(cfg, str(tmp_path)))
  pred_params = sum(int(np.prod(v.shape)) for v in
                    trainer.pretrained.flat_params(base["predictor"]).values())
  enc_params = sum(int(np.prod(v.shape)) for v in
                   trainer.pretrained.flat_params(base["encoder"]).values())
  model = model_lib.WorldModel(base["encoder"], base["predictor"])
  rows = model_lib.audit(model, "full")
  assert rows["predictor"]["trainable"] == pred_params and rows["predictor"]["frozen"] == 0
  assert rows["encoder"]["trainable"] == 0 and rows["encoder"]["frozen"] == enc_params
  adapted = model_lib.attach_adapters(model, "lora_encoder", cfg.lora)
  rows = model_lib.audit(model, "lora_encoder")
  lins = {**{"predictor." + k: v for k, v in
             model_lib.lora_lib.linear_layers(model.predictor).items()},
          **{"encoder." + k: v for k, v in model_lib.lora_lib.linear_layers(model.encoder).items()}}
  expected = sum(cfg.lora.rank * (lins[p].in_features + lins[p].out_features) for p in adapted)
  assert rows["predictor.lora"]["trainable"] + rows["encoder.lora"]["trainable"] == expected
  assert rows["predictor"]["trainable"] == 0 and rows["predictor"]["frozen"] == pred_params
  assert rows["encoder"]["frozen_bytes"] == 4 * enc_params


@pytest.mark.parametrize("override, message", [
    (dict(batch_size=6), "data-parallel size"),
    (dict(mode="half"), "mode must be one of"),
    (dict(**{"loss.auto_steps": 4}), "auto_steps"),
    (dict(**{"data.image_size": 48}), "grid it was built for"),
])
def test_invalid_configs_fail_before_compiling(data_path, override, message):
  cfg = train_tiny.tiny_config(data_path, **override)
  with pytest.raises(ValueError, match=message):
    trainer.validate(cfg, num_devices=8, process_count=1)


def test_lora_target_matching_nothing_is_an_error(tmp_path, data_path):
  cfg = train_tiny.tiny_config(data_path, mode="lora")
  cfg.lora.targets = (r"predictor_blocks\.\d+\.attn\.qkvv",)
  with pytest.raises(ValueError, match="matches no Linear layer"):
    trainer.setup(cfg, str(tmp_path), sharding.make_mesh(ml(data=8, fsdp=1, tensor=1)))


def test_resume_refuses_other_base_weights(tmp_path, data_path):
  """A checkpoint records the sha256 of its base weights; resuming on other weights fails."""
  cfg = train_tiny.tiny_config(data_path, num_steps=2)
  trainer.train(cfg, str(tmp_path / "run"))
  other = train_tiny.tiny_config(data_path, num_steps=2)
  other.init.seed = 1
  trainer.train(other, str(tmp_path / "other"))
  cfg.init.converted = str(tmp_path / "other" / "base")
  cfg.num_steps = 4
  with pytest.raises(ValueError, match="refusing to resume"):
    trainer.train(cfg, str(tmp_path / "run"))


def test_skip_nonfinite_counts_and_keeps_params_finite(tmp_path, data_path):
  cfg = train_tiny.tiny_config(data_path, num_steps=3, skip_nonfinite=True)
  cfg.optim.update(lr=1e30, start_lr=1e30)
  last = trainer.train(cfg, str(tmp_path / "run"))
  assert last["skipped_nonfinite"] >= 1
  enc, pred = ckpt_lib.load_models(str(tmp_path / "run"))
  _, trained, _, _ = model_lib.split(model_lib.WorldModel(enc, pred), "full")
  assert all(np.isfinite(v.get_value()).all() for _, v in nnx.to_flat_state(trained))


def test_periodic_eval_writes_held_out_metrics(tmp_path, data_path):
  cfg = train_tiny.tiny_config(data_path, num_steps=2)
  cfg.data.val_fraction = 0.5
  cfg.eval.update(every=2, batch_size=2, max_batches=1, rollout_horizon=2, grid_points=3,
                  max_pairs_per_batch=1, landscapes=0)
  trainer.train(cfg, str(tmp_path / "run"))
  rows = trainer.metrics_lib.read_jsonl(str(tmp_path / "run"))
  evals = [r for r in rows if any(k.startswith("eval/") for k in r)]
  assert evals and evals[-1]["step"] == 2
  assert all(np.isfinite(v) for k, v in evals[-1].items() if k.startswith("eval/"))
