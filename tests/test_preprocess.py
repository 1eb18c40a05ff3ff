"""One preprocessing for training, evaluation and planning: the planner sees exactly what training
fed the model, the crops are the official ones, and bad inputs are refused."""
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from vjepa_jax import preprocess
from vjepa_jax.data import transforms
from vjepa_jax.planning import Planner
from vjepa_jax.planning import default_config
from vjepa_jax.planning import __main__ as cli


def _camera_frame(h=180, w=320, seed=0) -> np.ndarray:
  """A smooth RGB frame with a few edges (JPEG-friendly, far from constant)."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:h, :w]
  img = np.stack([128 + 100 * np.sin(xx / 17.0 + c) * np.cos(yy / 11.0 - c) for c in range(3)],
                 -1)
  img[h // 3:h // 2, w // 4:w // 3] = rng.integers(0, 256, 3)
  return np.clip(img, 0, 255).astype(np.uint8)


def test_planner_input_equals_training_input_for_the_same_frame():
  """A raw 16:9 camera frame through the planner == the same frame through the training path
  (tf.data decodes and cuts the "ac" window on the host, the train step resizes and normalises
  on the device), down to the encoder tokens the planner plans with."""
  frame = _camera_frame()
  jpeg = tf.io.encode_jpeg(frame, quality=95)
  decoded = tf.io.decode_jpeg(jpeg, channels=3).numpy()
  host_clip = transforms.preprocess_clip(tf.stack([jpeg]), None, "ac").numpy()  # [1, 180, 243, 3]
  assert host_clip.shape[1:3] == (180, 243)
  size = 32
  training = preprocess.model_input(host_clip, size, "ac")
  planning = preprocess.model_input(decoded[None], size, "ac")
  np.testing.assert_allclose(np.asarray(planning), np.asarray(training), atol=1e-6)

  encoder, predictor = cli.random_tiny_models(seed=0, img_size=size)
  planner = Planner(encoder, predictor, default_config())
  from vjepa_jax.models import world_model
  want = world_model.encode_latents(encoder, jnp.asarray(host_clip)[None], size)[0]
  np.testing.assert_allclose(np.asarray(planner.encode(decoded)), np.asarray(want), atol=1e-5)


def test_square_crop_matches_torch_bilinear_without_antialias():
  """The official notebook's preprocessing: centre square crop, torch `interpolate(bilinear,
  align_corners=False)`, ImageNet normalisation (x - 255 mean) / (255 std)."""
  torch = pytest.importorskip("torch")
  frame = np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8)
  got = np.asarray(preprocess.model_input(frame, 32, "square"))
  crop = torch.tensor(frame[:, 16:64], dtype=torch.float32).permute(2, 0, 1)[None]
  ref = torch.nn.functional.interpolate(crop, size=(32, 32), mode="bilinear",
                                        align_corners=False, antialias=False)[0].permute(1, 2, 0)
  mean = torch.tensor([0.485, 0.456, 0.406]) * 255
  std = torch.tensor([0.229, 0.224, 0.225]) * 255
  np.testing.assert_allclose(got, ((ref - mean) / std).numpy(), atol=1e-4)


def _official_window(h: int, w: int):
  """The official random-resized-crop's centred fallback, as its code states it."""
  ratio = w / h
  crop_h = round(w / 0.75) if ratio < 0.75 else h
  crop_w = round(h * 1.35) if ratio > 1.35 else w
  return (h - crop_h) // 2, (w - crop_w) // 2, crop_h, crop_w


def test_ac_window_is_the_official_one_in_numpy_and_in_the_graph():
  """The "ac" window, evaluated with NumPy (device path, LeRobot reader) and with TF ops (the
  tf.data pipeline), equals the official centred fallback for wide, tall and in-between frames,
  including ratios that round at the 1.35 / 0.75 bounds."""
  sizes = [(h, w) for h in (1, 2, 3, 7, 90, 179, 180, 181, 720) for w in
           (1, 2, 5, 67, 120, 121, 160, 242, 243, 244, 320, 1280)]
  for h, w in sizes:
    want = _official_window(h, w)
    assert preprocess.crop_window(h, w, "ac") == want, (h, w)
    graph = tuple(int(v) for v in transforms.central_window(tf.constant(h), tf.constant(w)))
    assert graph == want, (h, w)


def test_training_crop_and_square_crop_differ_on_wide_frames():
  """On a 16:9 frame the "ac" window (1.35:1, squashed) and the square crop cut different
  pixels, which is why the planner defaults to the training crop."""
  assert preprocess.crop_window(180, 320, "ac") == (0, 38, 180, 243)
  assert preprocess.crop_window(180, 320, "square") == (0, 70, 180, 180)
  frame = _camera_frame()
  a = np.asarray(preprocess.model_input(frame, 32, "ac"))
  s = np.asarray(preprocess.model_input(frame, 32, "square"))
  assert np.abs(a - s).mean() > 0.05


def test_bad_inputs_are_refused():
  with pytest.raises(ValueError, match="crop must be one of"):
    preprocess.model_input(np.zeros((8, 8, 3), np.uint8), 8, "hub")
  with pytest.raises(ValueError, match=r"\[\.\.\., H, W, 3\]"):
    preprocess.model_input(np.zeros((8, 8), np.uint8), 8)
  cfg = default_config()
  cfg.crop = "centre"
  encoder, predictor = cli.random_tiny_models(seed=0)
  with pytest.raises(ValueError, match="crop must be one of"):
    Planner(encoder, predictor, cfg)
