"""The converter loads official checkpoints strictly and fails clearly on anything else."""
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch

import vjepa2_tiny as fx
from vjepa_jax.models import pretrained
from weights_conversion import ConversionError
from weights_conversion import load_official_checkpoint
from weights_conversion import official
from weights_conversion import torch_io
from weights_conversion.convert import params_digest

ROOT = pathlib.Path(__file__).parents[1]


@pytest.fixture(scope="module")
def ckpt():
  return torch.load(fx.CHECKPOINT, map_location="cpu", weights_only=True)


def _save(tmp_path, obj, name="ckpt.pt"):
  path = tmp_path / name
  torch.save(obj, path)
  return str(path)


def _edit(ckpt, part, fn):
  out = dict(ckpt)
  out[part] = fn(dict(ckpt[part]))
  return out


def test_missing_tensor_is_listed(tmp_path, ckpt):
  bad = _edit(ckpt, "predictor", lambda sd: {k: v for k, v in sd.items()
                                             if not k.endswith("predictor_blocks.1.mlp.fc2.bias")})
  with pytest.raises(ConversionError, match="missing") as e:
    load_official_checkpoint(_save(tmp_path, bad), **fx.load_kwargs())
  assert "predictor_blocks.1.mlp.fc2.bias" in str(e.value)


def test_extra_tensor_is_listed(tmp_path, ckpt):
  bad = _edit(ckpt, "encoder", lambda sd: {**sd, "module.blocks.0.attn.q_norm.weight":
                                           torch.ones(3)})
  with pytest.raises(ConversionError, match="unexpected") as e:
    load_official_checkpoint(_save(tmp_path, bad), **fx.load_kwargs())
  assert "blocks.0.attn.q_norm.weight" in str(e.value)


def test_deeper_checkpoint_is_never_partially_loaded(ckpt):
  """Depth comes from the tensors: an extra block is converted, a hole in the stack is an error
  (the official loaders use strict=False and would load around it)."""
  def add_block(sd):
    depth = max(int(k.split("predictor_blocks.")[1].split(".")[0]) for k in sd
                if "predictor_blocks." in k)
    extra = {k.replace(f"blocks.{depth}.", f"blocks.{depth + 2}."): v for k, v in sd.items()
             if f"predictor_blocks.{depth}." in k}
    return {**sd, **extra}
  with pytest.raises(ConversionError, match="missing") as e:
    official.convert_checkpoint(_edit(ckpt, "predictor", add_block), **fx.load_kwargs())
  assert f"predictor_blocks.{fx.meta()['predictor']['depth']}.attn.qkv.kernel" in str(e.value)


def test_misshaped_tensor_is_listed(tmp_path, ckpt):
  def shrink(sd):
    k = next(k for k in sd if k.endswith("blocks.0.mlp.fc1.bias"))
    return {**sd, k: sd[k][:-1]}
  with pytest.raises(ConversionError, match="mis-shaped") as e:
    load_official_checkpoint(_save(tmp_path, _edit(ckpt, "encoder", shrink)), **fx.load_kwargs())
  assert "blocks.0.mlp.fc1.bias" in str(e.value)


def test_wrong_head_count_is_rejected(ckpt):
  kw = fx.load_kwargs()
  width = fx.meta()["encoder"]["embed_dim"]
  with pytest.raises(ValueError, match="not divisible"):
    official.convert_checkpoint(ckpt, **{**kw, "encoder_num_heads": width + 1})
  # A head count that divides the width but leaves < 2 dims per RoPE slice.
  with pytest.raises(ValueError, match="too small for 3-D RoPE"):
    official.convert_checkpoint(ckpt, **{**kw, "encoder_num_heads": width})


