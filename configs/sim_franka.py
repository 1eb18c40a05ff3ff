"""Simulated Franka reach: a demo-sized random-init world model fine-tuned on collected episodes.

  python -m vjepa_jax.sim.collect --task reach --episodes 100 --out sim_workdir/reach_data
  python -m vjepa_jax.main --config configs/sim_franka.py --workdir sim_workdir/run \
      --config.data.path=sim_workdir/reach_data

The model is the demo's (width 96, depth 2, 64 px, patch 16); clips are 4 consecutive control
steps (`frame_step=1`: one clip step is one planner step of the simulator). The encoder stays
frozen at its random initialisation (mode `full` trains the predictor only).
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
  c.batch_size = 16
  c.log_every = 50
  c.optim.update(lr=1e-3, start_lr=1e-4, warmup_steps=100, anneal_steps=300, total_steps=2000)
  c.data.path = "sim_workdir/reach_data"
  c.data.camera = "exterior_image_1_left"
  c.data.frames_per_clip = 4
  c.data.frame_step = 1
  c.data.clips_per_visit = 4
  c.data.shuffle_buffer = 2048
  c.data.episode_shuffle_buffer = 32
  c.data.deterministic = True
  c.data.val_fraction = 0.0
  c.checkpoint.every = 500
  return c
