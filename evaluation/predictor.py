"""Clean predictions of a model (black-box evaluation, Sec. 6.2) and its export for
competition submission: a frozen GraphDef or a SavedModel."""
import core.compat  # noqa: F401  (the TF2 workarounds, before TensorFlow loads)
import os

import tensorflow as tf
from tensorpack.tfutils.tower import TowerContext

from core.files import atomic_write
from model import build_logits, checkpoint
from nets import TENSORFLOW_ONLY

from .session import build_session

tfv1 = tf.compat.v1


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
