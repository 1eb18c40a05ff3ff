"""The official V-JEPA 2-AC recipe at full scale: ViT-g/16 encoder (frozen) + AC predictor on DROID.

  python -m vjepa_jax.main --config configs/vjepa2_ac_droid.py --workdir gs://BUCKET/run \
      --config.init.converted=gs://BUCKET/vjepa2-ac-vitg

`init.converted` must name the output of `python -m weights_conversion.convert` run on
`vjepa2-ac-vitg.pt` (or on `vitg.pt`, whose predictor is then trained from the converted encoder's
random-init AC predictor). Left empty, the trainer starts from random weights, which is only
useful for throughput tests. Batch 256 clips of 8 frames at 256 px, bf16 compute, per-block
remat, the whole predictor trains with the official AdamW schedule; parameters and optimizer state
are sharded over every device (FSDP).
"""
from configs import common

DROID_PATH = "gs://gresearch/robotics/droid/1.0.0"


def get_config(arg=None):
  del arg
  c = common.base_config()
  c.mode = "full"
  c.batch_size = 256
  c.model.dtype = "bfloat16"
  c.model.remat = True
  c.init.converted = ""  # required in practice: --config.init.converted=gs://.../converted
  c.data.path = DROID_PATH
  c.data.image_size = c.model.predictor.img_size
  c.mesh.fsdp = -1
  c.mesh.data = 1
  c.log_every = 10
  return c
