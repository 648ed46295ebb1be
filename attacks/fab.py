"""FAB: the Fast Adaptive Boundary attack (Croce and Hein, ICML 2020, "Minimally distorted
adversarial examples with a fast adaptive boundary attack"): FAB-T, its targeted version, is
AutoAttack's third member, and untargeted FAB with 5 restarts is in AutoAttack's "plus"
version. It looks for the smallest perturbation that crosses the decision boundary, and
counts as a success at a radius epsilon if that perturbation is within it.

Per image, f_j(x) = z_j(x) - z_y(x) is linearised at the current point x_k, for the target
class j = t (FAB-T) or, untargeted, for the class whose linearised boundary is nearest,
argmin_j |f_j(x_k)| / ||grad f_j(x_k)||_* (the dual norm: L1 for L-infinity, L2 for L2; Eq. 7
of the paper: every class's gradient, K per iteration, as the authors' code computes them).
The hyperplane f(x_k) + <grad f(x_k), z - x_k> = 0 is where the linearised boundary lies. Both
x_k and the clean image x_0 are projected onto it (the minimal perturbation under the threat
model's norm, within the image range): d_k and d_0. The step biases towards the clean image:
    x_k+1 = clip((1 - a)(x_k + eta d_k) + a (x_0 + eta d_0)),  a = min(|d_k| / (|d_k| + |d_0|), a_max)
with overshoot eta = 1.05 and a_max = 0.1. When x_k+1 is adversarial, it is kept if it is the
closest so far, and the search steps back towards the clean image: x_k+1 <- x_0 + beta
(x_k+1 - x_0), beta = 0.9. The targets are the classes with the highest clean logits after
the true one (9, fewer when there are fewer classes), each tried on the images no earlier
target broke. Restart 0 starts at the clean image (AutoAttack's versions run FAB-T once);
restart r > 0 from a random point at half the radius, x_0 + epsilon/2 t / ||t|| (t uniform in
[-1, 1] for L-infinity, normal for L2; the authors' ``use_rand_start``), drawn per image.
"""
import tensorflow as tf

