"""The attackers: PGD (Sec. 5 and 6.1) and those of footnote 4 (FGSM, iterative FGSM and
its momentum variant), a no-op for clean evaluation, and PGD with random restarts."""
import tensorflow as tf

from .base import Attacker, AttackError


class PGDAttacker(Attacker):
    """Projected gradient descent (Madry et al.): random start in the epsilon ball, then
    ``num_iter`` signed-gradient steps, each followed by the projection.

    Training (Sec. 5): epsilon 16, step 1, 30 iterations, 20% of batches from the clean image.
    Evaluation (Sec. 6.1): random start always, step 1 (1.6 for 10 iterations)."""
    name = "pgd"


class IFGSMAttacker(Attacker):
    """Iterative FGSM (Kurakin et al. [12]): PGD without the random start."""
    name = "ifgsm"
    uses_random_start = False


class FGSMAttacker(Attacker):
    """FGSM (Goodfellow et al. [6]): one step of size epsilon from the clean image."""
    name = "fgsm"
    uses_random_start = False

    def __init__(self, epsilon=16.0, step_size=None, num_iter=1, **kw):
        super().__init__(epsilon=epsilon, step_size=epsilon if epsilon > 0 else 1.0, num_iter=1, **kw)

    @property
    def step(self):
        return self.eps


class MIFGSMAttacker(IFGSMAttacker):
    """Momentum iterative FGSM (Dong et al. [3]): g <- mu g + grad / ||grad||_1 (per image),
    x <- x + alpha sign(g), with decay mu = 1.0."""
    name = "mifgsm"

    def __init__(self, *args, decay=1.0, **kw):
        super().__init__(*args, **kw)
        self.decay = float(decay)

    def init_state(self, clean):
        return tf.zeros_like(clean)

    def step_fn(self, adv, grad, momentum):
        l1 = tf.reduce_mean(tf.abs(grad), axis=[1, 2, 3], keepdims=True)
        momentum = self.decay * momentum + grad / tf.maximum(l1, 1e-12)
        return adv + self.step * tf.sign(momentum), momentum


class NoAttack(Attacker):
    """The clean image (``--attack-iter 0``)."""
    name = "clean"

    def __init__(self, targeted=True, seed=None, per_image_seed=None, **kw):
        super().__init__(epsilon=0.0, step_size=1.0, num_iter=0, targeted=targeted, seed=seed,
                         per_image_seed=per_image_seed)

    def describe(self):
        return "clean"


class RestartAttacker:
    """Runs ``base`` from ``restarts`` random starts and keeps, per image, the most
    successful one: a successful attack first, then the highest objective. An independent
    evaluation of the released models found that restarts lower robust accuracy by about
    5 points, so this is the stronger evaluation."""

    def __init__(self, base, restarts):
        if restarts < 1:
            raise AttackError("--restarts must be >= 1, got %d" % restarts)
        self.base = base
        self.restarts = int(restarts)
        self.name = base.name
        self.targeted = base.targeted
        self.num_iter = base.num_iter
        self.epsilon = base.epsilon

    def describe(self):
        return "%s x %d restarts" % (self.base.describe(), self.restarts)

    def _score(self, adv, label, target, model_fn):
        logits = model_fn(adv)
        pred = tf.argmax(logits, axis=1, output_type=tf.int32)
        success = tf.equal(pred, target) if self.targeted else tf.not_equal(pred, label)
        return tf.cast(success, tf.float32) * 1e6 + self.base.objective(logits, label, target)

    def attack(self, clean, label, model_fn, num_classes):
        base = self.base
        if self.restarts == 1 or not base.uses_random_start:
            return base.attack(clean, label, model_fn, num_classes)
        with tf.name_scope(base.name + "_restarts"):
            keys = base.draw_keys(clean)            # once, outside the loop
            target = base.targets(clean, label, num_classes, keys)

            def body(r, best_adv, best_score):
                adv = base.perturb(clean, label, target, model_fn, restart=r, keys=keys)
                score = self._score(adv, label, target, model_fn)
                better = score > best_score
                keep = tf.reshape(better, [-1, 1, 1, 1])
                return (r + 1, tf.where(tf.broadcast_to(keep, tf.shape(adv)), adv, best_adv),
                        tf.where(better, score, best_score))

            init_score = tf.fill(tf.shape(label), tf.float32.min)
            _, adv, _ = tf.compat.v1.while_loop(
                lambda r, a, s: r < self.restarts, body, [tf.constant(0), clean, init_score],
                back_prop=False, parallel_iterations=1, name="restart_loop")
            return tf.stop_gradient(adv), target


ATTACKERS = {
    "pgd": PGDAttacker,
    "fgsm": FGSMAttacker,
    "ifgsm": IFGSMAttacker,
    "mifgsm": MIFGSMAttacker,
}


def make_attacker(kind="pgd", num_iter=10, epsilon=16.0, step_size=1.0, targeted=True, loss="xent",
                  prob_start_from_clean=0.0, restarts=1, seed=None, precision="fp32", loss_scale=None, xla=False,
                  per_image_seed=None):
    """The attacker for a command line: ``num_iter == 0`` is the clean evaluation.
    ``precision``, ``loss_scale``, ``xla``: the attack iterations (attacks/precision.py)."""
    if kind not in ATTACKERS:
        raise AttackError("unknown attack %r; valid: %s" % (kind, ", ".join(ATTACKERS)))
    if num_iter == 0:
        return NoAttack(targeted=targeted, seed=seed, per_image_seed=per_image_seed)
    if num_iter < 0:
        raise AttackError("attack iterations must be >= 0, got %d" % num_iter)
    if step_size is not None and epsilon > 0 and step_size > epsilon:
        raise AttackError("attack step size %g is larger than epsilon %g: use a step <= epsilon" % (
            step_size, epsilon))
    attacker = ATTACKERS[kind](epsilon=epsilon, step_size=step_size, num_iter=num_iter, targeted=targeted,
                               loss=loss, prob_start_from_clean=prob_start_from_clean, seed=seed,
                               precision=precision, loss_scale=loss_scale, xla=xla, per_image_seed=per_image_seed)
    if restarts != 1:
        return RestartAttacker(attacker, restarts)
    return attacker
