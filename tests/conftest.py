"""Test-suite set-up: the project's TF2 workarounds before any test imports TensorFlow
(core.compat sets TF_ENABLE_ONEDNN_OPTS, which TensorFlow reads once at import)."""
import core.compat  # noqa: F401  (the TF2 workarounds, before TensorFlow loads)
