"""Square Attack (Andriushchenko, Croce, Flammarion and Hein, ECCV 2020): a score-based
black-box attack, AutoAttack's last member and its check that does not depend on gradients.
It only ever calls the network forward: no gradient op is built.

Random search on the margin loss z_y - max_{j != y} z_j (untargeted), per image: a candidate
changes the current perturbation on one random square window, and replaces it if the loss
went down (or the image became misclassified). The window's side follows the paper's
schedule: a fraction p of the image's pixels, p halved after 10, 50, 200, 500, 1000, 2000,
4000, 6000 and 8000 of 10,000 queries (rescaled to the budget), from p_init = 0.8.

- L-infinity (Algorithm 2): the start is vertical stripes of +-epsilon; a candidate sets the
  window to x +- epsilon, one sign per channel.
- L2 (Algorithm 3): the start is a grid of the "meta pattern" of nested squares; a candidate
  moves the perturbation's mass from a second window into the first, with a fresh
  meta-pattern on it, and rescales the whole perturbation to the radius.

The budget counts every forward pass of an image, the start's included, so an image that is
never broken uses exactly ``queries`` of them; a broken image stops.
"""
import math

import numpy as np
import tensorflow as tf

from . import losses
from .base import Attacker
from .draws import SEARCH_STREAM, per_image_uniform
from .threat import IMAGE_MAX, IMAGE_MIN, AttackError

P_INIT = 0.8
# Square's schedule: iterations (of 10,000) after which p halves
P_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_schedule(iteration, budget, p_init=P_INIT):
    """The fraction of pixels of the window at ``iteration`` of a ``budget``-query run."""
    it = int(iteration / budget * 10000)
    return p_init / 2 ** sum(it > h for h in P_HALVINGS)


def window_sides(budget, pixels, minimum=1, odd=False, p_init=P_INIT, limit=None):
    """The window's side at every iteration (a schedule known before the run)."""
    sides = []
    for i in range(max(budget - 1, 0)):
        s = max(int(round(math.sqrt(p_schedule(i, budget, p_init) * pixels))), minimum)
        if odd and s % 2 == 0:
            s += 1
        sides.append(min(s, limit) if limit else s)
    return sides


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


