"""Every workaround in core/compat.py, each with a test that fails
without it (the 'without' half runs in a fresh interpreter that does not import it)."""
import json
import textwrap

import numpy as np

from helpers import PYTHON, run


def _python(code):
    return run([PYTHON, "-c", textwrap.dedent(code)], check=False, timeout=120)


def test_graph_mode_without_a_trainer():
    code = """
        import tensorflow as tf
        {imp}
        x = tf.compat.v1.placeholder(tf.float32, [None, 3])
        print("PLACEHOLDER_OK")
    """
    without = _python(code.format(imp=""))
    assert "PLACEHOLDER_OK" not in without.stdout and "eager" in without.stdout.lower()
    with_fix = _python(code.format(imp="import core.compat"))
    assert "PLACEHOLDER_OK" in with_fix.stdout, with_fix.stdout


def test_tensorpack_layers_build_on_keras_2():
    """0. TensorFlow 2.16+ bundles Keras 3, on which tensorpack's Conv2D fails; the compat
    module selects tf-keras (Keras 2) before TensorFlow loads Keras. The subprocess gets an
    environment without TF_USE_LEGACY_KERAS (this process has it: conftest imported compat)."""
    import os
    import subprocess
    import sys
    code = """
        {imp}
        import tensorflow as tf
        tf.compat.v1.disable_eager_execution()
        from tensorpack.models import Conv2D
        x = tf.compat.v1.placeholder(tf.float32, [None, 8, 8, 3])
        y = Conv2D("conv", x, 4, 3)
        assert y.shape.as_list() == [None, 8, 8, 4]
        print("CONV2D_OK")
    """
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"

    def python(source):
        return subprocess.run([sys.executable, "-c", textwrap.dedent(source)], env=env, capture_output=True,
                              text=True, timeout=120)
    without = python(code.format(imp=""))
    assert "CONV2D_OK" not in without.stdout and "not available with Keras 3" in without.stderr, without.stderr[-2000:]
    with_fix = python(code.format(imp="import core.compat"))
    assert "CONV2D_OK" in with_fix.stdout, with_fix.stderr[-3000:]


def test_horovod_trainer_global_variables():
    code = """
        import tensorflow as tf
        {imp}
        from tensorpack.train import trainers
        assert trainers.tf.global_variables is tf.compat.v1.global_variables
        print("GLOBAL_VARIABLES_OK")
    """
    without = _python(code.format(imp=""))
    assert "GLOBAL_VARIABLES_OK" not in without.stdout and "AttributeError" in without.stdout
    with_fix = _python(code.format(imp="import core.compat"))
    assert "GLOBAL_VARIABLES_OK" in with_fix.stdout, with_fix.stdout


def test_single_process_horovod_trainer_runs():
    """HorovodTrainer.initialize is where TF2 broke: a world of one must train."""
    code = """
        import json, numpy as np, tensorflow as tf
        import core.compat
        from core.dist import horovod
        from tensorpack import HorovodTrainer, ModelDesc, TrainConfig, launch_train_with_config
        from tensorpack.callbacks import Callback
        from tensorpack.dataflow import DataFromList
        class PrintWeights(Callback):
            def _after_train(self):
                w, = [v for v in tf.compat.v1.global_variables() if v.op.name == "w"]
                print("WEIGHTS", json.dumps(self.trainer.sess.run(w).tolist()))
        class M(ModelDesc):
            def inputs(self):
                return [tf.TensorSpec([None, 2], tf.float32, "x")]
            def build_graph(self, x):
                w = tf.compat.v1.get_variable("w", [2], initializer=tf.compat.v1.ones_initializer())
                return tf.reduce_sum(tf.square(x * w), name="cost")
            def optimizer(self):
                return tf.compat.v1.train.GradientDescentOptimizer(0.1)
        horovod()
        launch_train_with_config(TrainConfig(model=M(), dataflow=DataFromList([[np.ones((1, 2), "f")]] * 2),
                                             callbacks=[PrintWeights()], monitors=[], steps_per_epoch=2,
                                             max_epoch=1),
                                 HorovodTrainer())
        print("TRAINED_OK")
    """
    out = _python(code)
    assert "TRAINED_OK" in out.stdout, out.stdout[-3000:]
    # and it really trained: loss (x w)^2 with x = 1 has gradient 2 w, so each SGD step of lr
    # 0.1 multiplies w by 0.8 (the average over a world of one is the gradient itself)
    weights = [line for line in out.stdout.splitlines() if line.startswith("WEIGHTS")]
    assert weights, out.stdout[-3000:]
    np.testing.assert_allclose(json.loads(weights[0].split(" ", 1)[1]), [0.64, 0.64], rtol=1e-6)


