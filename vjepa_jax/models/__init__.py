"""Flax NNX ports of the V-JEPA 2 encoder and the V-JEPA 2-AC predictor, and how to load them."""
from vjepa_jax.models.ac_predictor import ACPredictor
from vjepa_jax.models.configs import EncoderConfig
from vjepa_jax.models.configs import PredictorConfig
from vjepa_jax.models.configs import encoder_preset
from vjepa_jax.models.configs import predictor_preset
from vjepa_jax.models.loading import load
from vjepa_jax.models.loading import random_model
from vjepa_jax.models.vit import VisionTransformer
from vjepa_jax.models.vit import encode_frames
