"""Square Attack (Andriushchenko, Croce, Flammarion and Hein, ECCV 2020): a score-based
black-box attack, AutoAttack's last member and its check that does not depend on gradients.
It only ever calls the network forward: no gradient op is built.

Random search on the margin loss z_y - max_{j != y} z_j (untargeted), per image: a candidate
changes the current perturbation on one random square window, and replaces it if the loss
went down (or the image became misclassified). The window covers a fraction p of the image's
pixels, p_init = 0.8 halved after iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and
8000 of the paper's 10,000 (Sec. 3, "the schedule of p"):

- ``rescale_schedule=True`` (``--attack square``): the points scaled to the budget, the
  authors' default, so a run of any length goes through the whole schedule;
- ``rescale_schedule=False`` (inside AutoAttack, whose code builds Square with
  ``resc_schedule=False``): the 10,000-query points as they are, so at AutoAttack's 5,000
  queries the window never gets below p_init / 128.

- L-infinity (Algorithm 2): the start is vertical stripes of +-epsilon; a candidate sets the
  window to x +- epsilon, one sign per channel.
- L2 (Algorithm 3, ``l2_candidate``): the start is a grid of the "meta pattern" of nested
  squares; a candidate moves the perturbation's mass from a second window into the first,
  with a fresh meta-pattern on it, and rescales the whole perturbation to the radius.

``queries`` is the number of iterations of the search (the authors' ``n_queries``): an image
that is never broken costs ``queries`` + 1 network evaluations, the start's included; a broken
image stops. The window's top-left corner is drawn as the authors' code draws it, uniform
in {0, ..., side_of_image - side - 1} (0 when the window spans the image). The random
numbers are drawn per image (attacks/draws.py), where the authors' code draws one window
and one sign pattern for the whole batch: the same distribution for every image, and a
figure that does not depend on the batch. ``restarts`` runs the search again, with fresh
draws, on the images no earlier run broke (AutoAttack's Square has one).
"""
import math

import numpy as np
import tensorflow as tf

from . import losses
from .base import Attacker, unless_empty
from .draws import SEARCH_STREAM, per_image_uniform
from .threat import IMAGE_MAX, IMAGE_MIN, AttackError

P_INIT = 0.8
# Square's schedule: iterations (of the paper's 10,000) after which p halves
P_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
SCHEDULE_LENGTH = 10000


def p_schedule(iteration, budget, p_init=P_INIT, rescale=True):
    """The fraction of pixels of the window at ``iteration`` (0-based) of a ``budget``-iteration
    run: p_init halved once for every point of P_HALVINGS the iteration is past; with
    ``rescale`` the iteration is first mapped onto the 10,000-iteration schedule."""
    it = int(iteration / budget * SCHEDULE_LENGTH) if rescale else int(iteration)
    return p_init / 2 ** sum(it > h for h in P_HALVINGS)


def window_side(p, pixels, minimum=1, odd=False):
    """The window's side for a fraction ``p`` of ``pixels`` (an image's height x width):
    round(sqrt(p pixels)), at least ``minimum`` (L2: 3, and odd)."""
    s = max(int(round(math.sqrt(p * pixels))), minimum)
    return s + 1 if odd and s % 2 == 0 else s


def window_sides(budget, pixels, minimum=1, odd=False, p_init=P_INIT, limit=None, rescale=True):
    """The window's side at every iteration (a schedule known before the run)."""
    sides = [window_side(p_schedule(i, budget, p_init, rescale), pixels, minimum, odd) for i in range(budget)]
    return [min(s, limit) for s in sides] if limit else sides


def _rectangles(x, y):
    """Square's nested rectangles of an x-by-y window, each ring 1/(ring+1)^2, unit norm."""
    delta = np.zeros((x, y))
    cx, cy = x // 2 + 1, y // 2 + 1
    lo = [cx - 1, cy - 1]
    for ring in range(max(cx, cy)):
        delta[max(lo[0], 0):min(lo[0] + 2 * ring + 1, x), max(0, lo[1]):min(lo[1] + 2 * ring + 1, y)] += \
            1.0 / (ring + 1) ** 2
        lo[0] -= 1
        lo[1] -= 1
    return delta / np.sqrt((delta ** 2).sum())


