"""Clean predictions of a model (black-box evaluation, Sec. 6.2) and its export for
competition submission: a frozen GraphDef or a SavedModel; and ONNX, so that a reviewer can
run the model, and the reference AutoAttack on it, in PyTorch (docs/ROBUSTNESS.md)."""
import core.compat  # noqa: F401  (the TF2 workarounds, before TensorFlow loads)
import os

import tensorflow as tf
from tensorpack.tfutils.tower import TowerContext

from core.files import atomic_write
from model import build_logits, checkpoint
from nets import TENSORFLOW_ONLY

from .session import build_session

tfv1 = tf.compat.v1
# ONNX opset of the export: 15 is what tf2onnx 1.17 converts the project's graphs to, and what
# onnxruntime and onnx2torch read
ONNX_OPSET = 15
ONNX_INSTALL = "pip install -e '.[onnx]' (tf2onnx 1.17, onnx 1.16.2, onnxruntime)"


def onnx_missing():
    """None if ONNX export can run, else the one line saying what to install. (onnx 1.17 and
    later need a newer ml_dtypes than TensorFlow 2.17 allows: their import fails.)"""
    try:
        import onnx  # noqa: F401
        import tf2onnx  # noqa: F401
    except (ImportError, AttributeError) as e:
        return "--export-onnx needs tf2onnx and onnx 1.16 (%s: %s): %s" % (type(e).__name__, e, ONNX_INSTALL)
    return None


class Predictor:
    """Clean logits for uint8 BGR images (black-box evaluation and export). Built with
    TensorFlow's own gradients only (nets.TENSORFLOW_ONLY), so that its exported graphs can
    be differentiated by any TensorFlow process."""

    def __init__(self, arch, params, path="checkpoint", input_dtype=tf.uint8):
        self.arch = arch
        self.graph = tf.Graph()
        with self.graph.as_default():
            s, c = arch.image_size, arch.image_channels
            self.image = tfv1.placeholder(input_dtype, [None, s, s, c], name="input")
            with TowerContext("", is_training=False):
                logits = build_logits(arch, self.image, gradients=TENSORFLOW_ONLY)
            self.logits = tf.identity(logits, name="logits")
            self.probabilities = tf.nn.softmax(self.logits, name="probabilities")
            self.classes = tf.argmax(self.logits, axis=1, output_type=tf.int32, name="classes")
        self.sess = build_session(self.graph, params, path)

    def __call__(self, images):
        return self.sess.run(self.logits, {self.image: images})

    def frozen_bytes(self):
        """The serialised frozen GraphDef: input ``input:0`` ([N, S, S, C] BGR, 0..255, uint8
        or float32), outputs ``logits:0``, ``probabilities:0``, ``classes:0``."""
        with self.graph.as_default():
            frozen = tfv1.graph_util.convert_variables_to_constants(
                self.sess, self.graph.as_graph_def(), ["logits", "probabilities", "classes"])
            frozen = tfv1.graph_util.extract_sub_graph(frozen, ["logits", "probabilities", "classes"])
        return frozen.SerializeToString()

    def export_frozen(self, path):
        """The frozen GraphDef (``frozen_bytes``) written to ``path``."""
        data = self.frozen_bytes()
        atomic_write(path, lambda f: f.write(data))

    def export_onnx(self, path, opset=ONNX_OPSET):
        """The frozen graph converted by tf2onnx to an ONNX model at ``path``: input ``input:0``
        ([N, S, S, C] float32 BGR 0..255, NHWC, as the frozen graph's), output ``logits:0``.
        Needs the ``onnx`` extra (``onnx_missing``). Of tf2onnx's ONNX-graph optimisers only
        the transpose optimiser runs (it removes the NHWC <-> NCHW transposes around every
        convolution): with all of them, converting X50-DenoiseAll took 52 s and 15 GB more
        memory on a 2-core machine, with the transpose optimiser alone 9 s and 4 GB, for an
        ONNX model as fast within 10% (docs/ROBUSTNESS.md); the full set would not fit
        X101-DenoiseAll in 24 GB."""
        from tf2onnx import optimizer, tf_loader, tfonnx
        from tf2onnx.optimizer.transpose_optimizer import TransposeOptimizer
        graph_def = tfv1.GraphDef()
        graph_def.ParseFromString(self.frozen_bytes())
        names = dict(input_names=["input:0"], output_names=["logits:0"])
        with tf.Graph().as_default():
            graph_def = tf_loader.tf_optimize(names["input_names"], names["output_names"], graph_def)
        with tf.Graph().as_default() as tf_graph:
            tf.import_graph_def(graph_def, name="")
            onnx_graph = tfonnx.process_tf_graph(tf_graph, opset=opset, **names)
            onnx_graph = optimizer.optimize_graph(onnx_graph, optimizers={"optimize_transpose": TransposeOptimizer})
            model = onnx_graph.make_model("feature-denoising %s" % self.arch.name)
        data = model.SerializeToString()
        atomic_write(path, lambda f: f.write(data))

    def export_savedmodel(self, directory):
        """A SavedModel with signature ``serving_default``: {image} -> {logits, probabilities, classes}."""
        if os.path.exists(directory):
            raise checkpoint.CheckpointError("%s exists: SavedModel export needs a new directory" % directory)
        with self.graph.as_default():
            builder = tfv1.saved_model.Builder(directory)
            sig = tfv1.saved_model.predict_signature_def(
                inputs={"image": self.image},
                outputs={"logits": self.logits, "probabilities": self.probabilities, "classes": self.classes})
            builder.add_meta_graph_and_variables(self.sess, [tfv1.saved_model.tag_constants.SERVING],
                                                 signature_def_map={"serving_default": sig})
            builder.save()
