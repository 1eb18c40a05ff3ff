"""The official V-JEPA 2-AC recipe (droid-256px-8f): a new AC predictor trained from scratch on
the frozen pre-trained ViT-g/16 encoder.

  python -m weights_conversion.convert --checkpoint vitg.pt --output gs://BUCKET/vitg
  python -m vjepa_jax.main --config configs/vjepa2_ac_droid.py --workdir gs://BUCKET/run \
      --config.init.converted=gs://BUCKET/vitg

`init.converted` names the converted pre-training checkpoint `vitg.pt` (its `target_encoder`, as
the official `context_encoder_key`); the predictor starts from random weights
(`init.predictor="random"`, the official yaml's `load_predictor: false`). Batch 256 clips of 8
frames at 256 px from DROID 1.0.1, bf16 compute, per-block remat, AdamW with the official WSD
schedule over 315 x 300 steps; parameters and optimizer state are sharded over every device
(FSDP). To continue from the released AC predictor instead, use configs/vjepa2_ac_finetune.py.
"""
from configs import common


def get_config(arg=None):
  del arg
  c = common.base_config()
  c.mode = "full"
  c.batch_size = 256
  c.model.dtype = "bfloat16"
  c.model.remat = True
  c.init.converted = ""  # required: --config.init.converted=<converted vitg.pt>
  c.init.predictor = "random"
  c.mesh.fsdp = -1
  c.mesh.data = 1
  c.log_every = 10
  return c
