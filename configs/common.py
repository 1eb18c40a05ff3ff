"""Defaults shared by every training config (plain functions, no global state).

Each setting lives in one place:
- numerics (`model.dtype`, `model.attention_impl`, `model.remat`, `model.rope_mode`) apply to
  both models;
- `model.encoder` / `model.predictor` hold only architecture fields. The predictor's input width,
  patch and tubelet are the encoder's; `data.image_size` is `model.predictor.img_size` (one
  value: setting either sets both);
- `optim.total_steps` is the length of the run and of its schedules.
"""
import ml_collections

from vjepa_jax import data
from vjepa_jax.models import configs as model_configs
from vjepa_jax.models import lora
from vjepa_jax.train import model as model_lib
from vjepa_jax.train import optim


def _architecture(cfg, fields) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(model_lib.architecture(cfg, fields))


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 239
  c.mode = "full"  # full | lora | lora_encoder
  c.batch_size = 8  # global clips per step
  c.log_every = 10
  c.skip_nonfinite = False
  c.peak_flops_per_device = 0.0  # 0: look up the accelerator; used for MFU only
  c.matmul_precision = "default"
  # CPU-only single-process runs: XLA CPU devices (0 = automatic: one per core, data parallel;
  # see vjepa_jax.distributed.cpu_devices_for). Ignored on accelerators.
  c.cpu_devices = 0

  c.model = ml_collections.ConfigDict()
  c.model.dtype = "bfloat16"  # compute dtype; parameters stay float32
  c.model.attention_impl = "xla"
  c.model.remat = False
  c.model.rope_mode = "official"
  c.model.encoder = _architecture(model_configs.encoder_preset("vit_giant"),
                                  model_lib.ENCODER_FIELDS)
  c.model.predictor = _architecture(model_configs.predictor_preset("vit_ac_predictor_giant"),
                                    model_lib.PREDICTOR_FIELDS)

  # Where the weights come from. The encoder: `init.converted` (the output of
  # weights_conversion.convert), random when empty. The predictor: "converted" (the one in
  # `init.converted`, a V-JEPA 2-AC checkpoint) or "random" (built from `model.predictor`).
  # Converted models must have the architecture `model.*` describes.
  c.init = ml_collections.ConfigDict()
  c.init.converted = ""
  c.init.predictor = "converted"
  c.init.seed = 0

  c.lora = ml_collections.ConfigDict()
  c.lora.rank = 16
  c.lora.alpha = 32.0
  c.lora.dropout = 0.0
  # Regular expressions, each matching whole layer paths (predictor_blocks.3.attn.qkv).
  c.lora.targets = lora.DEFAULT_PREDICTOR_TARGETS
  c.lora.encoder_targets = lora.DEFAULT_ENCODER_TARGETS
  c.lora.seed = 0

  c.loss = ml_collections.ConfigDict()
  c.loss.auto_steps = 2
  c.loss.loss_exp = 1.0
  c.loss.normalize_reps = True

  c.optim = optim.default_config()
  c.data = data.default_config()
  c.data.path = "gs://gresearch/robotics/droid/1.0.1"
  c.data.image_size = c.model.predictor.get_ref("img_size")
  # Frames leave the host at their crop size; the train step resizes them on the device,
  # which keeps the host pipeline at its JPEG-decode rate.
  c.data.resize_on_host = False

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1
  c.mesh.fsdp = 1
  c.mesh.tensor = 1

  # Periodic held-out evaluation (data.split="val" episodes; single-process runs): these fields
  # replace those of vjepa_jax.evaluate.default_config(), kept small so that it stays cheap.
  c.eval = ml_collections.ConfigDict()
  c.eval.every = 0  # steps between evaluations; 0 = off
  c.eval.batch_size = 4
  c.eval.max_batches = 4
  c.eval.rollout_horizon = 3
  c.eval.search = "grid"
  c.eval.grid_points = 9
  c.eval.max_pairs_per_batch = 8
  c.eval.landscapes = 0

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every = 500
  c.checkpoint.keep = 3
  c.checkpoint.async_save = True

  c.wandb = ml_collections.ConfigDict()
  c.wandb.enabled = False
  c.wandb.project = "vjepa-jax"
  return c
