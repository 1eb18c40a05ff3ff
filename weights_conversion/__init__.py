"""PyTorch -> Flax conversion of the official V-JEPA 2 / V-JEPA 2-AC checkpoints."""
from weights_conversion.mapping import ConversionError
from weights_conversion.official import convert_checkpoint
from weights_conversion.official import load_official_checkpoint
