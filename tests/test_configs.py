"""The shipped full-scale training configs: they load, carry the recipe they document, pass the
trainer's validation, and describe exactly the official ViT-g + AC predictor architecture
(parameter counts from abstract shapes, no memory allocated)."""
import importlib

import numpy as np
import pytest

from vjepa_jax.models import configs as model_configs
from vjepa_jax.models import pretrained
from vjepa_jax.train import trainer

CONFIGS = ("vjepa2_ac_droid", "vjepa2_ac_lora")


def _get(name):
  return importlib.import_module(f"configs.{name}").get_config()


def _count(kind, cfg_dict):
  ctor = model_configs.EncoderConfig if kind == "encoder" else model_configs.PredictorConfig
  shapes = pretrained.param_shapes(kind, ctor(**cfg_dict.to_dict()))
  return sum(int(np.prod(s)) for s in shapes.values())


@pytest.mark.parametrize("name", CONFIGS)
def test_architecture_is_the_official_one(name):
  c = _get(name)
  assert _count("encoder", c.model.encoder) == model_configs.OFFICIAL_PARAM_COUNTS["vit_giant"]
  assert (_count("predictor", c.model.predictor)
          == model_configs.OFFICIAL_PARAM_COUNTS["vit_ac_predictor_giant"])
  assert c.data.image_size == c.model.predictor.img_size == 256


@pytest.mark.parametrize("name", CONFIGS)
def test_config_validates_on_a_pod_slice(name):
  c = _get(name)
  trainer.validate(c, num_devices=32, process_count=4)


def test_droid_recipe():
  c = _get("vjepa2_ac_droid")
  assert c.mode == "full"
  assert c.batch_size == 256
  assert c.model.dtype == "bfloat16" and c.model.remat
  assert c.data.path == "gs://gresearch/robotics/droid/1.0.0"
  assert c.data.frames_per_clip == 8
  assert (c.mesh.fsdp, c.mesh.data) == (-1, 1)
  assert (c.checkpoint.every, c.checkpoint.keep) == (500, 3)
  assert c.optim.lr == 4.25e-4 and c.optim.total_steps == 315 * 300
  assert c.init.converted == ""


def test_lora_recipe():
  c = _get("vjepa2_ac_lora")
  assert c.mode == "lora"
  assert (c.lora.rank, c.lora.alpha) == (16, 32.0)
  assert c.optim.lr == 1e-4 and 0 < c.optim.warmup_steps < c.optim.total_steps // 10
  assert c.batch_size == 32
  assert c.data.path == "" and c.init.converted == ""
