"""Test-suite set-up: the project's TF2 workarounds before any test imports TensorFlow
(fdenoise.compat sets TF_ENABLE_ONEDNN_OPTS, which TensorFlow reads once at import)."""
import fdenoise.compat  # noqa: F401
