"""The environment the set-up script builds, and a real 2-rank Horovod run."""
import configparser
import re

import numpy as np
import pytest

from helpers import HOROVODRUN, REPO, horovodrun, run


def pins():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    out = {}
    for line in cfg["options"]["install_requires"].split("\n"):
        m = re.match(r"\s*([A-Za-z0-9_.-]+)\s*==\s*([0-9.]+)", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def test_installed_versions_equal_the_pins():
    import importlib.metadata as md
    p = pins()
    assert {"tensorflow-cpu", "tf-keras", "tensorpack", "horovod", "scipy"} <= set(p)
    for name, version in p.items():
        if name == "tensorflow-cpu":      # or `tensorflow` after setup.sh --gpu
            import tensorflow as tf
            assert tf.__version__ == version
            continue
        assert md.version(name) == version, name
    import tensorflow as tf
    assert tf.compat.v1.layers.__name__.startswith("tf_keras"), "tensorpack's layers need tf-keras (Keras 2)"
    import numpy
    assert numpy.__version__.split(".")[0] == "1"
    import cv2  # noqa: F401
    import tqdm  # noqa: F401
    import matplotlib  # noqa: F401


def test_horovod_built_with_tensorflow_and_gloo():
    out = run([HOROVODRUN, "--check-build"]).stdout
    assert re.search(r"\[X\] TensorFlow", out), out
    assert re.search(r"\[X\] Gloo", out), out
    import horovod.tensorflow as hvd
    assert hvd.gloo_built()


def _softmax_regression_step(w, b, x, y, lr):
    """One SGD step of mean cross-entropy in numpy (the independent reference)."""
    logits = x @ w + b
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    p /= len(y)
    return w - lr * x.T @ p, b - lr * p.sum(axis=0)


@pytest.mark.horovod
def test_two_rank_horovod_trainer(tmp_path):
    horovodrun(2, [REPO / "tests" / "scripts" / "hvd_tiny_train.py", tmp_path], timeout=300)
    r0 = np.load(tmp_path / "rank0.npz")
    r1 = np.load(tmp_path / "rank1.npz")
    assert int(r0["size"]) == 2 and int(r1["size"]) == 2
    steps = len([k for k in r0.files if k.startswith("W")])
    assert steps == 5  # initial + 4 steps
    # broadcast: ranks start from rank 0's weights although each drew its own
    for i in range(steps):
        np.testing.assert_array_equal(r0["W%d" % i], r1["W%d" % i])
        np.testing.assert_array_equal(r0["b%d" % i], r1["b%d" % i])
    # the batches really differ between ranks (otherwise the test proves nothing)
    assert not np.allclose(r0["x0"], r1["x0"])
    # one averaged step == one single-process step on both ranks' batches combined
    x = np.concatenate([r0["x0"], r1["x0"]]).astype(np.float64)
    y = np.concatenate([r0["y0"], r1["y0"]])
    w1, b1 = _softmax_regression_step(r0["W0"].astype(np.float64), r0["b0"].astype(np.float64), x, y, 0.5)
    np.testing.assert_allclose(r0["W1"], w1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r0["b1"], b1, rtol=1e-5, atol=1e-6)
    # and differs from a step on rank 0's batch alone
    w_alone, _ = _softmax_regression_step(r0["W0"].astype(np.float64), r0["b0"].astype(np.float64),
                                          r0["x0"].astype(np.float64), r0["y0"], 0.5)
    assert not np.allclose(r0["W1"], w_alone, atol=1e-4)
    # training.callbacks' RankWeightsCheck: ranks in step after the epoch ...
    for r in (r0, r1):
        assert float(r["train_variables_differing"]) == 0 and float(r["train_weight_spread"]) == 0
        assert list(r["check_0_differing"]) == [] and str(r["check_0_verdict"]) == "ok"
    # ... and it sees one element of rank 1's W changed, on both ranks: a warning for 1e-6,
    # a stop above its tolerance (1e-4 relative) for 1e-2
    for r in (r0, r1):
        assert list(r["check_1e-06_differing"]) == ["W"] and str(r["check_1e-06_verdict"]) == "ok"
        assert 0 < float(r["check_1e-06_spread"]) < 1e-4
        assert list(r["check_0.01_differing"]) == ["W"] and float(r["check_0.01_spread"]) > 1e-4
        assert "differ between the 2 ranks" in str(r["check_0.01_verdict"])
    expected = 1e-2 / np.abs(r0["W%d" % (steps - 1)].astype(np.float64)).sum()
    assert float(r0["check_0.01_spread"]) == pytest.approx(expected, rel=1e-3)