def test_nchw_conv_and_max_pool_run_in_process():
    """4. oneDNN: NCHW Conv2D (forward and gradient) and MaxPool (gradient) run in this
    pytest process. TensorFlow's default CPU kernels are NHWC-only, and oneDNN, which has
    NCHW ones, is on by default only on AVX-512-class CPUs; conftest.py imports
    core.compat, which turns it on before TensorFlow is loaded. (5 channels: no NHWC
    max-pool elsewhere in the suite has these dimensions; see tests/test_denoise_ops.py.)"""
    import numpy as np
    import tensorflow as tf

    tfv1 = tf.compat.v1
    rng = np.random.RandomState(0)
    x_val = rng.randn(1, 3, 6, 6).astype(np.float32)      # NCHW
    w_val = rng.randn(1, 1, 3, 5).astype(np.float32)      # 1x1 conv, 3 -> 5 channels
    graph = tf.Graph()
    with graph.as_default():
        x = tfv1.placeholder(tf.float32, x_val.shape)
        w = tfv1.placeholder(tf.float32, w_val.shape)
        conv = tf.nn.conv2d(x, w, 1, "SAME", data_format="NCHW")
        pooled = tf.nn.max_pool2d(conv, 2, 2, "SAME", data_format="NCHW")
        conv_grads = tf.gradients(tf.reduce_sum(conv * conv), [x, w])
        pool_grad, = tf.gradients(tf.reduce_sum(pooled), [conv])
    with tfv1.Session(graph=graph) as sess:
        y, pooled_val, (gx, gw), gpool = sess.run(
            [conv, pooled, conv_grads, pool_grad], {x: x_val, w: w_val})

    expected = np.einsum("nchw,cd->ndhw", x_val.astype(np.float64), w_val[0, 0].astype(np.float64))
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    # d(sum y^2)/dx = 2 W y and d/dW = 2 x y, summed over positions
    np.testing.assert_allclose(gx, 2 * np.einsum("ndhw,cd->nchw", expected, w_val[0, 0]),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gw[0, 0], 2 * np.einsum("nchw,ndhw->cd", x_val, expected),
                               rtol=1e-4, atol=1e-4)
    assert pooled_val.shape == (1, 5, 3, 3)
    np.testing.assert_allclose(pooled_val, expected.reshape(1, 5, 3, 2, 3, 2).max(axis=(3, 5)),
                               rtol=1e-5, atol=1e-5)
    # the gradient of a sum of maxima: 1 at each 2x2 window's maximum, 0 elsewhere
    assert gpool.shape == y.shape
    np.testing.assert_array_equal(
        gpool, (expected == expected.reshape(1, 5, 3, 2, 3, 2).max(axis=(3, 5))
                .repeat(2, axis=2).repeat(2, axis=3)).astype(np.float32))


def test_tensorpack_failure_message_is_logged_without_a_logging_error():
    """tensorpack's main loop logs a failed run with logger.error("...=", step): without the
    workaround Python's logging prints '--- Logging error ---' and a traceback."""
    code = """
        {imp}
        from tensorpack.utils import logger
        logger.error("Training failed at global_step=", 6)
        print("LOGGED_OK")
    """
    without = _python(code.format(imp=""))
    assert "--- Logging error ---" in without.stdout and "Traceback" in without.stdout
    with_fix = _python(code.format(imp="import core.compat"))
    assert "LOGGED_OK" in with_fix.stdout and "Training failed at global_step= 6" in with_fix.stdout
    assert "Logging error" not in with_fix.stdout and "Traceback" not in with_fix.stdout
