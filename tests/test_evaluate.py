"""Offline evaluation: metrics on inputs whose answer is known, outputs, and the CLI.

- The axis calibration recovers a known rotation (and its residual equals the injected noise).
- The energy-argmin search returns exactly the grid action that produced the goal latent.
- Teacher-forcing and rollout errors equal direct computations, and the horizon-1 rollout error
  equals the teacher-forcing error of the first transition.
- The report, TensorBoard scalars and figures are written; the CLI runs on a DROID-format
  fixture with a converted checkpoint.
"""
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vjepa_jax import evaluate
from vjepa_jax.models import layers
from vjepa_jax.models import pretrained
from vjepa_jax.planning import __main__ as planning_cli
from vjepa_jax.planning import poses
from vjepa_jax.models import world_model

DROID_DIR = pathlib.Path(__file__).parent / "fixtures" / "droid_tiny" / "droid" / "1.0.0"


@pytest.fixture(scope="module")
def models():
  return planning_cli.random_tiny_models(seed=0, img_size=32)


def _batch(b=2, t=3, size=32, seed=0):
  rng = np.random.default_rng(seed)
  states = np.cumsum(rng.normal(size=(b, t, 7)) * 0.03, axis=1).astype(np.float32)
  states[..., 3] += 3.0
  states[..., 6] = 0.5
  return {"video": rng.integers(0, 256, (b, t, size, size, 3), dtype=np.uint8),
          "states": states, "actions": np.asarray(poses.poses_to_diffs(states))}


def test_calibration_recovers_a_known_rotation():
  rng = np.random.default_rng(0)
  rot = np.asarray(poses.euler_xyz_to_matrix(jnp.array([0.3, -0.5, 1.2])), np.float64)
  inferred = rng.normal(size=(40, 3)) * 0.05
  noise = rng.normal(size=(40, 3)) * 1e-4
  true = inferred @ rot.T + noise
  cal = evaluate.calibrate_axes(inferred, true)
  np.testing.assert_allclose(cal["rotation"], rot, atol=2e-3)
  angle = np.degrees(np.arccos((np.trace(rot) - 1) / 2))
  assert cal["angle_deg"] == pytest.approx(angle, abs=0.2)
  expected_cm = np.sqrt(np.mean(np.sum(noise ** 2, -1))) * 100
  assert cal["residual_cm"] <= expected_cm * 1.01
  assert cal["residual_cm_uncalibrated"] > 100 * cal["residual_cm"]
  with pytest.raises(ValueError, match="at least 2"):
    evaluate.calibrate_axes(inferred[:1], true[:1])


def test_grid_search_returns_the_action_that_produced_the_goal(models):
  """Goal = the model's own prediction under a grid action: the argmin is that action."""
  predictor = models[1]
  graphdef, params = nnx.split(predictor)
  grid = evaluate.xyz_grid(5, 0.075)
  rng = np.random.default_rng(1)
  hw, d = predictor.tokens_per_frame, predictor.cfg.embed_dim
  context = layers.layer_norm_no_affine(jnp.asarray(rng.normal(size=(2, hw, d)), jnp.float32))
  pose = jnp.asarray(rng.normal(size=(2, 7)) * 0.1, jnp.float32)
  picks = [17, 101]

  @jax.jit
  def predict(params, context, pose, actions):
    model = nnx.merge(graphdef, params)
    goals = []
    for j in range(len(picks)):
      ctx = world_model.prepare_context(model, context[j:j + 1], pose[j][None, None])
      goals.append(world_model.rollout(model, ctx, actions[j][None, None],
                                       poses.integrate_pose)[0])
    return jnp.stack(goals)

  goals = predict(params, context, pose, jnp.asarray(grid[picks]))
  found, energy = evaluate._grid_search(graphdef, params, context, pose, goals,
                                        jnp.asarray(grid), 25)
  np.testing.assert_allclose(found, grid[picks], atol=0)
  np.testing.assert_allclose(energy, 0.0, atol=1e-5)


def test_prediction_errors_match_direct_computation(models):
  encoder, predictor = models
  batch = _batch()
  enc_def, enc_params = nnx.split(encoder)
  pred_def, pred_params = nnx.split(predictor)
  z = evaluate._encode(enc_def, enc_params, 32, "ac", jnp.asarray(batch["video"]))
  actions, states = jnp.asarray(batch["actions"]), jnp.asarray(batch["states"])
  tf, ro = evaluate._prediction_errors(pred_def, pred_params, z, actions, states, 2)
  b, t, hw, d = z.shape

  @jax.jit
  def direct(params, z, actions, states):
    model = nnx.merge(pred_def, params)
    norm = layers.layer_norm_no_affine
    pred = norm(model(z[:, :-1].reshape(b, -1, d), actions, states[:, :-1]))
    z1 = norm(model(z[:, 0], actions[:, :1], states[:, :1]))
    z2 = norm(model(jnp.concatenate([z[:, 0], z1], 1), actions, states[:, :2])[:, hw:])
    return pred.reshape(b, t - 1, hw, d), z2

  pred, z2 = direct(pred_params, z, actions, states)
  err = np.abs(np.asarray(pred) - np.asarray(z[:, 1:])).mean(axis=(2, 3))
  np.testing.assert_allclose(tf, err.mean(1), atol=1e-6)
  np.testing.assert_allclose(ro[:, 0], err[:, 0], atol=1e-5)
  np.testing.assert_allclose(ro[:, 1], np.abs(z2 - z[:, 2]).mean(axis=(1, 2)), atol=1e-5)


