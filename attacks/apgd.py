"""APGD: Auto-PGD, the step-size-free PGD of Croce and Hein (ICML 2020, "Reliable evaluation
of adversarial robustness with an ensemble of diverse parameter-free attacks", Algorithm 1),
the first two members of AutoAttack.

Per image, from a random start x0 on the ball's surface (x + epsilon t / ||t||, t uniform in
[-1, 1] per pixel for L-infinity, normal for L2, clipped to the image range: the authors'
start), with the step eta = 2 epsilon:
    z      = P(x_k + eta * direction(grad f(x_k)))
    x_k+1  = P(x_k + alpha (z - x_k) + (1 - alpha)(x_k - x_k-1)),  alpha = 0.75 (1 at k = 0)
At each checkpoint w_j (p_0 = 0, p_1 = 0.22, p_j+1 = p_j + max(p_j - p_j-1 - 0.03, 0.06) of
the iterations: windows that start at 22% and shrink by 3% down to 6%) the step is halved and
the iterate restarts from the best point so far if
    1. the loss rose in fewer than rho = 0.75 of the window's steps, or
    2. the step was not halved at the last checkpoint and the best loss has not improved since.
The best point (highest objective) is kept per image, and so is the last point that
misclassified the image; the attack returns the latter where there is one.

Losses: cross-entropy (APGD-CE) or the DLR loss (losses.py); APGD-T runs the targeted DLR loss
once per target among the k classes with the highest clean logits after the true one (k = 9,
fewer when the data set has fewer classes), each run only on the images no earlier target
broke. Restarts (AutoAttack's "plus" version: 5 for APGD-CE and APGD-DLR) run again, with a
fresh start, on the images still standing; APGD-T's restarts are per target. With EOT
(``precision.eot`` > 1, AutoAttack's "rand" version: 20) the gradient is averaged over draws
of a randomised model (attacks/precision.py). Built in the graph (``tf.while_loop``), so it
runs on any number of Horovod ranks and its random start is drawn per image like PGD's
(attacks/draws.py).
"""
import tensorflow as tf

from . import losses
from .base import Attacker, unless_empty
from .draws import START_DIRECTION_STREAM, START_STREAM, STREAMS_PER_RESTART
from .precision import FP32
from .threat import IMAGE_MAX, IMAGE_MIN, AttackError

RHO = 0.75          # condition 1's fraction of loss increases per window
MOMENTUM = 0.75     # alpha of the update
TARGETS = 9         # APGD-T's (and FAB-T's) number of target classes


def checkpoint_schedule(num_iter):
    """(first window, its decrease, the smallest window) in iterations: the checkpoints of
    Algorithm 1, p_1 = 0.22, windows shrinking by 0.03 down to 0.06 of the iterations."""
    return max(int(0.22 * num_iter), 1), max(int(0.03 * num_iter), 1), max(int(0.06 * num_iter), 1)


def _per_image(values, like):
    return tf.reshape(values, [-1] + [1] * (like.shape.ndims - 1))


def _where(cond, a, b):
    """Per-image select of images (``cond`` [B])."""
    return tf.where(tf.broadcast_to(_per_image(cond, a), tf.shape(a)), a, b)


