"""Times one full V-JEPA 2-AC train step and prints one JSON line.

  python benchmarks/train_step.py --preset bench-cpu [--official-src VJEPA2_DIR]
  python benchmarks/train_step.py --preset vitg-gpu [--converted DIR]

The step is the trainer's own jitted step (per-frame target encoding with the frozen encoder,
teacher-forcing + auto-regressive rollout losses, backward, AdamW update), called directly on
random uint8 video and random actions/states, so no data pipeline is timed. Reported: median
seconds of the timed steps after warm-up, XLA's FLOP count of the compiled step, and (when the
accelerator's peak is known) model FLOPs utilisation.

With `--official-src` (a facebookresearch/vjepa2 checkout; its imports need `timm`) the official
PyTorch train step of the same configuration (`app/vjepa_droid/train.py`: per-frame target
encoding, teacher forcing + rollout, backward, AdamW) is built from the official modules and timed
in the same process, alternating with this step round by round so both see the same machine load.
"""
from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import tempfile
import time

import jax
import numpy as np

from configs import common
from vjepa_jax import distributed
from vjepa_jax.train import metrics as metrics_lib
from vjepa_jax.train import model as model_lib
from vjepa_jax.train import sharding
from vjepa_jax.train import trainer


def bench_cpu_config(cpu_devices: int = 0):
  """ViT-S-like encoder + small predictor at 128 px, 8 frames, batch 4, fp32, on the host CPU
  (data parallel over one XLA device per core, the trainer's CPU default, unless
  `cpu_devices` says otherwise)."""
  c = common.base_config()
  c.mode = "full"
  c.batch_size = 4
  c.model.dtype = "float32"
  c.model.encoder.update(embed_dim=384, depth=12, num_heads=6, mlp_hidden=1536, patch_size=16)
  c.model.predictor.update(predictor_embed_dim=256, depth=6, num_heads=4, mlp_hidden=1024,
                           img_size=128)
  c.data.frames_per_clip = 8
  c.mesh.update(data=-1, fsdp=1, tensor=1)
  c.cpu_devices = cpu_devices
  return c


def vitg_gpu_config(num_devices: int):
  """The full-scale recipe (ViT-g + official AC predictor, 256 px, 8 frames), 8 clips/device."""
  c = common.base_config()
  c.mode = "full"
  c.batch_size = 8 * num_devices
  c.model.dtype = "bfloat16"
  c.model.remat = True
  c.data.frames_per_clip = 8
  c.mesh.update(data=1, fsdp=-1, tensor=1)
  return c


def random_batch(cfg, seed: int = 0) -> dict:
  """video uint8 [B, T, H, W, 3], states float32 [B, T, 7], actions float32 [B, T-1, 7]."""
  rng = np.random.default_rng(seed)
  b, t, s = cfg.batch_size, cfg.data.frames_per_clip, cfg.data.image_size
  a = cfg.model.predictor.action_dim
  return {"video": rng.integers(0, 256, (b, t, s, s, 3), dtype=np.uint8),
          "states": rng.standard_normal((b, t, a)).astype(np.float32),
          "actions": rng.standard_normal((b, t - 1, a)).astype(np.float32)}