def test_run_and_outputs(models, tmp_path):
  """`run` yields every documented metric (finite); `write_outputs` writes all artefacts,
  including a baseline comparison."""
  encoder, predictor = models
  cfg = evaluate.default_config()
  # Same settings as the CLI test below, which then reuses these executables.
  cfg.update(dict(grid_points=3, max_pairs_per_batch=3))
  batches = [_batch(seed=0), _batch(seed=1)]
  results = evaluate.compute(encoder, predictor, batches, cfg)
  s = results.scalars
  for name in ("teacher_forcing_l1", "rollout_l1/h1", "rollout_l1/h2", "action_abs_err/x",
               "action_cosine", "calibration/residual_cm", "calibration/angle_deg"):
    assert np.isfinite(s[f"eval/{name}"]), name
  assert "eval/rollout_l1/h3" not in s  # capped at T-1 = 2
  assert s["eval/num_clips"] == 4 and s["eval/num_pairs"] == 6
  assert results.inferred.shape == (6, 7)
  assert len(results.landscapes) == 2 and results.landscapes[0]["energy"].shape == (15, 15)
  assert evaluate.run(encoder, predictor, batches[:1], cfg)["eval/num_clips"] == 2
  evaluate.write_outputs(results, str(tmp_path), step=7, baseline=results)
  report = json.loads((tmp_path / "report.json").read_text())
  assert report["step"] == 7 and report["scalars"] == pytest.approx(s)
  assert report["baseline_scalars"] == pytest.approx(s)
  assert all(v == 0 for v in report["minus_baseline"].values())
  assert (tmp_path / "rollout_l1.png").stat().st_size > 0
  assert (tmp_path / "energy_landscape_0.png").stat().st_size > 0
  assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_landscapes_show_pairs_with_motion(models, tmp_path):
  """Idle first steps (zero action, as at the start of every demo episode) are not chosen for
  the energy-landscape figures; the chosen pairs, those with the most motion, are named in the
  report and give different figures."""
  encoder, predictor = models
  batch = _batch(b=2, t=3, seed=3)
  batch["states"][:, 1] = batch["states"][:, 0]  # step 0 -> 1 is idle in both clips
  batch["actions"] = np.asarray(poses.poses_to_diffs(batch["states"]))
  batch["episode_id"] = np.array([b"ep-a", b"ep-b"])
  batch["step_index"] = np.array([[0, 4, 8], [10, 14, 18]], np.int32)
  cfg = evaluate.default_config()
  cfg.update(dict(grid_points=3, max_pairs_per_batch=0))
  results = evaluate.compute(encoder, predictor, [batch], cfg)
  pairs = [land["pair"] for land in results.landscapes]
  assert len(pairs) == 2 and all(p["step"] == 1 and p["motion_m"] > 0 for p in pairs)
  assert {p["episode_id"] for p in pairs} == {"ep-a", "ep-b"}
  assert {p["step_index"] for p in pairs} == {4, 14}
  evaluate.write_outputs(results, str(tmp_path))
  report = json.loads((tmp_path / "report.json").read_text())
  assert report["landscapes"] == pairs
  figures = [(tmp_path / f"energy_landscape_{i}.png").read_bytes() for i in range(2)]
  assert figures[0] != figures[1]


def test_bad_batches_are_errors(models):
  bad = _batch()
  bad["actions"] = bad["actions"][:, :1]
  with pytest.raises(ValueError, match="actions"):
    evaluate.run(*models, [bad])
  with pytest.raises(ValueError, match="empty"):
    evaluate.run(*models, [])


def test_cli_on_droid_fixture(models, tmp_path):
  """Converted checkpoint directory + DROID-format fixture -> report and figures."""
  conv = tmp_path / "converted"
  pretrained.save_converted(str(conv), {kind: (m.cfg, pretrained.flat_params(m))
                                        for kind, m in zip(("encoder", "predictor"), models)},
                            source={"params_sha256": "test"})
  out = tmp_path / "eval"
  assert evaluate.main(["--data", str(DROID_DIR), "--converted", str(conv), "--out", str(out),
                        "--split", "all", "--frames", "3", "--batch-size", "2",
                        "--max-batches", "1", "--grid-points", "3", "--max-pairs", "3"]) == 0
  report = json.loads((out / "report.json").read_text())
  assert report["scalars"]["eval/num_clips"] == 2
  assert np.isfinite(report["scalars"]["eval/teacher_forcing_l1"])
  assert (out / "energy_landscape_0.png").exists()
