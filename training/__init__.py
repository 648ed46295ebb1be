"""Adversarial training (Sec. 5): the trainer set-up under Horovod (``trainer``), the
learning-rate schedule of Goyal et al. (``schedule``), the callbacks (``callbacks``), resuming
from a log directory (``resume``) and fault injection for the reliability tests (``faults``)."""
import core.compat  # noqa: F401  (the TF2 workarounds, before TensorFlow loads)
