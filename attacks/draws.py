"""Where an attack's random numbers come from: its targets, random starts and search
directions.

Training draws fresh values every step (stateful ops with a graph-level seed). Evaluation
draws each image's values from the seed and the image's content alone (stateless), so a
figure does not depend on ``--batch``, the image order or the number of Horovod ranks, and
every model and attack strength sees the same target for the same image.
"""
import tensorflow as tf

from .threat import AttackError, to_pixels

# One stream per use, so that a target and a start never share bits. A restart r draws its
# start from the streams shifted by STREAMS_PER_RESTART * r (an L2 start's direction from
# START_DIRECTION_STREAM on); an attack that draws during its search (Square) numbers those
# draws from SEARCH_STREAM upwards.
TARGET_STREAM, START_STREAM, FROM_CLEAN_STREAM = 0, 1, 2
STREAMS_PER_RESTART = 3
START_DIRECTION_STREAM = 1 << 16
SEARCH_STREAM = 1 << 20


def image_keys(clean):
    """[B] int64: a fingerprint of each image's content (farmhash of its 0..255 pixels).
    Keying the draws of an evaluation by content, not by position, makes them independent
    of the batch size, the order, skipped files and the number of Horovod ranks. The pixels
    are rounded back to uint8 first, so a last-bit difference of the float image (another
    device's arithmetic, -0.0) does not change the key. ``tf.fingerprint`` has a CPU kernel
    only: the keys are computed once per batch and soft placement puts them on the host."""
    pixels = tf.cast(tf.clip_by_value(tf.round(to_pixels(clean)), 0.0, 255.0), tf.uint8)
    return tf.bitcast(tf.fingerprint(pixels), tf.int64)


def _per_image(keys, seed, stream, draw):
    first = tf.cast(seed, tf.int64) * 1000003 + tf.cast(stream, tf.int64)
    # plain graph ops: AutoGraph has nothing to convert here (and converting writes temporary files)
    body = tf.autograph.experimental.do_not_convert(lambda key: draw(tf.stack([first, key])))
    return lambda dtype: tf.map_fn(body, keys, fn_output_signature=dtype, name="per_image_draw")


def per_image_uniform(keys, seed, stream, shape, minval, maxval, dtype=tf.float32):
    """One stateless uniform draw of ``shape`` per image, a function of (``seed``,
    ``stream``, the image's key) only. ``stream`` may be a tensor (a restart's number)."""
    return _per_image(keys, seed, stream, lambda s: tf.random.stateless_uniform(
        shape, s, minval=minval, maxval=maxval, dtype=dtype))(dtype)


def per_image_normal(keys, seed, stream, shape):
    """One stateless standard-normal draw of ``shape`` per image (see ``per_image_uniform``)."""
    return _per_image(keys, seed, stream, lambda s: tf.random.stateless_normal(shape, s))(tf.float32)


def check_seed(seed):
    if seed is not None and not (isinstance(seed, int) and 0 <= seed < 2 ** 31):
        raise AttackError("the attack seed must be an integer in [0, 2^31), got %r: pass a smaller --seed" % (seed,))
    return seed


def _with_static_shape(values, like, shape):
    if shape is None:
        values.set_shape(like.shape)
    return values


class Draws:
    """The random numbers of one attack.

    ``per_image=False`` (training): stateful ops with op seed ``seed`` (None: TensorFlow's
    graph-level seed decides), fresh values every step, drawn per batch.
    ``per_image=True`` (evaluation): stateless draws keyed by (``seed``, stream, the image's
    content); ``seed`` must be an int in [0, 2^31)."""

    def __init__(self, seed=None, per_image=False):
        if per_image and seed is None:
            raise AttackError("per-image draws need a seed")
        self.seed = check_seed(seed) if per_image else seed
        self.per_image = bool(per_image)

    def describe(self):
        return ", per-image seed=%d" % self.seed if self.per_image else ""

    def keys(self, clean):
        """The per-image keys (``image_keys``), or None for stateful draws. Computed once per
        batch and passed to every draw of the attack."""
        return image_keys(clean) if self.per_image else None

    def _op_seed(self, offset):
        return None if self.seed is None else self.seed + offset

    def _shape(self, like, shape, per_image):
        """The shape of a draw for the batch ``like``: per image ([B] excluded) or whole."""
        if shape is None:
            return tf.shape(like)[1:] if per_image else tf.shape(like)
        if per_image:
            return shape
        return tf.concat([tf.shape(like)[:1], tf.reshape(tf.cast(shape, tf.int32), [-1])], axis=0)

    def uniform(self, keys, stream, like, shape, minval, maxval, dtype=tf.float32):
        """[B] + ``shape`` uniform values for the batch ``like`` (``shape`` None: like's)."""
        if self.per_image:
            out = per_image_uniform(keys, self.seed, stream, self._shape(like, shape, True), minval, maxval, dtype)
            return _with_static_shape(out, like, shape)
        out = tf.random.uniform(self._shape(like, shape, False), minval, maxval, dtype=dtype, seed=self._op_seed(0))
        return _with_static_shape(out, like, shape)

    def normal(self, keys, stream, like, shape):
        if self.per_image:
            return _with_static_shape(per_image_normal(keys, self.seed, stream, self._shape(like, shape, True)), like,
                                      shape)
        # another op seed than ``uniform``'s: ops of one seed draw from the same stream
        out = tf.random.normal(self._shape(like, shape, False), seed=self._op_seed(2))
        return _with_static_shape(out, like, shape)

    def targets(self, label, num_classes, keys=None):
        """Sec. 6: "the targeted class is selected uniformly at random" among the other
        classes: (label + U{1..K-1}) mod K."""
        if self.per_image:
            offset = per_image_uniform(keys, self.seed, TARGET_STREAM, [], 1, num_classes, tf.int32)
        else:
            offset = tf.random.uniform(tf.shape(label), minval=1, maxval=num_classes, dtype=tf.int32,
                                       seed=self.seed)
        return tf.math.floormod(label + offset, num_classes)

    def start_noise(self, threat, clean, keys, restart=0):
        """A perturbation drawn uniformly from ``threat``'s ball, for restart ``restart``
        (per-image draws: its own streams; stateful: fresh values anyway)."""
        streams = STREAMS_PER_RESTART * tf.cast(restart, tf.int64)

        def uniform(shape, lo, hi):
            return self.uniform(keys, START_STREAM + streams, clean, shape, lo, hi)

        def normal(shape):
            return self.normal(keys, START_DIRECTION_STREAM + streams, clean, shape)
        return threat.sample(clean, uniform, normal)

    def from_clean(self, clean, keys, probability, restart=0):
        """[B] float 0/1: 1 where the attack starts from the clean image (Sec. 5: "20% of
        training batches use clean images to initialize PGD"): drawn for the whole batch
        (stateful), or per image."""
        if self.per_image:
            streams = STREAMS_PER_RESTART * tf.cast(restart, tf.int64)
            u = per_image_uniform(keys, self.seed, FROM_CLEAN_STREAM + streams, [], 0.0, 1.0)
            return tf.cast(u < probability, tf.float32)
        u = tf.random.uniform([], seed=self._op_seed(1))
        return tf.fill(tf.shape(clean)[:1], tf.cast(u < probability, tf.float32))
