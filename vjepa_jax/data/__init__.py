"""Robot video datasets for V-JEPA 2-AC: RLDS/TFDS and LeRobot, one entry point.

  from vjepa_jax import data
  cfg = data.config_for(path)                 # format detected, spec guessed (or spec=...)
  for clip in data.clip_iterator(cfg): ...    # unbatched NumPy dicts (the element contract)
  it = data.batches(cfg, batch_size)          # resumable: it.get_state() / state=...

Modules: `specs` (dataset specs and presets), `droid` (RLDS reader, tf.data), `lerobot` +
`clips` (LeRobot reader, grain), `writers` (RLDS and LeRobot writers), `synthetic` (sample data),
`inspect` (CLI).
"""
from vjepa_jax.data.api import BatchIterator
from vjepa_jax.data.api import batches
from vjepa_jax.data.api import check_config
from vjepa_jax.data.api import check_path
from vjepa_jax.data.api import clip_iterator
from vjepa_jax.data.api import ClipStream
from vjepa_jax.data.api import config_for
from vjepa_jax.data.api import dataset_stats
from vjepa_jax.data.api import default_config
from vjepa_jax.data.api import is_mixture
from vjepa_jax.data.api import mixture
from vjepa_jax.data.api import resolve
from vjepa_jax.data.api import spec_of
from vjepa_jax.data.specs import PRESETS
from vjepa_jax.data.specs import Spec
