"""The white-box threat model of Sec. 5 and 6: an L-infinity ball of radius epsilon around
the clean image, intersected with the valid image range.

An attacker is three verbs (as in MadryLab's ``robustness``): ``random_start``, ``step``
and ``project``, run by one graph-mode loop (``tf.while_loop``) that never
back-propagates through itself. Images live in the network's input space, [-1, 1], the
original's ``x * 2/255 - 1``; epsilon and step size are given on the 0..255 scale
("The value of epsilon is relative to the pixel intensity scale of 256", Sec. 6).
"""
import tensorflow as tf

from . import losses

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


class Attacker:
    """Base class. Subclasses override the verbs they change.

    Args:
        epsilon: L-inf radius on the 0..255 scale.
        step_size: per-iteration step on the 0..255 scale.
        num_iter: iterations (0: the clean image, see ``NoAttack``).
        targeted: targeted (the paper's protocol, default) or untargeted.
        loss: 'xent' (the paper) or 'cw' (Carlini-Wagner margin on the logits).
        prob_start_from_clean: Sec. 5: "20% of training batches use clean images to initialize
            PGD, and 80% use random points within the allowed epsilon"; drawn per batch.
        seed: graph-level op seed for the random start and the targets.
    """
    name = "attack"
    uses_random_start = True

    def __init__(self, epsilon=16.0, step_size=1.0, num_iter=10, targeted=True, loss="xent",
                 prob_start_from_clean=0.0, seed=None):
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
        return "%s(eps=%g, step=%g, iter=%d, %s, loss=%s)" % (
            self.name, self.epsilon, self.step / PIXEL_SCALE, self.num_iter,
            "targeted" if self.targeted else "untargeted", self.loss)

    # ---- the three verbs ----
    def random_start(self, clean):
        """Uniform in the epsilon ball (Madry et al.), or the clean image with probability
        ``prob_start_from_clean`` for the whole batch (Sec. 5)."""
        if not self.uses_random_start or self.eps == 0:
            return clean
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

    def perturb(self, clean, label, target, model_fn):
        """One run of the attack from one start; returns the adversarial images."""
        if self.num_iter == 0 or self.eps == 0:
            return clean
        adv0 = self.random_start(clean)

        def body(i, adv, state):
            logits = model_fn(adv)
            obj = tf.reduce_sum(self.objective(logits, label, target))
            grad = tf.gradients(obj, adv)[0]
            adv, state = self.step_fn(adv, grad, state)
            return i + 1, self.project(adv, clean), state

        _, adv, _ = tf.compat.v1.while_loop(
            lambda i, adv, state: i < self.num_iter, body,
            [tf.constant(0), adv0, self.init_state(clean)],
            back_prop=False, parallel_iterations=1, name="attack_loop")
        return adv

    def attack(self, clean, label, model_fn, num_classes):
        """Adversarial images (through ``stop_gradient``) and the target labels.

        ``model_fn(images) -> logits`` must reuse existing variables with BN in inference
        mode (nets are built once outside the loop by the caller)."""
        with tf.name_scope(self.name):
            target = sample_targets(label, num_classes, self.seed) if self.targeted else label
            adv = self.perturb(clean, label, target, model_fn)
            return tf.stop_gradient(adv), target
