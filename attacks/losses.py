"""Attack objectives, each a per-image value the attacker maximises.

xent:  the paper's cross-entropy (Sec. 5: "a gradient descent step in the loss function ...
       based on an adversarially selected output target"): targeted maximises -CE(target),
       untargeted maximises CE(label).
cw:    the Carlini-Wagner margin on the logits: targeted maximises z_t - max_{j != t} z_j,
       untargeted maximises max_{j != y} z_j - z_y (unclipped, so PGD keeps pushing).
dlr:   the Difference of Logits Ratio of Croce and Hein (ICML 2020, Eq. 6), which is
       invariant to shifts and rescalings of the logits, so a network cannot hide behind
       saturated softmax outputs: untargeted -(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3);
       targeted (Eq. 7) -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2), pi the logits sorted in
       decreasing order.
"""
import tensorflow as tf

LOSSES = ("xent", "cw", "dlr")
# keeps the DLR ratio finite when the top logits tie (AutoAttack's reference uses the same)
DLR_EPSILON = 1e-12


def _true_and_best_other(logits, cls):
    """(z_cls, max_{j != cls} z_j)."""
    num_classes = tf.shape(logits)[1]
    onehot = tf.one_hot(cls, num_classes, dtype=logits.dtype)
    own = tf.reduce_sum(logits * onehot, axis=1)
    others = tf.reduce_max(tf.where(onehot > 0, tf.fill(tf.shape(logits), logits.dtype.min), logits), axis=1)
    return own, others


def _margin(logits, cls):
    """z_cls - max_{j != cls} z_j."""
    own, others = _true_and_best_other(logits, cls)
    return own - others


def dlr(logits, label, target=None):
    """DLR loss (untargeted with ``target`` None, else targeted); needs at least 3 classes
    (4 targeted)."""
    top = tf.math.top_k(logits, k=4 if target is not None else 3, sorted=True).values
    own, others = _true_and_best_other(logits, label)
    if target is None:
        return -(own - others) / (top[:, 0] - top[:, 2] + DLR_EPSILON)
    z_t = tf.reduce_sum(logits * tf.one_hot(target, tf.shape(logits)[1], dtype=logits.dtype), axis=1)
    return -(own - z_t) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + DLR_EPSILON)


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
    if loss == "dlr":
        return dlr(logits, label, target if targeted else None)
    raise ValueError("unknown attack loss %r; valid: %s" % (loss, ", ".join(LOSSES)))


def margin(logits, label):
    """z_y - max_{j != y} z_j: positive while the image is classified correctly (Square's
    untargeted loss, which it decreases)."""
    return _margin(tf.cast(logits, tf.float32), label)
