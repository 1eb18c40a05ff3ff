"""LoRA fine-tune of the released V-JEPA 2-AC predictor on your own RLDS robot data.

  python -m weights_conversion.convert --checkpoint vjepa2-ac-vitg.pt --output CONVERTED
  python -m vjepa_jax.main --config configs/vjepa2_ac_lora.py --workdir WORKDIR \
      --config.init.converted=CONVERTED --config.data.path=/path/to/my_dataset/1.0.0

`data.path` is the TFDS version directory of a DROID-format RLDS dataset (local or gs://);
`init.converted` the converted AC checkpoint. Rank-16 adapters (alpha 32) on qkv, proj, fc1 and
fc2 of every predictor block train; the encoder and the predictor's base weights stay frozen.
Export the merged predictor with `python -m weights_conversion.export`.
"""
from configs import common


def get_config(arg=None):
  del arg
  c = common.base_config()
  c.mode = "lora"
  c.batch_size = 32
  c.model.dtype = "bfloat16"
  c.model.remat = True
  c.init.converted = ""  # required: --config.init.converted=<weights_conversion.convert output>
  c.init.predictor = "converted"
  c.lora.rank = 16
  c.lora.alpha = 32.0
  c.optim.update(lr=1e-4, start_lr=1e-5, final_lr=0.0, warmup_steps=200, anneal_steps=1000,
                 total_steps=5000, weight_decay=0.0, final_weight_decay=0.0)
  c.data.path = ""  # required: --config.data.path=<TFDS version directory of your RLDS data>
  c.mesh.fsdp = -1
  c.mesh.data = 1
  return c
