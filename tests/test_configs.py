"""The shipped full-scale training configs: they load without importing the planner, carry the
recipe they document, pass the trainer's validation, and describe exactly the official ViT-g +
AC predictor architecture (parameter counts from abstract shapes, no memory allocated)."""
import importlib
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from vjepa_jax.models import configs as model_configs
from vjepa_jax.models import pretrained
from vjepa_jax.train import model as model_lib
from vjepa_jax.train import trainer

CONFIGS = ("vjepa2_ac_droid", "vjepa2_ac_finetune", "vjepa2_ac_lora")
ROOT = pathlib.Path(__file__).parents[1]


def _get(name):
  return importlib.import_module(f"configs.{name}").get_config()


def _count(kind, cfg):
  shapes = pretrained.param_shapes(kind, cfg)
  return sum(int(np.prod(s)) for s in shapes.values())


@pytest.mark.parametrize("name", CONFIGS)
def test_architecture_is_the_official_one(name):
  c = _get(name)
  enc, pred = model_lib.model_configs(c.model)
  assert _count("encoder", enc) == model_configs.OFFICIAL_PARAM_COUNTS["vit_giant"]
  assert _count("predictor", pred) == model_configs.OFFICIAL_PARAM_COUNTS["vit_ac_predictor_giant"]
  assert c.data.image_size == pred.img_size == 256
  assert (enc.dtype, enc.remat) == (pred.dtype, pred.remat) == (c.model.dtype, c.model.remat)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_validates_on_a_pod_slice(name):
  c = _get(name)
  c.init.converted = "gs://bucket/converted"  # required on the command line
  trainer.validate(c, num_devices=32, process_count=4)


def test_droid_recipe_trains_the_predictor_from_scratch():
  c = _get("vjepa2_ac_droid")
  assert c.mode == "full" and c.init.predictor == "random"
  assert c.batch_size == 256
  assert c.model.dtype == "bfloat16" and c.model.remat
  assert c.data.path == "gs://gresearch/robotics/droid/1.0.1"
  assert c.data.frames_per_clip == 8
  assert (c.mesh.fsdp, c.mesh.data) == (-1, 1)
  assert (c.checkpoint.every, c.checkpoint.keep) == (500, 3)
  assert c.optim.lr == 4.25e-4 and c.optim.total_steps == 315 * 300
  assert c.init.converted == ""


def test_finetune_recipe_continues_from_the_released_predictor():
  c = _get("vjepa2_ac_finetune")
  assert c.mode == "full" and c.init.predictor == "converted"
  assert c.optim.lr < _get("vjepa2_ac_droid").optim.lr


def test_lora_recipe():
  c = _get("vjepa2_ac_lora")
  assert c.mode == "lora" and c.init.predictor == "converted"
  assert (c.lora.rank, c.lora.alpha) == (16, 32.0)
  assert c.optim.lr == 1e-4 and 0 < c.optim.warmup_steps < c.optim.total_steps // 10
  assert c.batch_size == 32
  assert c.data.path == "" and c.init.converted == ""


def test_loading_a_config_does_not_import_the_planner_or_the_converter():
  """Nor does the trainer: `vjepa_jax.train` sits below the converter and beside planning."""
  code = ("import sys, configs.vjepa2_ac_droid as c, vjepa_jax.train.trainer; c.get_config(); "
          "print(sorted(m for m in sys.modules if m.startswith(('vjepa_jax.planning', "
          "'weights_conversion', 'torch'))))")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip() == "[]"
