"""Peak host memory of `python -m weights_conversion.convert` on a large official-layout file.

  PYTHONPATH=. python benchmarks/convert_memory.py [--depth 24] [--width 1024] [--tmp DIR]

Writes a synthetic V-JEPA 2-AC checkpoint with torch (random float32 weights, official tensor
names and shapes, `module.` prefixes): a ViT-L-sized encoder (width 1024, 16 heads, MLP 4096)
and an AC predictor of width 1024 over it, both of `--depth` blocks. Converts it in a subprocess
and prints one JSON line with the file size, the converter's peak RSS (`ru_maxrss` of the child),
its peak anonymous and peak file-backed resident memory (sampled from `/proc`), the peak of
converting the tiny fixture (the interpreter + libraries floor), their ratio to the file size,
and an extrapolation to `vjepa2-ac-vitg.pt`. Temporary files are deleted.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

VITG_AC_FILE_BYTES = 11.7e9  # vjepa2-ac-vitg.pt
VITG_AC_CONVERTED_BYTES = 5.3e9  # its encoder + predictor in float32 (the tensors converted)
FIXTURE = pathlib.Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "vjepa2_tiny"


def _blocks(prefix: str, depth: int, width: int, hidden: int, randn) -> dict:
  sd = {}
  for i in range(depth):
    b = f"{prefix}.{i}."
    sd.update({b + "norm1.weight": randn(width), b + "norm1.bias": randn(width),
               b + "attn.qkv.weight": randn(3 * width, width),
               b + "attn.qkv.bias": randn(3 * width),
               b + "attn.proj.weight": randn(width, width), b + "attn.proj.bias": randn(width),
               b + "norm2.weight": randn(width), b + "norm2.bias": randn(width),
               b + "mlp.fc1.weight": randn(hidden, width), b + "mlp.fc1.bias": randn(hidden),
               b + "mlp.fc2.weight": randn(width, hidden), b + "mlp.fc2.bias": randn(width)})
  return sd


def make_checkpoint(path: str, depth: int, width: int, pred_width: int, action_dim: int = 7
                    ) -> None:
  """Official AC layout: `encoder` and `predictor` state dicts with `module.` prefixes."""
  import torch
  randn = lambda *s: torch.randn(*s, dtype=torch.float32) * 0.02  # noqa: E731
  enc = {"patch_embed.proj.weight": randn(width, 3, 2, 16, 16),
         "patch_embed.proj.bias": randn(width)}
  enc.update(_blocks("blocks", depth, width, 4 * width, randn))
  enc.update({"norm.weight": randn(width), "norm.bias": randn(width)})
  pred = {"predictor_embed.weight": randn(pred_width, width),
          "predictor_embed.bias": randn(pred_width)}
  for name, d_in in (("action_encoder", action_dim), ("state_encoder", action_dim),
                     ("extrinsics_encoder", action_dim - 1)):
    pred[f"{name}.weight"] = randn(pred_width, d_in)
    pred[f"{name}.bias"] = randn(pred_width)
  pred.update(_blocks("predictor_blocks", depth, pred_width, 4 * pred_width, randn))
  pred.update({"predictor_norm.weight": randn(pred_width), "predictor_norm.bias": randn(pred_width),
               "predictor_proj.weight": randn(width, pred_width),
               "predictor_proj.bias": randn(width)})
  torch.save({"encoder": {"module." + k: v for k, v in enc.items()},
              "predictor": {"module." + k: v for k, v in pred.items()},
              "epoch": 0, "loss": 0.0}, path)


def _rss_split(pid: int) -> tuple[int, int]:
  """(anonymous, file-backed) resident bytes of a live process (Linux `/proc`)."""
  fields = {}
  with open(f"/proc/{pid}/status") as f:
    for line in f:
      key, _, value = line.partition(":")
      if key in ("RssAnon", "RssFile", "RssShmem"):
        fields[key] = int(value.split()[0]) * 1024
  return fields.get("RssAnon", 0), fields.get("RssFile", 0) + fields.get("RssShmem", 0)


def _convert(checkpoint: str, output: str, extra=()) -> tuple[int, int, int]:
  """Runs the converter CLI in a child.

  Returns:
    The child's own peak RSS (`ru_maxrss` from `wait4`), and its peak anonymous and peak
    file-backed resident bytes sampled every 20 ms (the two peaks need not be simultaneous).
  """
  child = subprocess.Popen([sys.executable, "-m", "weights_conversion.convert", "--checkpoint",
                            checkpoint, "--output", output, *extra], stdout=subprocess.DEVNULL)
  anon = file = 0
  while True:
    pid, status, usage = os.wait4(child.pid, os.WNOHANG)
    if pid:
      break
    try:
      a, f = _rss_split(child.pid)
      anon, file = max(anon, a), max(file, f)
    except (OSError, ValueError):
      pass
    time.sleep(0.02)
  if os.waitstatus_to_exitcode(status):
    raise subprocess.CalledProcessError(os.waitstatus_to_exitcode(status), child.args)
  return usage.ru_maxrss * 1024, anon, file


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--depth", type=int, default=24)
  p.add_argument("--width", type=int, default=1024)
  p.add_argument("--pred-width", type=int, default=1024)
  p.add_argument("--tmp", default=None, help="directory for the temporary files")
  args = p.parse_args(sys.argv[1:] if argv is None else argv)
  tmp = tempfile.mkdtemp(dir=args.tmp)
  try:
    meta = json.loads((FIXTURE / "meta.json").read_text())
    floor, _, _ = _convert(str(FIXTURE / "checkpoint.pt"), os.path.join(tmp, "tiny"), [
        "--encoder-num-heads", str(meta["encoder"]["num_heads"]),
        "--predictor-num-heads", str(meta["predictor"]["num_heads"]),
        "--img-size", str(meta["predictor"]["img_size"][0])])
    ckpt = os.path.join(tmp, "synthetic_ac.pt")
    t0 = time.time()
    # In a child: a child started later inherits this process's peak RSS in its `ru_maxrss`
    # (Linux carries it across exec), so this process must never hold the checkpoint itself.
    maker = multiprocessing.get_context("spawn").Process(
        target=make_checkpoint, args=(ckpt, args.depth, args.width, args.pred_width))
    maker.start()
    maker.join()
    if maker.exitcode:
      raise RuntimeError(f"writing the synthetic checkpoint failed (exit code {maker.exitcode})")
    make_s = time.time() - t0
    size = os.path.getsize(ckpt)
    t0 = time.time()
    peak, peak_anon, peak_file = _convert(ckpt, os.path.join(tmp, "converted"))
    convert_s = time.time() - t0
    ratio = peak / size
    extra_ratio = (peak - floor) / size
    print(json.dumps({
        "encoder": f"width {args.width}, depth {args.depth}",
        "predictor": f"width {args.pred_width}, depth {args.depth}",
        "file_bytes": size, "peak_rss_bytes": int(peak), "floor_rss_bytes": int(floor),
        "peak_anon_bytes": peak_anon, "peak_file_backed_bytes": peak_file,
        "peak_over_file": round(ratio, 3), "above_floor_over_file": round(extra_ratio, 3),
        "make_s": round(make_s, 1), "convert_s": round(convert_s, 1),
        "vitg_ac_proportional_bound_bytes": int(floor + extra_ratio * VITG_AC_CONVERTED_BYTES),
        "vitg_ac_file_bytes": VITG_AC_FILE_BYTES}), flush=True)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
