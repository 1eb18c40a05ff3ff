"""Demo: a tiny random-init world model trained on the bundled synthetic DROID-format sample.

  python -m vjepa_jax.main --config configs/demo.py --workdir demo_workdir/run

Finishes in a few minutes on 2 CPU cores; writes checkpoints, metrics.jsonl, TensorBoard logs and
loss.png into the workdir. `make demo` generates the sample under `data.path` first.
"""
from configs import common


def get_config(arg=None):
  del arg
  c = common.base_config()
  c.model.dtype = "float32"
  c.model.encoder.update(embed_dim=96, depth=2, num_heads=4, mlp_hidden=384)
  c.model.predictor.update(predictor_embed_dim=96, depth=2, num_heads=4, mlp_hidden=384,
                           img_size=64)
  c.init.predictor = "random"
  c.batch_size = 8
  c.log_every = 10
  c.optim.update(lr=1e-3, start_lr=1e-4, warmup_steps=30, anneal_steps=60, total_steps=400)
  c.data.path = "demo_workdir/sample/droid/1.0.0"
  c.data.frames_per_clip = 4
  c.data.shuffle_buffer = 256
  c.data.episode_shuffle_buffer = 8
  c.data.deterministic = True
  c.data.val_fraction = 0.0
  c.checkpoint.every = 50
  return c