def meta_pattern(s):
    """The L2 attack's s-by-s window pattern: nested squares, +1 on the top half and -1 on the
    bottom half, unit norm (the transposed version is the other orientation)."""
    delta = np.zeros((s, s))
    delta[:s // 2] = _rectangles(s // 2, s)
    delta[s // 2:] = -_rectangles(s - s // 2, s)
    return delta / np.sqrt((delta ** 2).sum())


def _norm(x, axes=(1, 2, 3)):
    return tf.sqrt(tf.reduce_sum(tf.square(x), axis=list(axes), keepdims=True))


def l2_candidate(clean, delta, window1, window2, pattern, eps):
    """One candidate of the L2 search (Algorithm 3), per image: ``delta`` [B, H, W, C] the
    current perturbation, ``window1``/``window2`` [B, H, W, 1] the masks of the two windows,
    ``pattern`` [B, H, W, C] the fresh signed meta-pattern on window 1 (zero elsewhere), ``eps``
    the radius. Per channel i, the window-1 part of the perturbation becomes
    rho eta + nu_W1,i / ||nu_W1,i||, scaled to sqrt(||nu_W1uW2||^2 + (eps^2 - ||nu||^2) / c),
    window 2 is emptied, and the whole is rescaled to the radius and clipped to the range.
    Two choices are the authors' code's, where the paper's Algorithm 3 differs: the norm of
    nu on W1 u W2 is taken over all channels (line 8 writes it per channel), and the result is
    rescaled to eps before the clip (line 11 adds it unscaled)."""
    c = clean.shape.as_list()[-1]
    in_window = delta * window1
    both = tf.maximum(window1, window2)
    unused = tf.maximum(eps ** 2 - tf.square(_norm(delta)), 0.0)
    new = pattern + in_window / (1e-12 + _norm(in_window, axes=(1, 2)))
    new = new / (1e-12 + _norm(new * window1, axes=(1, 2))) * tf.sqrt(unused / c + tf.square(_norm(delta * both)))
    delta = delta * (1.0 - window2)
    delta = delta * (1.0 - window1) + new * window1
    return tf.clip_by_value(clean + delta / (_norm(delta) + 1e-12) * eps, IMAGE_MIN, IMAGE_MAX)


class SquareAttacker(Attacker):
    """Square Attack under ``threat`` (L-inf or L2), untargeted, ``queries`` iterations of its
    search per run, ``restarts`` runs on the images still standing. Its draws are per image
    (evaluation's), like PGD's. ``rescale_schedule``: the window schedule scaled to the budget
    (the Square paper's use, the default) or as for 10,000 queries (AutoAttack's)."""
    name = "square"
    uses_gradients = False
    own_clean_prediction = False

    def __init__(self, threat, queries=5000, draws=None, p_init=P_INIT, rescale_schedule=True, restarts=1):
        super().__init__(threat, targeted=False, draws=draws)
        if not isinstance(queries, int) or queries < 1:
            raise AttackError("Square's query budget must be an integer >= 1, got %r" % (queries,))
        if not 0 < p_init <= 1:
            raise AttackError("Square's p_init must be in (0, 1], got %g" % p_init)
        if not isinstance(restarts, int) or restarts < 1:
            raise AttackError("Square's restarts must be an integer >= 1, got %r" % (restarts,))
        self.queries = queries
        self.num_iter = queries
        self.p_init = float(p_init)
        self.rescale_schedule = bool(rescale_schedule)
        self.restarts = restarts

    def describe(self):
        return "square(eps=%g%s, queries=%d, p_init=%g, schedule=%s%s%s)" % (
            self.epsilon, self.threat.describe(), self.queries, self.p_init,
            "rescaled" if self.rescale_schedule else "autoattack",
            ", restarts=%d" % self.restarts if self.restarts > 1 else "", self.draws.describe())

    def sides(self, pixels, minimum=1, odd=False, limit=None):
        return window_sides(self.queries, pixels, minimum, odd, self.p_init, limit, self.rescale_schedule)

    # ---- random numbers: every draw of a run at once, per image ----
    def _draws(self, clean, keys, count, restart):
        """[B, iterations, count] uniform values in [0, 1): one row per iteration. Restart r
        draws from its own streams (SEARCH_STREAM + 2r; its start from the odd ones below)."""
        shape = [self.queries, count]
        if self.draws.per_image:
            return per_image_uniform(keys, self.draws.seed, SEARCH_STREAM + 2 * restart, shape, 0.0, 1.0)
        full = tf.concat([tf.shape(clean)[:1], shape], axis=0)
        return tf.random.uniform(full, seed=self.draws.seed)

    def _start_draws(self, clean, keys, count, restart):
        if self.draws.per_image:
            return per_image_uniform(keys, self.draws.seed, SEARCH_STREAM - 1 + 2 * restart, [count], 0.0, 1.0)
        return tf.random.uniform(tf.concat([tf.shape(clean)[:1], [count]], axis=0),
                                 seed=None if self.draws.seed is None else self.draws.seed + 1)

    @staticmethod
    def _sign(u):
        return tf.where(u < 0.5, -1.0, 1.0)

    def attack_info(self, clean, label, model_fn, num_classes):
        """-> (adversarial images, labels, network evaluations per image: each run's start and
        iterations; Square makes no clean prediction of its own)."""
        shape = clean.shape.as_list()
        if len(shape) != 4 or None in shape[1:]:
            raise AttackError("Square needs images of a known size, got %s" % (shape,))
        with tf.name_scope(self.name):
            keys = self.draws.keys(clean)
            run = self._linf if self.threat.norm == "linf" else self._l2
            if self.restarts == 1:
                adv, queries, broken = run(clean, label, model_fn, keys, 0)
                # an unbroken image keeps its clean version (the authors' perturb)
                adv = tf.where(tf.broadcast_to(tf.reshape(broken, [-1, 1, 1, 1]), tf.shape(adv)), adv, clean)
                return tf.stop_gradient(adv), label, queries

            def body(r, adv, broken, queries):
                # each restart sees only the images no earlier run broke (the authors' loop)
                idx = tf.where(tf.logical_not(broken))[:, 0]
                sub_clean, sub_label = tf.gather(clean, idx), tf.gather(label, idx)
                sub_keys = None if keys is None else tf.gather(keys, idx)

                x, q, b = unless_empty(tf.size(idx), lambda: run(sub_clean, sub_label, model_fn, sub_keys, r),
                                       lambda: (sub_clean, tf.zeros(tf.shape(idx)), tf.zeros(tf.shape(idx), tf.bool)))
                keep = tf.where(b)[:, 0]
                return (r + 1, tf.tensor_scatter_nd_update(adv, tf.gather(idx, keep)[:, None], tf.gather(x, keep)),
                        tf.tensor_scatter_nd_update(broken, idx[:, None], b),
                        tf.tensor_scatter_nd_add(queries, idx[:, None], q))

            broken0 = tf.zeros(tf.shape(label), tf.bool)
            _, adv, _, queries = tf.compat.v1.while_loop(
                lambda r, *_: r < self.restarts, body, [tf.constant(0), clean, broken0, tf.zeros(tf.shape(label))],
                back_prop=False, parallel_iterations=1, name="square_restarts")
            return tf.stop_gradient(adv), label, queries

    def attack(self, clean, label, model_fn, num_classes):
        adv, target, _ = self.attack_info(clean, label, model_fn, num_classes)
        return adv, target

    def _margin(self, model_fn, x, label):
        return losses.margin(model_fn(x), label)

    def _window(self, clean, top, left, side):
        """[B, H, W, 1] float mask of each image's ``side``-square window at (top, left)."""
        _, h, w, _ = clean.shape.as_list()
        rows = tf.reshape(tf.range(h, dtype=tf.int32), [1, h, 1, 1])
        cols = tf.reshape(tf.range(w, dtype=tf.int32), [1, 1, w, 1])
        top, left = tf.reshape(top, [-1, 1, 1, 1]), tf.reshape(left, [-1, 1, 1, 1])
        inside = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
        return tf.cast(inside, tf.float32)

    @staticmethod
    def _position(u, extent, side):
        """The window's corner from u in [0, 1): floor(u (extent - side)), in {0, ...,
        extent - side - 1}, 0 when the window spans the image (the authors' random_int)."""
        room = tf.maximum(extent - side, 0)
        return tf.minimum(tf.cast(tf.floor(u * tf.cast(room, tf.float32)), tf.int32), tf.maximum(room - 1, 0))

    def _search(self, clean, label, model_fn, x0, candidate_fn):
        """The random search: ``candidate_fn(i, x_best) -> candidate`` per iteration i;
        a candidate replaces the current point of an image still standing if its margin is
        lower, or negative. Returns (best images, queries per image, broken [B])."""
        margin0 = self._margin(model_fn, x0, label)
        batch = tf.shape(clean)[:1]

        def body(i, x_best, margin_best, queries):
            active = margin_best > 0.0
            cand = candidate_fn(i, x_best)
            margin = self._margin(model_fn, cand, label)
            take = tf.logical_and(active, tf.logical_or(margin < margin_best, margin <= 0.0))
            keep = tf.broadcast_to(tf.reshape(take, [-1, 1, 1, 1]), tf.shape(x_best))
            return (i + 1, tf.where(keep, cand, x_best), tf.where(take, margin, margin_best),
                    queries + tf.cast(active, tf.float32))

        _, x_best, margin, queries = tf.compat.v1.while_loop(
            lambda i, *_: i < self.queries, body, [tf.constant(0), x0, margin0, tf.ones(batch)],
            back_prop=False, parallel_iterations=1, name="square_loop")
        return x_best, queries, margin <= 0.0

    # ---- L-infinity (Algorithm 2) ----
    def _linf(self, clean, label, model_fn, keys, restart):
        _, h, w, c = clean.shape.as_list()
        eps = self.threat.eps
        stripes = self._sign(self._start_draws(clean, keys, w * c, restart))
        x0 = self.threat.project(clean + eps * tf.reshape(stripes, [-1, 1, w, c]), clean)
        sides = tf.constant(self.sides(h * w, 1, limit=min(h, w)), tf.int32)
        draws = self._draws(clean, keys, 2 + c, restart)

        def candidate(i, x_best):
            d = draws[:, i]
            side = sides[i]
            window = self._window(clean, self._position(d[:, 0], h, side), self._position(d[:, 1], w, side), side)
            signs = tf.reshape(self._sign(d[:, 2:]), [-1, 1, 1, c])
            # the window's pixels go to x +- epsilon, one sign per channel; the rest stay
            return self.threat.project(x_best + window * 2.0 * eps * signs, clean)

        return self._search(clean, label, model_fn, x0, candidate)

    # ---- L2 (Algorithm 3) ----
    def _l2(self, clean, label, model_fn, keys, restart):
        _, h, w, c = clean.shape.as_list()
        eps = self.threat.eps
        side_list = self.sides(h * w, 3, odd=True, limit=min(h, w))
        s0 = max(h // 5, 1)
        largest = max(side_list + [s0])
        patterns = np.zeros((largest + 1, largest, largest), np.float32)
        for s in set(side_list + [s0]):
            patterns[s, :s, :s] = meta_pattern(s) if s > 1 else 1.0
        patterns = tf.constant(patterns)
        sides = tf.constant(side_list, tf.int32)

        def placed(top, left, side, transpose):
            """[B, H, W, 1]: each image's meta-pattern of ``side`` at (top, left), optionally
            transposed, zero elsewhere."""
            rows = tf.reshape(tf.range(h), [1, h, 1]) - tf.reshape(top, [-1, 1, 1])
            cols = tf.reshape(tf.range(w), [1, 1, w]) - tf.reshape(left, [-1, 1, 1])
            inside = (rows >= 0) & (rows < side) & (cols >= 0) & (cols < side)
            r = tf.clip_by_value(rows, 0, largest - 1) + tf.zeros_like(cols)
            q = tf.clip_by_value(cols, 0, largest - 1) + tf.zeros_like(rows)
            t = tf.reshape(transpose, [-1, 1, 1])
            r, q = tf.where(t, q, r), tf.where(t, r, q)
            table = patterns[side]
            values = tf.gather_nd(table, tf.stack([r, q], axis=-1))
            return tf.expand_dims(tf.where(inside, values, 0.0), -1)

        # the start: the meta-pattern (each square randomly transposed, as the authors' eta
        # draws it) on a grid of h // 5 squares, a random sign per square and channel
        per_row = h // s0
        count = per_row * (w // s0)
        start = self._start_draws(clean, keys, count * (c + 1), restart)
        start_signs, start_flips = self._sign(start[:, :count * c]), start[:, count * c:] < 0.5
        delta0 = tf.zeros_like(clean)
        offset = (h - s0 * 5) // 2 if h >= 5 else 0
        fill = lambda v: tf.fill(tf.shape(clean)[:1], v)  # noqa: E731
        for k in range(count):
            top, left = offset + (k // (w // s0)) * s0, offset + (k % (w // s0)) * s0
            if top + s0 > h or left + s0 > w:
                continue
            block = placed(fill(top), fill(left), s0, start_flips[:, k])
            delta0 += block * tf.reshape(start_signs[:, k * c:(k + 1) * c], [-1, 1, 1, c])
        x0 = tf.clip_by_value(clean + delta0 / (_norm(delta0) + 1e-12) * eps, IMAGE_MIN, IMAGE_MAX)
        draws = self._draws(clean, keys, 5 + c, restart)

        def candidate(i, x_best):
            d = draws[:, i]
            side = sides[i]
            top1, left1 = self._position(d[:, 0], h, side), self._position(d[:, 1], w, side)
            top2, left2 = self._position(d[:, 2], h, side), self._position(d[:, 3], w, side)
            signs = tf.reshape(self._sign(d[:, 5:]), [-1, 1, 1, c])
            pattern = placed(top1, left1, side, d[:, 4] < 0.5) * signs
            return l2_candidate(clean, x_best - clean, self._window(clean, top1, left1, side),
                                self._window(clean, top2, left2, side), pattern, eps)

        return self._search(clean, label, model_fn, x0, candidate)
