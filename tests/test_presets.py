"""Official presets have exactly the official parameter counts (checked without allocating)."""
import pytest
from flax import nnx

from vjepa_jax.models import configs
from vjepa_jax.models import pretrained
from vjepa_jax.models.vit import count_params


@pytest.mark.parametrize("name", ["vit_large", "vit_huge", "vit_giant", "vit_large_384",
                                  "vit_huge_384", "vit_giant_384"])
def test_encoder_preset_param_count(name):
  cfg = configs.encoder_preset(name)
  model = pretrained.abstract_model("encoder", cfg)
  base = name.rsplit("_", 1)[0] if name.endswith(("_256", "_384")) else name
  assert count_params(nnx.state(model, nnx.Param)) == configs.OFFICIAL_PARAM_COUNTS[base]


def test_ac_predictor_preset_param_count():
  cfg = configs.predictor_preset("vit_ac_predictor_giant")
  model = pretrained.abstract_model("predictor", cfg)
  assert count_params(nnx.state(model, nnx.Param)) == (
      configs.OFFICIAL_PARAM_COUNTS["vit_ac_predictor_giant"])
  assert (cfg.depth, cfg.predictor_embed_dim, cfg.num_heads) == (24, 1024, 16)


def test_unknown_preset_is_a_clear_error():
  with pytest.raises(ValueError, match="unknown encoder preset"):
    configs.encoder_preset("vit_tiny_unknown")
