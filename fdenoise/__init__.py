"""Shared machinery of the project: TF2 workarounds, configuration, checkpoints,
training and evaluation set-up. Importing it applies the workarounds once."""
from . import compat  # noqa: F401  (applies the tensorpack/Horovod-on-TF2 workarounds)