def test_truncated_file_is_a_clear_error(tmp_path):
  data = fx.CHECKPOINT.read_bytes()
  path = tmp_path / "truncated.pt"
  path.write_bytes(data[: len(data) // 2])
  with pytest.raises(ValueError, match="truncated or corrupt"):
    load_official_checkpoint(str(path), **fx.load_kwargs())


def test_not_a_vjepa_checkpoint(tmp_path):
  path = _save(tmp_path, {"state_dict": {"fc.weight": torch.zeros(2, 2)}})
  with pytest.raises(ValueError, match="not a V-JEPA 2 checkpoint"):
    load_official_checkpoint(path, **fx.load_kwargs())
  path = _save(tmp_path, {"encoder": {"fc.weight": torch.zeros(2, 2)}}, "b.pt")
  with pytest.raises(ValueError, match="not a V-JEPA 2 encoder"):
    load_official_checkpoint(path, **fx.load_kwargs())


def test_video_not_multiple_of_patch(tmp_path):
  enc = load_official_checkpoint(str(fx.CHECKPOINT), **fx.load_kwargs())["encoder"]
  p = enc.config.patch_size
  with pytest.raises(ValueError, match="multiples of the patch size"):
    enc(np.zeros((1, 2, p * 2 + 3, p * 2, 3), np.float32))
  with pytest.raises(ValueError, match="channels last"):
    enc(np.zeros((1, 3, 2, p, p), np.float32))


def test_predictor_rejects_mismatched_inputs():
  pred = load_official_checkpoint(str(fx.CHECKPOINT), **fx.load_kwargs())["predictor"]
  g = fx.goldens()
  with pytest.raises(ValueError, match="tokens per frame"):
    pred(g["pred_tokens"][:, :-1], g["pred_actions"], g["pred_states"])
  with pytest.raises(ValueError, match="actions must be"):
    pred(g["pred_tokens"], g["pred_actions"][:, :-1], g["pred_states"])


def test_prefixes_stripped_and_pretraining_layout(tmp_path, ckpt):
  """A pre-training file (`module.backbone.` keys, encoder + target_encoder, pos_embed entry,
  mask-token predictor) converts its target encoder only."""
  def wrap(sd):
    out = {k.replace("module.", "module.backbone."): v for k, v in sd.items()}
    out["module.backbone.pos_embed"] = torch.zeros(1, 4, 3)
    return out
  target = {k: v * 2 for k, v in ckpt["target_encoder"].items()}
  pre = {"encoder": wrap(dict(ckpt["encoder"])), "target_encoder": wrap(target),
         "predictor": {"module.backbone.mask_tokens.0": torch.zeros(1, 1, 8)}}
  conv = official.convert_checkpoint(pre, **fx.load_kwargs())
  assert set(conv) == {"encoder"}
  k = next(k for k in ckpt["target_encoder"] if k.endswith("norm.bias") and "blocks" not in k)
  np.testing.assert_allclose(conv["encoder"][1][("norm", "bias")], 2 * ckpt["target_encoder"][k])


def test_cli_writes_loadable_checkpoint(tmp_path):
  kw = fx.load_kwargs()
  out = tmp_path / "converted"
  cmd = [sys.executable, "-m", "weights_conversion.convert", "--checkpoint", str(fx.CHECKPOINT),
         "--output", str(out), "--encoder-num-heads", str(kw["encoder_num_heads"]),
         "--predictor-num-heads", str(kw["predictor_num_heads"]), "--img-size",
         str(kw["img_size"])]
  subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, timeout=300)
  arch = pretrained.read_architecture(str(out))
  assert arch["models"]["encoder"]["num_heads"] == kw["encoder_num_heads"]
  whole = official.convert_checkpoint(torch_io.load_torch_checkpoint(str(fx.CHECKPOINT)), **kw)
  assert arch["source"]["params_sha256"] == params_digest(whole), (
      "the tensor-by-tensor digest must equal the digest of the whole conversion")
  models = pretrained.load_converted(str(out))
  g = fx.goldens()
  enc = pretrained.Loaded(models["encoder"])
  np.testing.assert_allclose(enc(fx.to_bthwc(g["enc_clip"])), g["enc_out"], atol=5e-5)
  bad = subprocess.run(cmd[:4] + [str(tmp_path / "missing.pt")] + cmd[5:], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
  assert bad.returncode == 2 and "not found" in bad.stderr


def test_models_saved_in_parts_load_exactly(tmp_path):
  """A model written in many small orbax parts loads back bit-exact; a lost part is an error
  naming the missing parameters, never a partly loaded model."""
  conv = official.convert_checkpoint(torch_io.load_torch_checkpoint(str(fx.CHECKPOINT)),
                                     **fx.load_kwargs())
  for kind, (_, flat) in conv.items():
    pretrained.save_item(str(tmp_path), kind, iter(flat.items()), part_bytes=4096)
  pretrained.write_architecture(str(tmp_path), {k: c for k, (c, _) in conv.items()}, {})
  parts = sorted(p.name for p in (tmp_path / "encoder").iterdir())
  assert len(parts) > 2 and parts[0] == "part-00000"
  models = pretrained.load_converted(str(tmp_path))
  for kind, (_, flat) in conv.items():
    loaded = pretrained.flat_params(models[kind])
    assert set(loaded) == set(flat)
    for path, value in flat.items():
      np.testing.assert_array_equal(np.asarray(loaded[path]), value)
  (tmp_path / "encoder" / parts[1]).rename(tmp_path / "encoder" / "lost")
  with pytest.raises(ValueError, match="missing parameters"):
    pretrained.load_converted(str(tmp_path))


@pytest.mark.skipif(not pathlib.Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_released_source_pages_leave_memory_and_data_intact(tmp_path):
  """After conversion a tensor's pages of the memory-mapped file leave resident memory, and the
  tensor still reads its true values (they come back from the file)."""
  def rss_file() -> int:
    with open("/proc/self/status") as f:
      return next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("RssFile:"))
  values = torch.arange(8 * 2**20 // 4, dtype=torch.float32)
  path = _save(tmp_path, {"w": values})
  sd = torch_io.load_torch_checkpoint(path)
  release = torch_io.page_releaser(path)
  assert float(sd["w"].sum()) == float(values.sum())
  before = rss_file()
  release(sd["w"])
  assert before - rss_file() > 6 * 2**20
  assert torch.equal(sd["w"], values)
