"""Full fine-tune of the released V-JEPA 2-AC predictor (`vjepa2-ac-vitg.pt`) on DROID-format data.

  python -m weights_conversion.convert --checkpoint vjepa2-ac-vitg.pt --output gs://BUCKET/vitg-ac
  python -m vjepa_jax.main --config configs/vjepa2_ac_finetune.py --workdir gs://BUCKET/run \
      --config.init.converted=gs://BUCKET/vitg-ac --config.data.path=gs://BUCKET/my_rlds/1.0.0

The encoder stays frozen and the whole predictor continues from the released weights with AdamW:
batch 64, a short warmup to 1e-4 (a quarter of the from-scratch peak), 10k steps with the last 2k
annealed to 0, bf16 compute, per-block remat, FSDP. For adapters only, see
configs/vjepa2_ac_lora.py.
"""
from configs import common


def get_config(arg=None):
  del arg
  c = common.base_config()
  c.mode = "full"
  c.batch_size = 64
  c.model.dtype = "bfloat16"
  c.model.remat = True
  c.init.converted = ""  # required: --config.init.converted=<converted vjepa2-ac-vitg.pt>
  c.init.predictor = "converted"
  c.optim.update(lr=1e-4, start_lr=1e-5, final_lr=0.0, warmup_steps=500, anneal_steps=2000,
                 total_steps=10_000)
  c.mesh.fsdp = -1
  c.mesh.data = 1
  return c
