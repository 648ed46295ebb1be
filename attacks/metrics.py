"""Per-image metrics of the original release, computed in the graph so that evaluation can
sum them across Horovod ranks: top-1 error, top-5 error and attack success rate
("prediction == target" for targeted attacks; "prediction != label" for untargeted ones).
Sec. 6: accuracy is measured "regardless of its targets"."""
import tensorflow as tf

METRICS = ("top1_error", "top5_error", "attack_success")


def per_image_metrics(logits, label, target, targeted=True):
    """dict name -> float32 [B] of 0/1 values."""
    logits = tf.cast(logits, tf.float32)
    k5 = min(5, logits.shape.as_list()[-1] or 5)
    top1 = tf.cast(tf.logical_not(tf.nn.in_top_k(predictions=logits, targets=label, k=1)), tf.float32)
    top5 = tf.cast(tf.logical_not(tf.nn.in_top_k(predictions=logits, targets=label, k=k5)), tf.float32)
    pred = tf.argmax(logits, axis=1, output_type=tf.int32)
    success = tf.equal(pred, target) if targeted else tf.not_equal(pred, label)
    return {
        "top1_error": tf.identity(top1, name="top1_error"),
        "top5_error": tf.identity(top5, name="top5_error"),
        "attack_success": tf.identity(tf.cast(success, tf.float32), name="attack_success"),
    }
