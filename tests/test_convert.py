"""The converter loads official checkpoints strictly and fails clearly on anything else."""
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch

import vjepa2_tiny as fx
from vjepa_jax import models
from vjepa_jax.models import params
from vjepa_jax.models import pretrained
from weights_conversion import ConversionError
from weights_conversion import convert
from weights_conversion import load_official_checkpoint
from weights_conversion import torch_io

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
    params.convert_checkpoint(_edit(ckpt, "predictor", add_block), **fx.load_kwargs())
  assert f"predictor_blocks.{fx.meta()['predictor']['depth']}.attn.qkv.kernel" in str(e.value)


def test_misshaped_tensor_is_listed_in_the_checkpoints_layout(tmp_path, ckpt):
  """Both shapes are given as the checkpoint stores them ([out, in] for a weight)."""
  def shrink(sd):
    k = next(k for k in sd if k.endswith("blocks.0.mlp.fc1.bias"))
    w = next(k for k in sd if k.endswith("blocks.1.mlp.fc2.weight"))
    return {**sd, k: sd[k][:-1], w: sd[w][:, :-1]}
  with pytest.raises(ConversionError, match="mis-shaped") as e:
    load_official_checkpoint(_save(tmp_path, _edit(ckpt, "encoder", shrink)), **fx.load_kwargs())
  e_dim, hidden = fx.meta()["encoder"]["embed_dim"], fx.meta()["encoder"]["mlp_hidden"]
  assert f"blocks.0.mlp.fc1.bias [{hidden - 1}], expected [{hidden}]" in str(e.value)
  assert (f"blocks.1.mlp.fc2.weight [{e_dim}, {hidden - 1}], expected [{e_dim}, {hidden}]"
          in str(e.value))


def test_nonfinite_tensors_are_named_and_refused(tmp_path, ckpt, capsys):
  def poison(sd):
    k = next(k for k in sd if k.endswith("predictor_blocks.0.attn.qkv.weight"))
    b = next(k for k in sd if k.endswith("predictor_proj.bias"))
    w = sd[k].clone()
    w[0, 0] = float("nan")
    return {**sd, k: w, b: torch.full_like(sd[b], float("inf"))}
  path = _save(tmp_path, _edit(ckpt, "predictor", poison))
  with pytest.raises(ConversionError, match="non-finite") as e:
    load_official_checkpoint(path, **fx.load_kwargs())
  assert "predictor_blocks.0.attn.qkv.weight" in str(e.value)
  assert "predictor_proj.bias" in str(e.value)
  kw = fx.load_kwargs()
  heads = ["--encoder-num-heads", str(kw["encoder_num_heads"]), "--predictor-num-heads",
           str(kw["predictor_num_heads"]), "--img-size", str(kw["img_size"])]
  out = tmp_path / "out"
  assert convert.main(["--checkpoint", path, "--output", str(out)] + heads) == 2
  err = capsys.readouterr().err
  assert "predictor_blocks.0.attn.qkv.weight" in err and "--allow-nonfinite" in err
  assert not (out / pretrained.ARCH_FILE).exists()
  assert convert.main(["--checkpoint", path, "--output", str(out), "--allow-nonfinite"]
                      + heads) == 0
  assert np.isnan(np.asarray(pretrained.flat_params(pretrained.load_converted(str(out))[
      "predictor"])[("predictor_blocks", 0, "attn", "qkv", "kernel")])).any()


def test_flipped_bytes_are_a_clear_error(tmp_path):
  """A byte changed inside a tensor's record fails the archive's CRC-32 check by name."""
  import struct
  import zipfile
  data = bytearray(fx.CHECKPOINT.read_bytes())
  with zipfile.ZipFile(fx.CHECKPOINT) as z:
    info = next(i for i in z.infolist() if "/data/" in i.filename and i.file_size > 64)
  name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
  data[info.header_offset + 30 + name_len + extra_len + 17] ^= 0x10
  path = tmp_path / "flipped.pt"
  path.write_bytes(bytes(data))
  with pytest.raises(ValueError, match=f"record {info.filename} fails its CRC-32 check"):
    load_official_checkpoint(str(path), **fx.load_kwargs())


def test_models_load_reads_pt_and_converted_alike(tmp_path):
  kw = fx.load_kwargs()
  out = tmp_path / "converted"
  assert convert.main(["--checkpoint", str(fx.CHECKPOINT), "--output", str(out),
                       "--encoder-num-heads", str(kw["encoder_num_heads"]),
                       "--predictor-num-heads", str(kw["predictor_num_heads"]),
                       "--img-size", str(kw["img_size"])]) == 0
  a = models.load(str(fx.CHECKPOINT), encoder_num_heads=kw["encoder_num_heads"],
                  predictor_num_heads=kw["predictor_num_heads"], img_size=kw["img_size"])
  b = models.load(str(out), dtype="bfloat16")
  for x, y in zip(a, b):
    fa, fb = pretrained.flat_params(x), pretrained.flat_params(y)
    assert set(fa) == set(fb)
    for k in fa:
      np.testing.assert_array_equal(np.asarray(fa[k]), np.asarray(fb[k]))
  assert b[0].cfg.dtype == b[1].cfg.dtype == "bfloat16" and a[1].cfg.dtype == "float32"
  with pytest.raises(ValueError, match="cannot override 'depth'"):
    models.load(str(out), depth=3)
  with pytest.raises(ValueError, match="step, merge_lora only apply to training workdirs"):
    models.load(str(out), step=2, merge_lora=True)
  with pytest.raises(ValueError, match="encoder_num_heads only apply to .pt files"):
    models.load(str(out), encoder_num_heads=2)
  with pytest.raises(ValueError, match="neither a converted checkpoint"):
    models.load(str(tmp_path))


def test_wrong_head_count_is_rejected(ckpt):
  kw = fx.load_kwargs()
  width = fx.meta()["encoder"]["embed_dim"]
  with pytest.raises(ValueError, match="not divisible"):
    params.convert_checkpoint(ckpt, **{**kw, "encoder_num_heads": width + 1})
  # A head count that divides the width but leaves < 2 dims per RoPE slice.
  with pytest.raises(ValueError, match="too small for 3-D RoPE"):
    params.convert_checkpoint(ckpt, **{**kw, "encoder_num_heads": width})


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
  conv = params.convert_checkpoint(pre, **fx.load_kwargs())
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
  whole = params.convert_checkpoint(params.load_torch_file(str(fx.CHECKPOINT)), **kw)
  assert arch["source"]["params_sha256"] == params.params_digest(whole), (
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
  conv = params.convert_checkpoint(params.load_torch_file(str(fx.CHECKPOINT)),
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
  sd = params.load_torch_file(path)
  release = torch_io.page_releaser(path)
  assert float(sd["w"].sum()) == float(values.sum())
  before = rss_file()
  release(sd["w"])
  assert before - rss_file() > 6 * 2**20
  assert torch.equal(sd["w"], values)
