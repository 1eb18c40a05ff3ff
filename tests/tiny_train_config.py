"""`--config tests/tiny_train_config.py:DATA_PATH`: the trainer tests' tiny config as a file."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import train_tiny  # noqa: E402


def get_config(arg=None):
  return train_tiny.tiny_config(arg)
