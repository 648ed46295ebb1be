"""FAB-T: the targeted Fast Adaptive Boundary attack (Croce and Hein, ICML 2020, "Minimally
distorted adversarial examples with a fast adaptive boundary attack"), AutoAttack's third
member. It looks for the smallest perturbation that crosses the decision boundary towards a
target class, and counts as a success at a radius epsilon if that perturbation is within it.

Per image and target t, f(x) = z_t(x) - z_y(x) is linearised at the current point x_k; the
hyperplane f(x_k) + <grad f(x_k), z - x_k> = 0 is where the linearised boundary lies. Both
x_k and the clean image x_0 are projected onto it (the minimal perturbation under the threat
model's norm, within the image range): d_k and d_0. The step biases towards the clean image:
    x_k+1 = clip((1 - a)(x_k + eta d_k) + a (x_0 + eta d_0)),  a = min(|d_k| / (|d_k| + |d_0|), a_max)
with overshoot eta = 1.05 and a_max = 0.1. When x_k+1 is adversarial, it is kept if it is the
closest so far, and the search steps back towards the clean image: x_k+1 <- x_0 + beta
(x_k+1 - x_0), beta = 0.9. The targets are the classes with the highest clean logits after
the true one (9, fewer when there are fewer classes), each tried on the images no earlier
target broke. AutoAttack's standard version has no random start, so neither has this one:
it draws no random numbers.
"""
import tensorflow as tf

from .apgd import ranked_classes
from .base import Attacker, unless_empty
from .precision import FP32
from .threat import IMAGE_MAX, IMAGE_MIN, AttackError

ETA = 1.05
BETA = 0.9
ALPHA_MAX = 0.1
PROJECTION_STEPS = 40


def _flat(x):
    return tf.reshape(x, [tf.shape(x)[0], -1])


def project_onto_hyperplane(norm, point, w, b):
    """The minimal perturbation d (rows of [B, D]) under ``norm`` with <w, point + d> = b and
    point + d inside [IMAGE_MIN, IMAGE_MAX]; where the box does not let the hyperplane be
    reached, the perturbation that comes closest. By the KKT conditions, d = clip(lambda w)
    for L2 and d = clip(tau sign(w)) for L-infinity (clip to the box around ``point``), with the
    scalar found by bisection on <w, d>, which grows with it."""
    lo, hi = IMAGE_MIN - point, IMAGE_MAX - point
    need = b - tf.reduce_sum(w * point, axis=1)
    w = w * tf.sign(need)[:, None]          # then <w, d> must rise to |need|
    need = tf.abs(need)

    if norm == "l2":
        def d_of(scale):
            return tf.clip_by_value(scale[:, None] * w, lo, hi)
        # the unclipped solution is the smallest scale; every coordinate saturates by the largest
        low = need / tf.maximum(tf.reduce_sum(w * w, axis=1), 1e-30)
        reach = tf.where(tf.abs(w) > 0, tf.maximum(tf.abs(lo), tf.abs(hi)) / tf.maximum(tf.abs(w), 1e-30), 0.0)
        high = tf.maximum(tf.reduce_max(reach, axis=1), low)
        geometric = True
    else:
        direction = tf.sign(w)

        def d_of(scale):
            return tf.clip_by_value(scale[:, None] * direction, lo, hi)
        low = need / tf.maximum(tf.reduce_sum(tf.abs(w), axis=1), 1e-30)
        high = tf.maximum(tf.reduce_max(tf.maximum(tf.abs(lo), tf.abs(hi)), axis=1), low)
        geometric = False

    def progress(scale):
        return tf.reduce_sum(w * d_of(scale), axis=1)

    reachable = progress(high) >= need
    lo_s, hi_s = tf.maximum(low, 1e-30), high
    for _ in range(PROJECTION_STEPS):
        mid = tf.sqrt(lo_s * hi_s) if geometric else 0.5 * (lo_s + hi_s)
        enough = progress(mid) >= need
        lo_s, hi_s = tf.where(enough, lo_s, mid), tf.where(enough, mid, hi_s)
    return d_of(tf.where(reachable, hi_s, high))


