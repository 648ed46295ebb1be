"""Threat models: the set of images an attacker may return for a clean image.

Sec. 6 evaluates "under the white-box setting, with PGD as the attacker" in an L-infinity
ball of radius epsilon around the clean image; RobustBench adds the L2 ball. Each threat
model here is the ball intersected with the valid image range, and has the three verbs every
attacker is built from (as MadryLab's ``robustness`` splits them from the loop): a random
start inside it, a steepest-ascent step under its norm, and the projection onto it.

Images live in the networks' input space, [-1, 1] (the original's ``x * 2/255 - 1``).
Epsilon is given on the 0..255 pixel scale for both norms ("The value of epsilon is relative
to the pixel intensity scale of 256", Sec. 6), and scaled by the same 2/255: an L2 epsilon of
255 is an L2 distance of 1 on the [0, 1] scale (RobustBench's), whatever the image size.
"""
import math

import tensorflow as tf

PIXEL_SCALE = 2.0 / 255.0      # 0..255 -> [-1, 1]
IMAGE_MIN, IMAGE_MAX = -1.0, 1.0
# bisection steps of the exact L2 projection: the scale is found to 2^-30 of itself
L2_PROJECTION_STEPS = 30


class AttackError(ValueError):
    """Attack settings that make no sense (one-line message)."""


def to_model_space(pixels):
    """uint8/float 0..255 BGR -> the networks' input scale [-1, 1] (the original's convention)."""
    return tf.cast(pixels, tf.float32) * PIXEL_SCALE - 1.0


def to_pixels(image):
    return (image + 1.0) / PIXEL_SCALE


def _per_image(values, rank):
    """[B] -> [B, 1, 1, 1] (``rank`` 4), to scale images one by one."""
    return tf.reshape(values, [-1] + [1] * (rank - 1))


def _axes(x):
    return list(range(1, x.shape.ndims))


class ThreatModel:
    """A ball of radius ``epsilon`` (0..255 scale) around the clean image, intersected with
    the image range."""
    norm = None

    def __init__(self, epsilon):
        epsilon = float(epsilon)
        if not math.isfinite(epsilon) or epsilon < 0:
            raise AttackError("attack epsilon must be a finite number >= 0 (0..255 scale), got %g" % epsilon)
        self.epsilon = epsilon

    @property
    def eps(self):
        """The radius in model space."""
        return self.epsilon * PIXEL_SCALE

    def describe(self):
        return "" if self.norm == "linf" else ", %s" % self.norm

    # ---- the three verbs ----
    def sample(self, clean, uniform, normal):
        """A perturbation drawn uniformly from the ball (not yet clipped to the image range).
        ``uniform(shape, lo, hi)`` and ``normal(shape)`` draw per image: [B] + shape, with
        shape None for an image's shape."""
        raise NotImplementedError

    def random_start(self, clean, uniform, normal):
        return self.project(clean + self.sample(clean, uniform, normal), clean)

    def direction(self, grad):
        """The unit-norm direction of steepest ascent for a gradient ``grad``: the argmax of
        <grad, d> over ||d|| <= 1."""
        raise NotImplementedError

    def step(self, x, grad, size):
        """``x`` moved by ``size`` (model space) along ``direction(grad)``."""
        return x + size * self.direction(grad)

    def project(self, x, clean):
        """The point of the ball intersected with the image range nearest to ``x``."""
        raise NotImplementedError

    def distance(self, x, clean):
        """[B] distance of ``x`` from ``clean`` under this norm, on the 0..255 scale."""
        raise NotImplementedError


class LinfBall(ThreatModel):
    """||x - clean||_inf <= epsilon: every pixel within epsilon of its clean value (Sec. 6)."""
    norm = "linf"

    def sample(self, clean, uniform, normal):
        return uniform(None, -self.eps, self.eps)

    def direction(self, grad):
        # the maximiser of <g, d> over the L-inf unit ball: the signed gradient (FGSM, PGD)
        return tf.sign(grad)

    def project(self, x, clean):
        # the ball and the range are both boxes, so clipping to one then the other is exact
        x = tf.clip_by_value(x, clean - self.eps, clean + self.eps)
        return tf.clip_by_value(x, IMAGE_MIN, IMAGE_MAX)

    def distance(self, x, clean):
        return tf.reduce_max(tf.abs(x - clean), axis=_axes(x)) / PIXEL_SCALE


class L2Ball(ThreatModel):
    """||x - clean||_2 <= epsilon (RobustBench's second threat model)."""
    norm = "l2"

    def sample(self, clean, uniform, normal):
        """Uniform in the ball: a Gaussian direction, radius epsilon * U^(1/d) (d the image's
        dimension), which puts as much mass near the surface as the volume has."""
        g = normal(None)
        rank = clean.shape.ndims
        norm = tf.sqrt(tf.reduce_sum(tf.square(g), axis=_axes(clean)))
        dim = tf.cast(tf.reduce_prod(tf.shape(clean)[1:]), tf.float32)
        radius = self.eps * tf.pow(uniform([], 0.0, 1.0), 1.0 / dim)
        return g * _per_image(radius / tf.maximum(norm, 1e-12), rank)

    def direction(self, grad):
        norm = tf.sqrt(tf.reduce_sum(tf.square(grad), axis=_axes(grad)))
        return grad / _per_image(tf.maximum(norm, 1e-12), grad.shape.ndims)

    def project(self, x, clean):
        """The exact Euclidean projection onto {||d|| <= eps} intersected with the range box.
        By the KKT conditions it is d(s) = clip(s (x - clean), lo, hi) for the largest s in
        [0, 1] with ||d(s)|| <= eps, lo/hi the box around the clean image; ||d(s)|| grows with
        s, so s is found by bisection, per image. (Scaling into the ball and then clipping, as
        AutoAttack does, stays feasible too, but is not the nearest point when the clip binds.)"""
        d = x - clean
        lo, hi = IMAGE_MIN - clean, IMAGE_MAX - clean
        rank = x.shape.ndims
        eps2 = self.eps ** 2

        def sq_norm(s):
            return tf.reduce_sum(tf.square(tf.clip_by_value(_per_image(s, rank) * d, lo, hi)), axis=_axes(d))

        batch = tf.shape(d)[:1]
        s_lo, s_hi = tf.zeros(batch), tf.ones(batch)
        inside = sq_norm(s_hi) <= eps2
        for _ in range(L2_PROJECTION_STEPS):
            mid = 0.5 * (s_lo + s_hi)
            ok = sq_norm(mid) <= eps2
            s_lo, s_hi = tf.where(ok, mid, s_lo), tf.where(ok, s_hi, mid)
        s = tf.where(inside, tf.ones(batch), s_lo)
        return clean + tf.clip_by_value(_per_image(s, rank) * d, lo, hi)

    def distance(self, x, clean):
        return tf.sqrt(tf.reduce_sum(tf.square(x - clean), axis=_axes(x))) / PIXEL_SCALE


THREATS = {"linf": LinfBall, "l2": L2Ball}


def make_threat(norm, epsilon):
    if norm not in THREATS:
        raise AttackError("unknown norm %r; valid: %s" % (norm, ", ".join(THREATS)))
    return THREATS[norm](epsilon)
