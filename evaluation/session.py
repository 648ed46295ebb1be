"""Sessions of evaluation graphs, with a checkpoint's weights loaded strictly."""
import core.compat  # noqa: F401  (the TF2 workarounds, before TensorFlow loads)
import tensorflow as tf

from model import checkpoint

tfv1 = tf.compat.v1


def build_session(graph, params, path):
    """A session of ``graph`` with ``params`` loaded strictly (all and only the graph's
    model variables)."""
    with graph.as_default():
        init = checkpoint.strict_session_init(params, path, graph)
        sess = tfv1.Session(graph=graph, config=tfv1.ConfigProto(allow_soft_placement=True))
        sess.run(tfv1.global_variables_initializer())
        init.init(sess)
    return sess