def official_step(src: str, cfg):
  """The official train step of `cfg`'s architecture on random data, as a no-argument callable."""
  sys.path.insert(0, src)
  import torch
  import torch.nn.functional as F
  from src.models.ac_predictor import VisionTransformerPredictorAC
  from src.models.vision_transformer import VisionTransformer
  e, p = model_lib.model_configs(cfg.model)
  b, t, s = cfg.batch_size, cfg.data.frames_per_clip, cfg.data.image_size
  encoder = VisionTransformer(
      img_size=(s, s), patch_size=e.patch_size, num_frames=e.tubelet_size,
      tubelet_size=e.tubelet_size, embed_dim=e.embed_dim, depth=e.depth, num_heads=e.num_heads,
      mlp_ratio=e.mlp_hidden / e.embed_dim, qkv_bias=True,
      norm_layer=functools.partial(torch.nn.LayerNorm, eps=e.norm_eps), use_rope=True,
      uniform_power=True)
  predictor = VisionTransformerPredictorAC(
      img_size=(s, s), patch_size=p.patch_size, num_frames=2 * t, tubelet_size=p.tubelet_size,
      embed_dim=p.embed_dim, predictor_embed_dim=p.predictor_embed_dim, depth=p.depth,
      num_heads=p.num_heads, mlp_ratio=p.mlp_hidden / p.predictor_embed_dim, qkv_bias=True,
      norm_layer=functools.partial(torch.nn.LayerNorm, eps=p.norm_eps), use_rope=True,
      is_frame_causal=True)
  for param in encoder.parameters():
    param.requires_grad = False
  optimizer = torch.optim.AdamW(predictor.parameters(), betas=(0.9, 0.999), eps=1e-8)
  hw = (s // p.patch_size) ** 2
  gen = torch.Generator().manual_seed(0)
  clips = torch.rand(b, 3, t, s, s, generator=gen)
  actions = torch.randn(b, t - 1, p.action_dim, generator=gen)
  states = torch.randn(b, t, p.action_dim, generator=gen)
  auto_steps = cfg.loss.auto_steps

  def step() -> float:
    with torch.no_grad():
      c = clips.permute(0, 2, 1, 3, 4).flatten(0, 1).unsqueeze(2)
      c = c.repeat(1, 1, e.tubelet_size, 1, 1)
      h = encoder(c)
      h = F.layer_norm(h.view(b, t, -1, h.size(-1)).flatten(1, 2), (h.size(-1),))

    def predict(z, a, st):
      return F.layer_norm(predictor(z, a, st), (h.size(-1),))

    z_tf = predict(h[:, :-hw], actions, states[:, :-1])
    z = torch.cat([h[:, :hw], z_tf[:, :hw]], dim=1)
    for n in range(1, auto_steps):
      z = torch.cat([z, predict(z, actions[:, :n + 1], states[:, :n + 1])[:, -hw:]], dim=1)
    z_ar = z[:, hw:]
    loss = sum(torch.mean(torch.abs(zz - h[:, hw:zz.size(1) + hw])) for zz in (z_tf, z_ar))
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return float(loss.detach())

  return step


def run(preset: str, warmup: int, steps: int, converted: str = "",
        official_src: str = "", cpu_devices: int = 0) -> dict:
  if preset == "bench-cpu":
    cfg = bench_cpu_config(cpu_devices)
    # Before anything starts the backend: the CPU device count is fixed then.
    distributed.configure_cpu_devices(cfg.batch_size, cfg.mesh, cfg.cpu_devices)
    devices = jax.devices("cpu")
  elif preset == "vitg-gpu":
    cfg, devices = vitg_gpu_config(jax.device_count()), jax.devices()
  else:
    raise ValueError(f"unknown preset {preset!r}; known: bench-cpu, vitg-gpu")
  cfg.init.converted = converted
  mesh = sharding.make_mesh(cfg.mesh, devices=devices)
  with tempfile.TemporaryDirectory() as workdir:
    state, frozen, step_fn, mesh, *_ = trainer.setup(cfg, workdir, mesh)
  batch = jax.device_put(random_batch(cfg), sharding.batch_sharding(mesh))
  t0 = time.perf_counter()
  compiled = step_fn.lower(state, frozen, batch).compile()
  compile_s = time.perf_counter() - t0
  # XLA counts the partitioned program, i.e. the FLOPs of one device's shard.
  device_flops = trainer.step_flops(compiled)
  official = official_step(official_src, cfg) if official_src else None
  times, official_times = [], []
  for i in range(warmup + steps):
    t0 = time.perf_counter()
    state, m = compiled(state, frozen, batch)
    jax.block_until_ready((state, m))
    if i >= warmup:
      times.append(time.perf_counter() - t0)
    if official is not None:
      t0 = time.perf_counter()
      official()
      if i >= warmup:
        official_times.append(time.perf_counter() - t0)
  sec = statistics.median(times)
  out = {"preset": preset, "median_step_s": round(sec, 4), "min_step_s": round(min(times), 4),
         "flops_per_step": device_flops and device_flops * len(devices),
         "compile_s": round(compile_s, 1),
         "clips_per_s": round(cfg.batch_size / sec, 2), "batch_size": cfg.batch_size,
         "devices": len(devices), "device_kind": devices[0].device_kind,
         "warmup": warmup, "timed_steps": steps, "loss": float(m["loss"])}
  if official_times:
    out["official_median_step_s"] = round(statistics.median(official_times), 4)
    out["speedup_vs_official"] = round(statistics.median(official_times) / sec, 3)
  peak = metrics_lib.peak_flops_per_device()
  if device_flops and peak and devices[0].platform != "cpu":
    out["mfu"] = round(device_flops / sec / peak, 4)
    out["peak_flops_per_device"] = peak
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--preset", default="bench-cpu", choices=["bench-cpu", "vitg-gpu"])
  p.add_argument("--warmup", type=int, default=3)
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--converted", default="",
                 help="converted base checkpoint (default: random init)")
  p.add_argument("--cpu-devices", type=int, default=0,
                 help="bench-cpu: XLA CPU devices (0: one per core, as the trainer does)")
  p.add_argument("--official-src", default="",
                 help="facebookresearch/vjepa2 checkout: also time the official PyTorch step")
  args = p.parse_args(sys.argv[1:] if argv is None else argv)
  if args.official_src and args.preset != "bench-cpu":
    p.error("--official-src is supported with --preset bench-cpu only")
  print(json.dumps(run(args.preset, args.warmup, args.steps, args.converted,
                       args.official_src, args.cpu_devices)), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
