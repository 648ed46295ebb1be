"""Per-image metrics of the original release, computed in the graph so that evaluation can
sum them across Horovod ranks: top-1 error, top-5 error and attack success rate
("prediction == target" for targeted attacks; "prediction != label" for untargeted ones).
Sec. 6: accuracy is measured "regardless of its targets".

An image counts as correct only when its label's logit is strictly above every other class's
(top-1) or at most k - 1 others reach it (top-k): a tie at the boundary is an error, so a
network with constant logits scores 100% top-1 error and an attack that drives the logits to a
tie is counted as a success. Non-finite logits are errors too, and are counted
(``non_finite_logits``), since a NaN compares false with everything.
"""
import tensorflow as tf

METRICS = ("top1_error", "top5_error", "attack_success", "non_finite_logits")
# the rates a table shows (the count of non-finite logits goes to the JSON)
RATES = METRICS[:3]


def _rivals(logits, cls):
    """[B] how many classes other than ``cls`` score at least as high as it."""
    own = tf.reduce_sum(logits * tf.one_hot(cls, tf.shape(logits)[1], dtype=logits.dtype), axis=1, keepdims=True)
    at_least = tf.cast(logits >= own, tf.int32)
    return tf.reduce_sum(at_least, axis=1) - 1           # minus the class itself


def per_image_metrics(logits, label, target, targeted=True):
    """dict name -> float32 [B] of 0/1 values."""
    logits = tf.cast(logits, tf.float32)
    k5 = min(5, logits.shape.as_list()[-1] or 5)
    finite = tf.reduce_all(tf.math.is_finite(logits), axis=1)
    rivals = _rivals(logits, label)
    top1_correct = tf.logical_and(finite, tf.equal(rivals, 0))
    top5_correct = tf.logical_and(finite, rivals < k5)
    if targeted:
        success = tf.logical_and(finite, tf.equal(_rivals(logits, target), 0))   # the target strictly on top
    else:
        success = tf.logical_not(top1_correct)
    return {
        "top1_error": tf.identity(1.0 - tf.cast(top1_correct, tf.float32), name="top1_error"),
        "top5_error": tf.identity(1.0 - tf.cast(top5_correct, tf.float32), name="top5_error"),
        "attack_success": tf.identity(tf.cast(success, tf.float32), name="attack_success"),
        "non_finite_logits": tf.identity(1.0 - tf.cast(finite, tf.float32), name="non_finite_logits"),
    }
