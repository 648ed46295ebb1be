"""Test-suite set-up: the project's TF2 workarounds before any test imports TensorFlow
(core.compat sets TF_ENABLE_ONEDNN_OPTS, which TensorFlow reads once at import)."""
import core.compat  # noqa: F401  (the TF2 workarounds, before TensorFlow loads)

import pytest  # noqa: E402

from helpers import PYTHON, REPO, run  # noqa: E402


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory):
    """A small net adversarially trained on Fashion-MNIST for 300 steps (about 20 s): about
    55% clean accuracy and 25% under untargeted PGD-10, so attacks have images to break and
    images they cannot."""
    logdir = tmp_path_factory.mktemp("trained") / "run"
    run([PYTHON, REPO / "train.py", "--preset", "tiny", "--steps-per-epoch", "300", "--batch", "32", "--base-lr",
         "0.4", "--logdir", logdir], timeout=600)
    return logdir / "model-final.npz"
