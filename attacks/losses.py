"""Attack objectives, each a per-image value the attacker maximises.

xent: the paper's cross-entropy (Sec. 5: "a gradient descent step in the loss function ...
      based on an adversarially selected output target"): targeted maximises -CE(target),
      untargeted maximises CE(label).
cw:   the Carlini-Wagner margin on the logits: targeted maximises z_t - max_{j != t} z_j,
      untargeted maximises max_{j != y} z_j - z_y (unclipped, so PGD keeps pushing).
"""
import tensorflow as tf

LOSSES = ("xent", "cw")


def _margin(logits, cls):
    """z_cls - max_{j != cls} z_j."""
    num_classes = tf.shape(logits)[1]
    onehot = tf.one_hot(cls, num_classes, dtype=logits.dtype)
    own = tf.reduce_sum(logits * onehot, axis=1)
    others = tf.reduce_max(tf.where(onehot > 0, tf.fill(tf.shape(logits), logits.dtype.min), logits), axis=1)
    return own - others


def attack_objective(loss, logits, label, target, targeted):
    logits = tf.cast(logits, tf.float32)
    if loss == "xent":
        if targeted:
            return -tf.nn.sparse_softmax_cross_entropy_with_logits(labels=target, logits=logits)
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=label, logits=logits)
    if loss == "cw":
        if targeted:
            return _margin(logits, target)
        return -_margin(logits, label)
    raise ValueError("unknown attack loss %r; valid: %s" % (loss, ", ".join(LOSSES)))