from .apgd import default_targets, ranked_classes
from .base import Attacker, unless_empty
from .draws import START_DIRECTION_STREAM, START_STREAM, STREAMS_PER_RESTART, Draws
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
    """FAB under ``threat`` (L-inf or L2), ``num_iter`` iterations per run; ``targeted``
    (FAB-T): ``targets`` target classes, each with ``restarts`` runs; untargeted: ``restarts``
    runs. Counts misclassification within the radius (untargeted as a whole)."""
    own_clean_prediction = True

    def __init__(self, threat, num_iter=100, targets=9, precision=None, draws=None, restarts=1, targeted=True):
        super().__init__(threat, targeted=False, draws=draws if draws is not None else Draws(0, per_image=True))
        if num_iter < 1:
            raise AttackError("FAB iterations must be >= 1, got %d" % num_iter)
        if targeted and targets < 1:
            raise AttackError("FAB-T's number of target classes must be >= 1, got %d" % targets)
        if restarts < 1:
            raise AttackError("FAB restarts must be >= 1, got %d" % restarts)
        self.num_iter = int(num_iter)
        self.num_targets = int(targets) if targeted else 0
        self.restarts = int(restarts)
        self.precision = precision if precision is not None else FP32
        self.name = "fab-t" if targeted else "fab"

    def describe(self):
        what = ", targets=%d" % self.num_targets if self.num_targets else ""
        restarts = ", restarts=%d" % self.restarts if self.restarts > 1 else ""
        return "%s(eps=%g%s, iter=%d%s%s%s)" % (self.name, self.epsilon, self.threat.describe(), self.num_iter, what,
                                               restarts, self.precision.describe())

    def queries_per_run(self, num_classes=None):
        """Network evaluations of one run on one image: a gradient and a prediction per
        iteration (untargeted: a gradient of every one of the ``num_classes`` logits)."""
        grads = num_classes if not self.num_targets and num_classes else 1
        return (grads + 1) * self.num_iter

    def random_start(self, clean, keys, restart):
        """Restart r > 0: x_0 + (epsilon / 2) t / ||t|| within the range (see the module)."""
        streams = STREAMS_PER_RESTART * tf.cast(restart, tf.int64)
        rank = clean.shape.ndims
        axes = list(range(1, rank))
        if self.threat.norm == "linf":
            t = self.draws.uniform(keys, START_STREAM + streams, clean, None, -1.0, 1.0)
            size = tf.reduce_max(tf.abs(t), axis=axes, keepdims=True)
        else:
            t = self.draws.normal(keys, START_DIRECTION_STREAM + streams, clean, None)
            size = tf.sqrt(tf.reduce_sum(tf.square(t), axis=axes, keepdims=True))
        return tf.clip_by_value(clean + 0.5 * self.threat.eps * t / tf.maximum(size, 1e-12), IMAGE_MIN, IMAGE_MAX)

    def _linearised(self, x, label, target, model_fn, num_classes):
        """(f, grad f) [B], [B, ...] of the boundary this iteration linearises (see the module)."""
        if target is not None:
            def boundary(logits):
                onehot_t = tf.one_hot(target, tf.shape(logits)[1])
                onehot_y = tf.one_hot(label, tf.shape(logits)[1])
                return tf.reduce_sum(logits * (onehot_t - onehot_y), axis=1)     # z_t - z_y
            logits, grad = self.precision.logits_and_gradient(boundary, model_fn, x)
            return boundary(logits), grad
        logits, jac = self.precision.logits_and_jacobian(model_fn, x, num_classes)     # [B, K], [B, K, ...]
        onehot_y = tf.one_hot(label, num_classes)
        f = logits - tf.reduce_sum(logits * onehot_y, axis=1, keepdims=True)         # z_j - z_y
        g = jac - tf.gather(jac, label, axis=1, batch_dims=1)[:, None]
        flat = tf.reshape(g, [tf.shape(g)[0], num_classes, -1])
        dual = tf.reduce_sum(tf.abs(flat), axis=2) if self.threat.norm == "linf" else \
            tf.sqrt(tf.reduce_sum(tf.square(flat), axis=2))
        # the true class is never the nearest boundary (the authors set its f to 1e10)
        distance = tf.where(onehot_y > 0, tf.fill(tf.shape(f), 1e10), tf.abs(f) / (1e-12 + dual))
        nearest = tf.argmin(distance, axis=1, output_type=tf.int32)
        return tf.gather(f, nearest, axis=1, batch_dims=1), tf.gather(g, nearest, axis=1, batch_dims=1)

    def run(self, clean, label, target, model_fn, start=None, num_classes=None):
        """One run towards ``target`` (None: untargeted, ``num_classes`` needed) from ``start``
        (None: the clean image) -> (closest adversarial image found, its distance on the
        0..255 scale (inf: none), the images' shape kept)."""
        threat = self.threat
        x0 = _flat(clean)
        static = clean.shape.as_list()[1:]
        if None in static:
            raise AttackError("FAB needs images of a known size, got %s" % (clean.shape,))
        shape = [-1] + static
        batch = tf.shape(clean)[:1]

        def body(i, x, best, best_dist):
            f, grad = self._linearised(x, label, target, model_fn, num_classes)
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

        x_start = clean if start is None else start
        _, _, best, best_dist = tf.compat.v1.while_loop(
            lambda i, *_: i < self.num_iter, body, [tf.constant(0), x_start, clean, tf.fill(batch, float("inf"))],
            back_prop=False, parallel_iterations=1, name="fab_loop")
        return best, best_dist

    def _norm(self, d):
        if self.threat.norm == "l2":
            return tf.sqrt(tf.reduce_sum(tf.square(d), axis=1))
        return tf.reduce_max(tf.abs(d), axis=1)

    def runs(self, num_classes):
        """The runs of an attack, in order: (target rank or None, restart). FAB-T: for each of
        the targets (the 2nd, 3rd, ... highest clean logit: rank 1, 2, ...), its restarts."""
        if not self.num_targets:
            return [(None, r) for r in range(self.restarts)]
        return [(t, r) for t in range(1, default_targets(num_classes, self.num_targets) + 1)
                for r in range(self.restarts)]

    def attack_info(self, clean, label, model_fn, num_classes):
        """-> (adversarial images, labels, network evaluations per image): the runs in order,
        each on the images still standing; an image counts as broken when a run found a
        misclassifying point within the radius (a tolerance of 1e-4 of a pixel for float
        rounding)."""
        if num_classes < 2:
            raise AttackError("FAB needs a model with at least 2 classes, got %d" % num_classes)
        runs = self.runs(num_classes)
        ranks = tf.constant([t or 0 for t, _ in runs], tf.int32)
        restarts = tf.constant([r for _, r in runs], tf.int32)
        per_run = float(self.queries_per_run(num_classes))
        with tf.name_scope(self.name):
            keys = self.draws.keys(clean)
            logits = tf.cast(model_fn(clean), tf.float32)
            broken = tf.not_equal(tf.argmax(logits, axis=1, output_type=tf.int32), label)
            order = ranked_classes(logits)

            def body(k, adv, broken, queries):
                idx = tf.where(tf.logical_not(broken))[:, 0]
                target = tf.gather(tf.gather(order, ranks[k], axis=1), idx) if self.num_targets else None
                sub_clean, sub_label = tf.gather(clean, idx), tf.gather(label, idx)
                sub_keys = None if keys is None else tf.gather(keys, idx)

                def attack():
                    start = tf.cond(restarts[k] > 0, lambda: self.random_start(sub_clean, sub_keys, restarts[k]),
                                    lambda: sub_clean)
                    return self.run(sub_clean, sub_label, target, model_fn, start, num_classes)
                x, dist = unless_empty(tf.size(idx), attack, lambda: (sub_clean, tf.fill(tf.shape(idx), float("inf"))))
                ok = dist <= self.epsilon + 1e-4
                # inside the ball exactly (the tolerance is float rounding's)
                x = self.threat.project(x, sub_clean)
                x = tf.where(tf.broadcast_to(tf.reshape(ok, [-1, 1, 1, 1]), tf.shape(x)), x, sub_clean)
                return (k + 1, tf.tensor_scatter_nd_update(adv, idx[:, None], x),
                        tf.tensor_scatter_nd_update(broken, idx[:, None], ok),
                        tf.tensor_scatter_nd_add(queries, idx[:, None], tf.fill(tf.shape(idx), per_run)))

            _, adv, _, queries = tf.compat.v1.while_loop(
                lambda k, *_: k < len(runs), body, [tf.constant(0), clean, broken, tf.ones(tf.shape(label))],
                back_prop=False, parallel_iterations=1, name="fab_runs")
            return tf.stop_gradient(adv), label, queries

    def attack(self, clean, label, model_fn, num_classes):
        adv, target, _ = self.attack_info(clean, label, model_fn, num_classes)
        return adv, target