class APGDAttacker(Attacker):
    """APGD with the cross-entropy (``loss='xent'``, APGD-CE) or DLR loss, untargeted; with
    ``targets`` > 0, APGD-T: the targeted DLR loss over that many target classes.

    The attack counts misclassification (AutoAttack's criterion), so it is untargeted as a
    whole (``targeted`` is False and the returned targets are the labels)."""
    own_clean_prediction = True
    #: record the step size of every iteration (``run`` then also returns them): for tests
    trace_steps = False

    def __init__(self, threat, num_iter=100, loss="xent", targets=0, draws=None, precision=None, restarts=1):
        super().__init__(threat, targeted=False, draws=draws)
        if num_iter < 1:
            raise AttackError("APGD iterations must be >= 1, got %d" % num_iter)
        if loss not in ("xent", "dlr"):
            raise AttackError("APGD's loss is xent or dlr, got %r" % loss)
        if targets < 0:
            raise AttackError("APGD-T's number of target classes must be >= 1, got %d" % targets)
        if restarts < 1:
            raise AttackError("APGD restarts must be >= 1, got %d" % restarts)
        self.num_iter = int(num_iter)
        self.loss = "dlr" if targets else loss
        self.num_targets = int(targets)
        self.restarts = int(restarts)
        self.precision = precision if precision is not None else FP32
        self.name = "apgd-t" if targets else ("apgd-ce" if loss == "xent" else "apgd-dlr")

    def describe(self):
        what = "targets=%d" % self.num_targets if self.num_targets else "loss=%s" % self.loss
        restarts = ", restarts=%d" % self.restarts if self.restarts > 1 else ""
        return "%s(eps=%g%s, iter=%d, %s%s%s)" % (self.name, self.epsilon, self.threat.describe(), self.num_iter,
                                                  what, restarts, self.draws.describe())

    def queries_per_run(self):
        """Network evaluations (forward and backward) of one run on one image (each of the
        ``eot`` draws of a gradient is one)."""
        return (self.num_iter + 1) * self.precision.eot

    def random_start(self, clean, keys, restart):
        """x + epsilon t / ||t|| clipped to the range (the module's docstring), per image."""
        streams = STREAMS_PER_RESTART * tf.cast(restart, tf.int64)
        axes = list(range(1, clean.shape.ndims))
        if self.threat.norm == "linf":
            t = self.draws.uniform(keys, START_STREAM + streams, clean, None, -1.0, 1.0)
            size = tf.reduce_max(tf.abs(t), axis=axes, keepdims=True)
        else:
            t = self.draws.normal(keys, START_DIRECTION_STREAM + streams, clean, None)
            size = tf.sqrt(tf.reduce_sum(tf.square(t), axis=axes, keepdims=True))
        return tf.clip_by_value(clean + self.threat.eps * t / (size + 1e-12), IMAGE_MIN, IMAGE_MAX)

    # ---- one run ----
    def _objective(self, label, target):
        if target is None:
            return lambda logits: losses.attack_objective(self.loss, logits, label, label, False)
        return lambda logits: losses.dlr(tf.cast(logits, tf.float32), label, target)

    def run(self, clean, label, model_fn, target=None, keys=None, restart=0, start=None):
        """One run of Algorithm 1 from a random start (or ``start``). -> (adversarial images,
        broken [B]): the last misclassifying iterate where one was found, else the
        highest-objective one."""
        objective = self._objective(label, target)
        threat, n = self.threat, self.num_iter
        first, decrease, smallest = checkpoint_schedule(n)
        eps = threat.eps

        def evaluate(x):
            logits, grad = self.precision.logits_and_gradient(objective, model_fn, x)
            return logits, objective(logits), grad

        x0 = threat.project(self.random_start(clean, keys, restart), clean) if start is None else start
        logits0, f0, g0 = evaluate(x0)
        wrong0 = tf.not_equal(tf.argmax(logits0, axis=1, output_type=tf.int32), label)
        batch = tf.shape(clean)[:1]
        state = dict(
            i=tf.constant(0), x=x0, x_prev=x0, grad=g0, f=f0,
            x_best=x0, f_best=f0, g_best=g0, x_adv=x0, broken=wrong0,
            step=tf.fill(batch, 2.0 * eps), since=tf.constant(0), window=tf.constant(first),
            rises=tf.zeros(batch), f_check=f0, reduced=tf.ones(batch, tf.bool))
        if self.trace_steps:
            state["steps"] = tf.zeros(tf.stack([n, batch[0]]))
        names = sorted(state)

        def body(*values):
            s = dict(zip(names, values))
            alpha = tf.where(tf.equal(s["i"], 0), 1.0, MOMENTUM)
            step = _per_image(s["step"], clean)
            z = threat.project(s["x"] + step * threat.direction(s["grad"]), clean)
            x_new = threat.project(s["x"] + alpha * (z - s["x"]) + (1.0 - alpha) * (s["x"] - s["x_prev"]), clean)
            logits, f, grad = evaluate(x_new)
            wrong = tf.not_equal(tf.argmax(logits, axis=1, output_type=tf.int32), label)
            if self.trace_steps:            # the step this iteration took, per image
                s = dict(s, steps=tf.tensor_scatter_nd_update(s["steps"], [[s["i"]]], s["step"][None]))
            out = dict(s, i=s["i"] + 1, x_prev=s["x"], x=x_new, grad=grad, f=f,
                       broken=tf.logical_or(s["broken"], wrong), x_adv=_where(wrong, x_new, s["x_adv"]),
                       rises=s["rises"] + tf.cast(f > s["f"], tf.float32), since=s["since"] + 1)
            better = f > s["f_best"]
            out.update(x_best=_where(better, x_new, s["x_best"]), g_best=_where(better, grad, s["g_best"]),
                       f_best=tf.where(better, f, s["f_best"]))

            def check(o):
                window = tf.cast(o["window"], tf.float32)
                oscillating = o["rises"] <= RHO * window                                       # condition 1
                stalled = tf.logical_and(tf.logical_not(o["reduced"]), o["f_check"] >= o["f_best"])  # condition 2
                reduce = tf.logical_or(oscillating, stalled)
                return dict(o, step=tf.where(reduce, o["step"] / 2.0, o["step"]),
                            x=_where(reduce, o["x_best"], o["x"]), grad=_where(reduce, o["g_best"], o["grad"]),
                            reduced=reduce, f_check=o["f_best"], since=tf.constant(0),
                            rises=tf.zeros_like(o["rises"]), window=tf.maximum(o["window"] - decrease, smallest))

            at_check = tf.equal(out["since"], out["window"])
            checked = check(out)
            out = {k: tf.cond(at_check, lambda k=k: checked[k], lambda k=k: out[k]) for k in names}
            return [out[k] for k in names]

        shape = {k: tf.TensorShape([]) if k in ("i", "since", "window") else tf.TensorShape([None]).concatenate(
            state[k].shape[1:]) for k in names}
        if self.trace_steps:
            shape["steps"] = tf.TensorShape([n, None])
        final = tf.compat.v1.while_loop(lambda *v: v[names.index("i")] < n, body, [state[k] for k in names],
                                        shape_invariants=[shape[k] for k in names], back_prop=False,
                                        parallel_iterations=1, name="apgd_loop")
        f = dict(zip(names, final))
        if self.trace_steps:
            return _where(f["broken"], f["x_adv"], f["x_best"]), f["broken"], f["steps"]
        return _where(f["broken"], f["x_adv"], f["x_best"]), f["broken"]

    # ---- restarts and targets, each on the images still standing ----
    def attack_info(self, clean, label, model_fn, num_classes):
        """-> (adversarial images, labels, network evaluations per image)."""
        targets = default_targets(num_classes, self.num_targets) if self.num_targets else 0
        if targets and num_classes < 4:
            raise AttackError("APGD-T's targeted DLR loss needs at least 4 classes, got %d" % num_classes)
        runs = max(targets, 1) * self.restarts
        with tf.name_scope(self.name):
            keys = self.draws.keys(clean)
            logits = tf.cast(model_fn(clean), tf.float32)
            broken = tf.not_equal(tf.argmax(logits, axis=1, output_type=tf.int32), label)
            order = ranked_classes(logits)

            def body(r, adv, broken, queries):
                # each run sees only the images no earlier run broke (AutoAttack's protocol)
                idx = tf.where(tf.logical_not(broken))[:, 0]
                target = tf.gather(tf.gather(order, r // self.restarts + 1, axis=1), idx) if targets else None
                sub_keys = None if keys is None else tf.gather(keys, idx)
                sub_clean = tf.gather(clean, idx)
                x, b = unless_empty(tf.size(idx), lambda: self.run(sub_clean, tf.gather(label, idx), model_fn, target,
                                                                   sub_keys, restart=r),
                                    lambda: (sub_clean, tf.zeros(tf.shape(idx), tf.bool)))
                # an image no run broke keeps its clean version (the authors' perturb): the
                # final prediction then scores the clean image, also under a randomised model
                x = _where(b, x, sub_clean)
                return (r + 1, tf.tensor_scatter_nd_update(adv, idx[:, None], x),
                        tf.tensor_scatter_nd_update(broken, idx[:, None], b),
                        tf.tensor_scatter_nd_add(queries, idx[:, None],
                                                 tf.fill(tf.shape(idx), float(self.queries_per_run()))))

            queries = tf.ones(tf.shape(label))               # the clean prediction
            _, adv, _, queries = tf.compat.v1.while_loop(
                lambda r, *_: r < runs, body, [tf.constant(0), clean, broken, queries], back_prop=False,
                parallel_iterations=1, name="apgd_runs")
            return tf.stop_gradient(adv), label, queries

    def attack(self, clean, label, model_fn, num_classes):
        adv, target, _ = self.attack_info(clean, label, model_fn, num_classes)
        return adv, target


def ranked_classes(logits):
    """[B, K] the classes by decreasing clean logit: APGD-T's and FAB-T's j-th target is
    column j (j = 1, 2, ...: the classes after the best one)."""
    return tf.argsort(logits, axis=1, direction="DESCENDING", stable=True)


def default_targets(num_classes, wanted=TARGETS):
    """k target classes for APGD-T and FAB-T: 9, fewer when the data set has fewer classes."""
    return max(1, min(wanted, num_classes - 1))
