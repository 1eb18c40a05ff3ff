"""PyTorch <-> vjepa-jax checkpoints: the converter and exporter command lines, torch file I/O.

The name and shape mapping itself is torch-free and lives with the models
(`vjepa_jax.models.params`).
"""
from vjepa_jax.models.params import ConversionError
from vjepa_jax.models.params import convert_checkpoint
from weights_conversion.official import load_official_checkpoint
