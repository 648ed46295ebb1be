"""The iterative gradient attacks: PGD (Sec. 5 and 6.1) and those of footnote 4 (FGSM,
iterative FGSM and its momentum variant), under either threat model.

One loop runs them all: from a start (a random point of the ball, or the clean image), each
iteration takes the gradient of the attack objective, a step along the threat model's
steepest-ascent direction (the gradient's sign for L-infinity, the normalised gradient for
L2), and the projection back onto the ball and the image range. The loop is a graph-mode
``tf.while_loop`` that never back-propagates through itself, so it can run inside the
training tower.
"""
import tensorflow as tf

from . import losses
from .base import Attacker
from .precision import FP32
from .threat import PIXEL_SCALE, AttackError


class PGDAttacker(Attacker):
    """Projected gradient descent (Madry et al.): random start in the epsilon ball, then
    ``num_iter`` steps, each followed by the projection.

    Training (Sec. 5): epsilon 16, step 1, 30 iterations, 20% of batches from the clean image.
    Evaluation (Sec. 6.1): random start always, step 1 (1.6 for 10 iterations).

    Args:
        threat: a threat model (attacks/threat.py).
        num_iter: iterations (>= 1).
        step_size: per-iteration step on the 0..255 scale; the step taken is
            max(step_size, epsilon / num_iter) (Sec. 6.1).
        loss: an objective of attacks/losses.py ('xent', the paper's; 'cw'; 'dlr').
        targeted: the paper's protocol (default) or untargeted.
        draws: where targets and starts come from (attacks/draws.py).
        prob_start_from_clean: Sec. 5: "20% of training batches use clean images to initialize
            PGD, and 80% use random points within the allowed epsilon" (per batch in training,
            per image with per-image draws).
        precision: the network of the iterations in fp32, fp16 or bf16, with XLA or not
            (attacks/precision.py).
    """
    name = "pgd"
    uses_random_start = True

    def __init__(self, threat, num_iter, step_size=1.0, loss="xent", targeted=True, draws=None,
                 prob_start_from_clean=0.0, precision=None):
        super().__init__(threat, targeted, draws)
        if num_iter < 1:
            raise AttackError("attack iterations must be >= 1, got %d (0 is the clean image)" % num_iter)
        step_size = float(step_size)
        if not step_size > 0 or step_size == float("inf"):
            raise AttackError("attack step size must be a finite number > 0 (0..255 scale), got %g" % step_size)
        if not 0.0 <= prob_start_from_clean <= 1.0:
            raise AttackError("prob_start_from_clean must be in [0, 1], got %g" % prob_start_from_clean)
        if loss not in losses.LOSSES:
            raise AttackError("unknown attack loss %r; valid: %s" % (loss, ", ".join(losses.LOSSES)))
        self.num_iter = int(num_iter)
        self.step_size_pixels = step_size
        self.loss = loss
        self.prob_start_from_clean = float(prob_start_from_clean)
        self.precision = precision if precision is not None else FP32

    @property
    def step(self):
        """Sec. 6.1: step 1, "except for 10-iteration attacks where alpha is set to
        epsilon/10 = 1.6": the rule max(step, epsilon / iterations), in model space."""
        return max(self.step_size_pixels, self.epsilon / self.num_iter) * PIXEL_SCALE

    def describe(self):
        return "%s(eps=%g%s, step=%g, iter=%d, %s, loss=%s%s%s)" % (
            self.name, self.epsilon, self.threat.describe(), self.step / PIXEL_SCALE, self.num_iter,
            "targeted" if self.targeted else "untargeted", self.loss, self.precision.describe(),
            self.draws.describe())

    # ---- the verbs, from the threat model ----
    def random_start(self, clean, restart=0, keys=None):
        """Uniform in the ball, or the clean image with probability ``prob_start_from_clean``.
        ``restart`` numbers the starts of a restarted attack (attacks/restarts.py)."""
        if not self.uses_random_start or self.eps == 0:
            return clean
        if self.draws.per_image and keys is None:
            keys = self.draws.keys(clean)
        noise = self.draws.start_noise(self.threat, clean, keys, restart)
        if self.prob_start_from_clean > 0:
            from_clean = self.draws.from_clean(clean, keys, self.prob_start_from_clean, restart)
            noise = noise * tf.reshape(1.0 - from_clean, [-1] + [1] * (clean.shape.ndims - 1))
        return self.threat.project(clean + noise, clean)

    def init_state(self, clean):
        """Extra loop state of the attacker (momentum for MI-FGSM)."""
        return tf.zeros([], clean.dtype)

    def step_fn(self, adv, grad, state):
        """Ascend the attack objective: x + alpha * direction(grad) (PGD, Madry et al.)."""
        return self.threat.step(adv, grad, self.step), state

    def objective(self, logits, label, target):
        """Per-image value the attacker maximises."""
        return losses.attack_objective(self.loss, logits, label, target, self.targeted)

    def gradient(self, adv, label, target, model_fn, backoff):
        """(float32 gradient of the summed objective w.r.t. ``adv``, the network run in this
        attack's precision; next ``backoff``): attacks/precision.py."""
        return self.precision.input_gradient(lambda logits: self.objective(logits, label, target), model_fn, adv,
                                             backoff)

    # ---- the loop ----
    def perturb(self, clean, label, target, model_fn, restart=0, keys=None):
        """One run of the attack from one start (``restart``: which; ``keys``: the
        per-image draws' keys); returns the adversarial images."""
        if self.eps == 0:
            return clean
        adv0 = self.random_start(clean, restart, keys)

        def body(i, adv, state, backoff):
            with self.precision.scope():
                grad, backoff = self.gradient(adv, label, target, model_fn, backoff)
                adv, state = self.step_fn(adv, grad, state)
                adv = self.threat.project(adv, clean)
            return i + 1, adv, state, backoff

        _, adv, _, _ = tf.compat.v1.while_loop(
            lambda i, adv, state, backoff: i < self.num_iter, body,
            [tf.constant(0), adv0, self.init_state(clean), tf.zeros(tf.shape(clean)[:1])],
            back_prop=False, parallel_iterations=1, name="attack_loop")
        return adv

    def attack(self, clean, label, model_fn, num_classes):
        with tf.name_scope(self.name):
            keys = self.draws.keys(clean)
            target = self.targets(clean, label, num_classes, keys)
            adv = self.perturb(clean, label, target, model_fn, keys=keys)
            return tf.stop_gradient(adv), target