class FABAttacker(Attacker):
    """FAB-T under ``threat`` (L-inf or L2), ``num_iter`` iterations per target, ``targets``
    target classes. Counts misclassification within the radius (untargeted as a whole)."""
    name = "fab-t"

    def __init__(self, threat, num_iter=100, targets=9, precision=None, draws=None):
        super().__init__(threat, targeted=False, draws=draws)
        if num_iter < 1:
            raise AttackError("FAB-T iterations must be >= 1, got %d" % num_iter)
        if targets < 1:
            raise AttackError("FAB-T's number of target classes must be >= 1, got %d" % targets)
        self.num_iter = int(num_iter)
        self.num_targets = int(targets)
        self.precision = precision if precision is not None else FP32

    def describe(self):
        return "fab-t(eps=%g%s, iter=%d, targets=%d)" % (self.epsilon, self.threat.describe(), self.num_iter,
                                                         self.num_targets)

    def queries_per_run(self):
        """Network evaluations of one run on one image: a gradient and a prediction per
        iteration."""
        return 2 * self.num_iter

    def run(self, clean, label, target, model_fn):
        """One run towards ``target`` -> (closest adversarial image found, its distance on the
        0..255 scale (inf: none), the images' shape kept)."""
        threat = self.threat
        x0 = _flat(clean)
        static = clean.shape.as_list()[1:]
        if None in static:
            raise AttackError("FAB-T needs images of a known size, got %s" % (clean.shape,))
        shape = [-1] + static
        batch = tf.shape(clean)[:1]

        def boundary(logits):
            onehot_t = tf.one_hot(target, tf.shape(logits)[1])
            onehot_y = tf.one_hot(label, tf.shape(logits)[1])
            return tf.reduce_sum(logits * (onehot_t - onehot_y), axis=1)     # z_t - z_y

        def body(i, x, best, best_dist):
            logits, grad = self.precision.logits_and_gradient(boundary, model_fn, x)
            f = boundary(logits)
            w = _flat(grad)
            xf = _flat(x)
            b = -f + tf.reduce_sum(w * xf, axis=1)
            d1 = project_onto_hyperplane(threat.norm, xf, w, b)
            d2 = project_onto_hyperplane(threat.norm, x0, w, b)
            a1 = tf.maximum(self._norm(d1), 1e-8)
            a2 = tf.maximum(self._norm(d2), 1e-8)
            alpha = tf.clip_by_value(a1 / (a1 + a2), 0.0, ALPHA_MAX)[:, None]
            nxt = tf.clip_by_value((1.0 - alpha) * (xf + ETA * d1) + alpha * (x0 + ETA * d2), IMAGE_MIN, IMAGE_MAX)
            nxt_img = tf.reshape(nxt, shape)
            wrong = tf.not_equal(tf.argmax(model_fn(nxt_img), axis=1, output_type=tf.int32), label)
            dist = threat.distance(nxt_img, clean)
            closer = tf.logical_and(wrong, dist < best_dist)
            keep = tf.broadcast_to(tf.reshape(closer, [-1] + [1] * len(static)), tf.shape(best))
            best = tf.where(keep, nxt_img, best)
            best_dist = tf.where(closer, dist, best_dist)
            # adversarial: step back towards the clean image to look for a closer crossing
            nxt = tf.where(wrong[:, None], x0 + BETA * (nxt - x0), nxt)
            return i + 1, tf.reshape(nxt, shape), best, best_dist

        _, _, best, best_dist = tf.compat.v1.while_loop(
            lambda i, *_: i < self.num_iter, body, [tf.constant(0), clean, clean, tf.fill(batch, float("inf"))],
            back_prop=False, parallel_iterations=1, name="fab_loop")
        return best, best_dist

    def _norm(self, d):
        if self.threat.norm == "l2":
            return tf.sqrt(tf.reduce_sum(tf.square(d), axis=1))
        return tf.reduce_max(tf.abs(d), axis=1)

    def attack_info(self, clean, label, model_fn, num_classes):
        """-> (adversarial images, labels, network evaluations per image): a run per target on
        the images still standing; an image counts as broken when a run found a misclassifying
        point within the radius (a tolerance of 1e-4 of a pixel for float rounding)."""
        if num_classes < 2:
            raise AttackError("FAB-T needs a model with at least 2 classes, got %d" % num_classes)
        targets = max(1, min(self.num_targets, num_classes - 1))
        with tf.name_scope(self.name):
            logits = tf.cast(model_fn(clean), tf.float32)
            broken = tf.not_equal(tf.argmax(logits, axis=1, output_type=tf.int32), label)
            order = ranked_classes(logits)

            def body(t, adv, broken, queries):
                idx = tf.where(tf.logical_not(broken))[:, 0]
                target = tf.gather(tf.gather(order, t + 1, axis=1), idx)
                sub_clean = tf.gather(clean, idx)
                x, dist = unless_empty(tf.size(idx), lambda: self.run(sub_clean, tf.gather(label, idx), target,
                                                                      model_fn),
                                       lambda: (sub_clean, tf.fill(tf.shape(idx), float("inf"))))
                ok = dist <= self.epsilon + 1e-4
                # inside the ball exactly (the tolerance is float rounding's)
                x = self.threat.project(x, sub_clean)
                x = tf.where(tf.broadcast_to(tf.reshape(ok, [-1, 1, 1, 1]), tf.shape(x)), x, sub_clean)
                return (t + 1, tf.tensor_scatter_nd_update(adv, idx[:, None], x),
                        tf.tensor_scatter_nd_update(broken, idx[:, None], ok),
                        tf.tensor_scatter_nd_add(queries, idx[:, None],
                                                 tf.fill(tf.shape(idx), float(self.queries_per_run()))))

            _, adv, _, queries = tf.compat.v1.while_loop(
                lambda t, *_: t < targets, body, [tf.constant(0), clean, broken, tf.ones(tf.shape(label))],
                back_prop=False, parallel_iterations=1, name="fab_targets")
            return tf.stop_gradient(adv), label, queries

    def attack(self, clean, label, model_fn, num_classes):
        adv, target, _ = self.attack_info(clean, label, model_fn, num_classes)
        return adv, target
