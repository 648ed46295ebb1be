"""The white-box threat model of Sec. 5 and 6: an L-infinity ball of radius epsilon around
the clean image, intersected with the valid image range.

An attacker is three verbs (as in MadryLab's ``robustness``): ``random_start``, ``step``
and ``project``, run by one graph-mode loop (``tf.while_loop``) that never
back-propagates through itself. Images live in the network's input space, [-1, 1], the
original's ``x * 2/255 - 1``; epsilon and step size are given on the 0..255 scale
("The value of epsilon is relative to the pixel intensity scale of 256", Sec. 6).
"""
import contextlib

import tensorflow as tf

from . import losses
from .precision import (DEFAULT_FP16_LOSS_SCALE, PRECISIONS, low_precision_logits, scaled_input_gradient,
                        zero_non_finite)

PIXEL_SCALE = 2.0 / 255.0      # 0..255 -> [-1, 1]
IMAGE_MIN, IMAGE_MAX = -1.0, 1.0


class AttackError(ValueError):
    """Attack settings that make no sense (one-line message)."""


def to_model_space(pixels):
    """uint8/float 0..255 BGR -> the networks' input scale [-1, 1] (the original's convention)."""
    return tf.cast(pixels, tf.float32) * PIXEL_SCALE - 1.0


def to_pixels(image):
    return (image + 1.0) / PIXEL_SCALE


def sample_targets(label, num_classes, seed=None):
    """Sec. 6: "the targeted class is selected uniformly at random" among the other
    classes: (label + U{1..K-1}) mod K."""
    offset = tf.random.uniform(tf.shape(label), minval=1, maxval=num_classes, dtype=tf.int32, seed=seed)
    return tf.math.floormod(label + offset, num_classes)


# Streams of the per-image draws: one per use, so a target and a start never share bits.
TARGET_STREAM, START_STREAM, FROM_CLEAN_STREAM = 0, 1, 2


def image_keys(clean):
    """[B] int64: a fingerprint of each image's content (farmhash of its 0..255 pixels).
    Keying the draws of an evaluation by content, not by position, makes them independent
    of the batch size, the order, skipped files and the number of Horovod ranks. The pixels
    are rounded back to uint8 first, so a last-bit difference of the float image (another
    device's arithmetic, -0.0) does not change the key. ``tf.fingerprint`` has a CPU kernel
    only: the keys are computed once per batch and soft placement puts them on the host."""
    pixels = tf.cast(tf.clip_by_value(tf.round(to_pixels(clean)), 0.0, 255.0), tf.uint8)
    return tf.bitcast(tf.fingerprint(pixels), tf.int64)


def per_image_uniform(keys, seed, stream, shape, minval, maxval, dtype=tf.float32):
    """One stateless uniform draw of ``shape`` per image, a function of (``seed``,
    ``stream``, the image's key) only. ``stream`` may be a tensor (a restart's number)."""
    first = tf.cast(seed, tf.int64) * 1000003 + tf.cast(stream, tf.int64)

    def draw(key):
        return tf.random.stateless_uniform(shape, tf.stack([first, key]), minval=minval, maxval=maxval,
                                           dtype=dtype)
    return tf.map_fn(draw, keys, fn_output_signature=dtype, name="per_image_draw")


