"""Issue 2, item 5: every workaround in fdenoise/compat.py, each with a test that fails
without it (the 'without' half runs in a fresh interpreter that does not import it)."""
import textwrap

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
    with_fix = _python(code.format(imp="import fdenoise"))
    assert "PLACEHOLDER_OK" in with_fix.stdout, with_fix.stdout


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
    with_fix = _python(code.format(imp="import fdenoise"))
    assert "GLOBAL_VARIABLES_OK" in with_fix.stdout, with_fix.stdout


def test_single_process_horovod_trainer_runs():
    """HorovodTrainer.initialize is where TF2 broke: a world of one must train."""
    code = """
        import numpy as np, tensorflow as tf
        import fdenoise
        from fdenoise.dist import horovod
        from tensorpack import HorovodTrainer, ModelDesc, TrainConfig, launch_train_with_config
        from tensorpack.dataflow import DataFromList
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
                                             callbacks=[], monitors=[], steps_per_epoch=2, max_epoch=1),
                                 HorovodTrainer())
        print("TRAINED_OK")
    """
    out = _python(code)
    assert "TRAINED_OK" in out.stdout, out.stdout[-3000:]