class IFGSMAttacker(PGDAttacker):
    """Iterative FGSM (Kurakin et al. [12]): PGD without the random start."""
    name = "ifgsm"
    uses_random_start = False


class FGSMAttacker(IFGSMAttacker):
    """FGSM (Goodfellow et al. [6]): one step of size epsilon from the clean image."""
    name = "fgsm"

    def __init__(self, threat, num_iter=1, step_size=None, **kw):
        super().__init__(threat, 1, step_size=1.0, **kw)

    @property
    def step(self):
        return self.eps


class MIFGSMAttacker(IFGSMAttacker):
    """Momentum iterative FGSM (Dong et al. [3]): g <- mu g + grad / ||grad||_1 (per image),
    x <- x + alpha direction(g), with decay mu = 1.0."""
    name = "mifgsm"

    def __init__(self, *args, decay=1.0, **kw):
        super().__init__(*args, **kw)
        self.decay = float(decay)

    def init_state(self, clean):
        return tf.zeros_like(clean)

    def step_fn(self, adv, grad, momentum):
        l1 = tf.reduce_mean(tf.abs(grad), axis=list(range(1, grad.shape.ndims)), keepdims=True)
        momentum = self.decay * momentum + grad / tf.maximum(l1, 1e-12)
        return self.threat.step(adv, momentum, self.step), momentum