class Attacker:
    """Base class. Subclasses override the verbs they change.

    Args:
        epsilon: L-inf radius on the 0..255 scale.
        step_size: per-iteration step on the 0..255 scale.
        num_iter: iterations (0: the clean image, see ``NoAttack``).
        targeted: targeted (the paper's protocol, default) or untargeted.
        loss: 'xent' (the paper) or 'cw' (Carlini-Wagner margin on the logits).
        prob_start_from_clean: Sec. 5: "20% of training batches use clean images to initialize
            PGD, and 80% use random points within the allowed epsilon"; drawn per batch (per
            image with ``per_image_seed``).
        seed: graph-level op seed for the random start and the targets (stateful draws per
            batch: training, where every step needs fresh ones).
        per_image_seed: evaluation: draw each image's target and random start from this seed
            and the image's content (stateless), so a figure does not depend on ``--batch``,
            the image order or the number of ranks, and every model and attack strength sees
            the same target for the same image. ``None``: the stateful draws above.
        precision: 'fp32' (default), 'fp16' or 'bf16': the network of the attack iterations
            runs in that precision on the same float32 variables (attacks/precision.py).
        loss_scale: fp16's per-image loss-scaling target (None: 2^10 for fp16, none otherwise;
            0: no scaling).
        xla: compile each attack iteration (forward, gradient, step, projection) with XLA.
    """
    name = "attack"
    uses_random_start = True

    def __init__(self, epsilon=16.0, step_size=1.0, num_iter=10, targeted=True, loss="xent",
                 prob_start_from_clean=0.0, seed=None, precision="fp32", loss_scale=None, xla=False,
                 per_image_seed=None):
        if epsilon < 0:
            raise AttackError("attack epsilon must be >= 0 (0..255 scale), got %g" % epsilon)
        if num_iter < 0:
            raise AttackError("attack iterations must be >= 0, got %d" % num_iter)
        if step_size <= 0 and num_iter > 0:
            raise AttackError("attack step size must be > 0 (0..255 scale), got %g" % step_size)
        if not 0.0 <= prob_start_from_clean <= 1.0:
            raise AttackError("prob_start_from_clean must be in [0, 1], got %g" % prob_start_from_clean)
        if loss not in losses.LOSSES:
            raise AttackError("unknown attack loss %r; valid: %s" % (loss, ", ".join(losses.LOSSES)))
        self.epsilon = float(epsilon)
        self.num_iter = int(num_iter)
        self.step_size_pixels = float(step_size)
        self.targeted = bool(targeted)
        self.loss = loss
        self.prob_start_from_clean = float(prob_start_from_clean)
        self.seed = seed
        if per_image_seed is not None and not (isinstance(per_image_seed, int) and 0 <= per_image_seed < 2 ** 31):
            raise AttackError("the attack seed must be an integer in [0, 2^31), got %r: pass a smaller --seed"
                              % (per_image_seed,))
        self.per_image_seed = per_image_seed
        if precision not in PRECISIONS:
            raise AttackError("unknown attack precision %r; valid: %s" % (precision, ", ".join(PRECISIONS)))
        if loss_scale is not None and not loss_scale >= 0:
            raise AttackError("attack loss scale must be >= 0 (0: none), got %g" % loss_scale)
        self.precision = precision
        self.loss_scale = (DEFAULT_FP16_LOSS_SCALE if precision == "fp16" else 0.0) if loss_scale is None \
            else float(loss_scale)
        self.xla = bool(xla)

    # ---- derived quantities in model space ----
    @property
    def eps(self):
        return self.epsilon * PIXEL_SCALE

    @property
    def step(self):
        """Sec. 6.1: step 1, "except for 10-iteration attacks where alpha is set to
        epsilon/10 = 1.6": the rule max(step, epsilon / iterations)."""
        n = max(self.num_iter, 1)
        return max(self.step_size_pixels, self.epsilon / n) * PIXEL_SCALE

    def describe(self):
        extra = "" if self.precision == "fp32" else ", %s" % self.precision
        extra += ", loss_scale=%g" % self.loss_scale if self.loss_scale else ""
        extra += ", xla" if self.xla else ""
        extra += ", per-image seed=%d" % self.per_image_seed if self.per_image_seed is not None else ""
        return "%s(eps=%g, step=%g, iter=%d, %s, loss=%s%s)" % (
            self.name, self.epsilon, self.step / PIXEL_SCALE, self.num_iter,
            "targeted" if self.targeted else "untargeted", self.loss, extra)

    # ---- the three verbs ----
    def draw_keys(self, clean):
        """The per-image keys of the draws (``image_keys``), or None for stateful draws.
        Computed once per batch and passed to ``targets`` and every restart's start."""
        return None if self.per_image_seed is None else image_keys(clean)

    def targets(self, clean, label, num_classes, keys=None):
        """The target class of each image (Sec. 6: uniform among the other classes), or the
        true label for an untargeted attack."""
        if not self.targeted:
            return label
        if self.per_image_seed is None:
            return sample_targets(label, num_classes, self.seed)
        keys = self.draw_keys(clean) if keys is None else keys
        offset = per_image_uniform(keys, self.per_image_seed, TARGET_STREAM, [], 1, num_classes, tf.int32)
        return tf.math.floormod(label + offset, num_classes)

    def random_start(self, clean, restart=0, keys=None):
        """Uniform in the epsilon ball (Madry et al.), or the clean image with probability
        ``prob_start_from_clean`` (Sec. 5; for the whole batch, or per image with
        ``per_image_seed``). ``restart`` numbers the starts of a restarted attack."""
        if not self.uses_random_start or self.eps == 0:
            return clean
        if self.per_image_seed is not None:
            keys = self.draw_keys(clean) if keys is None else keys
            streams = 3 * tf.cast(restart, tf.int64)
            noise = per_image_uniform(keys, self.per_image_seed, START_STREAM + streams, tf.shape(clean)[1:],
                                      -self.eps, self.eps)
            if self.prob_start_from_clean > 0:
                u = per_image_uniform(keys, self.per_image_seed, FROM_CLEAN_STREAM + streams, [], 0.0, 1.0)
                noise = noise * tf.reshape(tf.cast(u >= self.prob_start_from_clean, noise.dtype), [-1, 1, 1, 1])
        else:
            noise = tf.random.uniform(tf.shape(clean), -self.eps, self.eps, seed=self.seed)
            if self.prob_start_from_clean > 0:
                from_clean = tf.random.uniform([], seed=None if self.seed is None else self.seed + 1) \
                    < self.prob_start_from_clean
                noise = noise * (1.0 - tf.cast(from_clean, noise.dtype))
        return self.project(clean + noise, clean)

    def init_state(self, clean):
        """Extra loop state of the attacker (momentum for MI-FGSM)."""
        return tf.zeros([], clean.dtype)

    def step_fn(self, adv, grad, state):
        """Ascend the attack objective: x + alpha * sign(grad) (PGD, Madry et al.)."""
        return adv + self.step * tf.sign(grad), state

    def project(self, adv, clean):
        """Back into the epsilon ball around the clean image and into the valid range."""
        adv = tf.clip_by_value(adv, clean - self.eps, clean + self.eps)
        return tf.clip_by_value(adv, IMAGE_MIN, IMAGE_MAX)

    # ---- the loop ----
    def objective(self, logits, label, target):
        """Per-image value the attacker maximises."""
        return losses.attack_objective(self.loss, logits, label, target, self.targeted)

    def gradient(self, adv, label, target, model_fn, backoff):
        """(float32 gradient of the summed objective w.r.t. ``adv``, the network run in
        ``self.precision``; next ``backoff``). In low precision an image with a non-finite
        gradient gets 0; ``backoff`` [B]: per-image loss-scale reduction (attacks/precision.py)."""
        logits = low_precision_logits(model_fn, adv, PRECISIONS[self.precision])
        obj = self.objective(logits, label, target)
        if self.precision == "fp32":
            return tf.gradients(tf.reduce_sum(obj), adv)[0], backoff
        if self.loss_scale:
            return scaled_input_gradient(obj, logits, adv, self.loss_scale, backoff)
        return zero_non_finite(tf.gradients(tf.reduce_sum(obj), adv)[0])[0], backoff

    def perturb(self, clean, label, target, model_fn, restart=0, keys=None):
        """One run of the attack from one start (``restart``: which; ``keys``: the
        per-image draws' keys); returns the adversarial images."""
        if self.num_iter == 0 or self.eps == 0:
            return clean
        adv0 = self.random_start(clean, restart, keys)

        def body(i, adv, state, backoff):
            # XLA: every op of the iteration carries _XlaCompile (graph mode's jit_scope; the
            # gradient ops inherit it). tf.xla.experimental.compile of this body was tried
            # and gave wrong images in the training tower (TF 2.15.1, CPU): docs/PERFORMANCE.md.
            with tf.xla.experimental.jit_scope() if self.xla else contextlib.nullcontext():
                grad, backoff = self.gradient(adv, label, target, model_fn, backoff)
                adv, state = self.step_fn(adv, grad, state)
                adv = self.project(adv, clean)
            return i + 1, adv, state, backoff

        _, adv, _, _ = tf.compat.v1.while_loop(
            lambda i, adv, state, backoff: i < self.num_iter, body,
            [tf.constant(0), adv0, self.init_state(clean), tf.zeros(tf.shape(clean)[:1])],
            back_prop=False, parallel_iterations=1, name="attack_loop")
        return adv

    def attack(self, clean, label, model_fn, num_classes):
        """Adversarial images (through ``stop_gradient``) and the target labels.

        ``model_fn(images) -> logits`` must reuse existing variables with BN in inference
        mode (nets are built once outside the loop by the caller)."""
        with tf.name_scope(self.name):
            keys = self.draw_keys(clean)
            target = self.targets(clean, label, num_classes, keys)
            adv = self.perturb(clean, label, target, model_fn, keys=keys)
            return tf.stop_gradient(adv), target