class SquareAttacker(Attacker):
    """Square Attack under ``threat`` (L-inf or L2), untargeted, with ``queries`` network
    evaluations per image at most. Its draws are per image (evaluation's), like PGD's."""
    name = "square"

    def __init__(self, threat, queries=5000, draws=None, p_init=P_INIT):
        super().__init__(threat, targeted=False, draws=draws)
        if not isinstance(queries, int) or queries < 1:
            raise AttackError("Square's query budget must be an integer >= 1, got %r" % (queries,))
        if not 0 < p_init <= 1:
            raise AttackError("Square's p_init must be in (0, 1], got %g" % p_init)
        self.queries = queries
        self.num_iter = queries
        self.p_init = float(p_init)

    def describe(self):
        return "square(eps=%g%s, queries=%d, p_init=%g%s)" % (self.epsilon, self.threat.describe(), self.queries,
                                                              self.p_init, self.draws.describe())

    # ---- random numbers: every draw of the run at once, per image ----
    def _draws(self, clean, keys, count):
        """[B, iterations, count] uniform values in [0, 1): one row per iteration."""
        shape = [max(self.queries - 1, 1), count]
        if self.draws.per_image:
            return per_image_uniform(keys, self.draws.seed, SEARCH_STREAM, shape, 0.0, 1.0)
        full = tf.concat([tf.shape(clean)[:1], shape], axis=0)
        return tf.random.uniform(full, seed=self.draws.seed)

    def _start_draws(self, clean, keys, count):
        if self.draws.per_image:
            return per_image_uniform(keys, self.draws.seed, SEARCH_STREAM - 1, [count], 0.0, 1.0)
        return tf.random.uniform(tf.concat([tf.shape(clean)[:1], [count]], axis=0),
                                 seed=None if self.draws.seed is None else self.draws.seed + 1)

    @staticmethod
    def _sign(u):
        return tf.where(u < 0.5, -1.0, 1.0)

    def attack_info(self, clean, label, model_fn, num_classes):
        """-> (adversarial images, labels, queries per image)."""
        shape = clean.shape.as_list()
        if len(shape) != 4 or None in shape[1:]:
            raise AttackError("Square needs images of a known size, got %s" % (shape,))
        with tf.name_scope(self.name):
            keys = self.draws.keys(clean)
            if self.threat.norm == "linf":
                adv, queries = self._linf(clean, label, model_fn, keys)
            else:
                adv, queries = self._l2(clean, label, model_fn, keys)
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
        """A uniform integer in [0, extent - side] from u in [0, 1)."""
        room = tf.maximum(extent - side, 0) + 1
        return tf.minimum(tf.cast(tf.floor(u * tf.cast(room, tf.float32)), tf.int32), room - 1)

    def _search(self, clean, label, model_fn, x0, candidate_fn):
        """The random search: ``candidate_fn(i, x_best) -> candidate`` per iteration i;
        a candidate replaces the current point of an image still standing if its margin is
        lower, or negative. Returns (best images, queries per image)."""
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

        _, x_best, _, queries = tf.compat.v1.while_loop(
            lambda i, *_: i < self.queries - 1, body, [tf.constant(0), x0, margin0, tf.ones(batch)],
            back_prop=False, parallel_iterations=1, name="square_loop")
        return x_best, queries

    # ---- L-infinity (Algorithm 2) ----
    def _linf(self, clean, label, model_fn, keys):
        _, h, w, c = clean.shape.as_list()
        eps = self.threat.eps
        stripes = self._sign(self._start_draws(clean, keys, w * c))
        x0 = self.threat.project(clean + eps * tf.reshape(stripes, [-1, 1, w, c]), clean)
        sides = tf.constant(window_sides(self.queries, h * w, 1, limit=min(h, w), p_init=self.p_init) or [1],
                            tf.int32)
        draws = self._draws(clean, keys, 2 + c)

        def candidate(i, x_best):
            d = draws[:, i]
            side = sides[i]
            window = self._window(clean, self._position(d[:, 0], h, side), self._position(d[:, 1], w, side), side)
            signs = tf.reshape(self._sign(d[:, 2:]), [-1, 1, 1, c])
            # the window's pixels go to x +- epsilon, one sign per channel; the rest stay
            return self.threat.project(x_best + window * 2.0 * eps * signs, clean)

        return self._search(clean, label, model_fn, x0, candidate)

    # ---- L2 (Algorithm 3) ----
    def _l2(self, clean, label, model_fn, keys):
        _, h, w, c = clean.shape.as_list()
        eps = self.threat.eps
        side_list = window_sides(self.queries, h * w, 3, odd=True, limit=min(h, w), p_init=self.p_init) or [3]
        largest = max(side_list + [max(h // 5, 1)])
        patterns = np.zeros((largest + 1, largest, largest), np.float32)
        for s in set(side_list + [max(h // 5, 1)]):
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

        def norm(x, axes=(1, 2, 3)):
            return tf.sqrt(tf.reduce_sum(tf.square(x), axis=list(axes), keepdims=True))

        def rescaled(delta):
            """The perturbation scaled to the radius, then clipped to the image range."""
            return tf.clip_by_value(clean + delta / tf.maximum(norm(delta), 1e-12) * eps, IMAGE_MIN, IMAGE_MAX)

        # the start: the meta-pattern on a grid of h // 5 squares, a random sign per square and channel
        s0 = max(h // 5, 1)
        count = (h // s0) * (w // s0)
        start_signs = self._sign(self._start_draws(clean, keys, count * c))
        delta0 = tf.zeros_like(clean)
        offset = (h - s0 * 5) // 2 if h >= 5 else 0
        k = 0
        for gy in range(h // s0):
            for gx in range(w // s0):
                top, left = offset + gy * s0, offset + gx * s0
                if top + s0 > h or left + s0 > w:
                    continue
                block = placed(tf.fill(tf.shape(clean)[:1], top), tf.fill(tf.shape(clean)[:1], left), s0,
                               tf.zeros(tf.shape(clean)[:1], tf.bool))
                delta0 += block * tf.reshape(start_signs[:, k * c:(k + 1) * c], [-1, 1, 1, c])
                k += 1
        x0 = rescaled(delta0)
        draws = self._draws(clean, keys, 5 + c)

        def candidate(i, x_best):
            d = draws[:, i]
            side = sides[i]
            top1, left1 = self._position(d[:, 0], h, side), self._position(d[:, 1], w, side)
            top2, left2 = self._position(d[:, 2], h, side), self._position(d[:, 3], w, side)
            transpose = d[:, 4] < 0.5
            signs = tf.reshape(self._sign(d[:, 5:]), [-1, 1, 1, c])
            window1 = self._window(clean, top1, left1, side)
            window2 = self._window(clean, top2, left2, side)
            delta = x_best - clean
            # per channel: the window's current perturbation direction plus a fresh pattern,
            # scaled so the window takes over the budget left and the second window's mass
            in_window = delta * window1
            window_norm = norm(in_window, axes=(1, 2))
            both = tf.maximum(window1, window2)
            spare = tf.maximum(eps ** 2 - tf.square(norm(delta)), 0.0)
            new = placed(top1, left1, side, transpose) * signs + in_window / (1e-12 + window_norm)
            new = new / (1e-12 + norm(new * window1, axes=(1, 2))) * tf.sqrt(
                spare / c + tf.square(norm(delta * both)))
            delta = delta * (1.0 - window2)
            delta = delta * (1.0 - window1) + new * window1
            return rescaled(delta)

        return self._search(clean, label, model_fn, x0, candidate)
