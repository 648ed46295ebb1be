"""The denoising block of Sec. 4.1, Fig. 4:

    y = x + BN(Conv1x1(denoise(x)))

"The denoised representation is first processed by a 1x1 convolutional layer, and then
added to the block's input via a residual connection." The 1x1 conv and the residual are
for feature combination; Table 1 ablates both (``use_1x1``, ``residual``).
"""
import contextlib

import tensorflow as tf
from tensorpack.models import BatchNorm, Conv2D

from .denoise_ops import DENOISE_OPS, channel_axis


FROZEN_BN_GRADIENT = "FdenoiseFrozenBatchNormGrad"


@tf.RegisterGradient(FROZEN_BN_GRADIENT)
def _frozen_batchnorm_grad(op, dy, *unused):
    """Gradient of FusedBatchNormV3. In inference mode (frozen BN: the attack, evaluation)
    BN is y = x * s + (beta - mean * s) with s = gamma / sqrt(var + eps), so dx = dy * s: one
    multiply, the same formula as TensorFlow's FusedBatchNormGradV3 (which also computes the
    gamma/beta gradients the attack never uses). The BN op's extra outputs then have no
    consumer, so the forward conv + BN (+ ReLU) fuse into one oneDNN kernel as they do without
    a gradient. `python -m bench.run` measures the speed-up against TensorFlow's gradient in
    every run ("Frozen-BN gradient (ablation)" in docs/PERFORMANCE.md). The gamma/beta gradients are still
    returned (TensorFlow prunes them when unused); training-mode BN keeps TensorFlow's gradient."""
    if op.get_attr("is_training"):
        from tensorflow.python.ops import nn_grad
        return nn_grad._FusedBatchNormV3Grad(op, dy, *unused)
    x, gamma, _, mean, variance = op.inputs
    nchw = op.get_attr("data_format") in (b"NCHW", "NCHW")
    shape, axes = ([1, -1, 1, 1], [0, 2, 3]) if nchw else ([1, 1, 1, -1], [0, 1, 2])
    inv_std = tf.math.rsqrt(variance + op.get_attr("epsilon"))
    dx = dy * tf.cast(tf.reshape(gamma * inv_std, shape), dy.dtype)
    dy32 = tf.cast(dy, tf.float32)
    dgamma = tf.reduce_sum(dy32 * (tf.cast(x, tf.float32) - tf.reshape(mean, shape)), axes) * inv_std
    return dx, dgamma, tf.reduce_sum(dy32, axes), None, None


_BN_GRADIENT_OVERRIDE = {"FusedBatchNormV3": FROZEN_BN_GRADIENT}


@contextlib.contextmanager
def tensorflow_bn_gradient():
    """Graphs built inside use TensorFlow's own BN gradient (the ablation bench.run measures)."""
    global _BN_GRADIENT_OVERRIDE
    saved, _BN_GRADIENT_OVERRIDE = _BN_GRADIENT_OVERRIDE, {}
    try:
        yield
    finally:
        _BN_GRADIENT_OVERRIDE = saved


@contextlib.contextmanager
def tensorflow_gradients_only():
    """Graphs built inside carry none of this project's gradient overrides (the frozen-BN
    gradient above, the median's in nets/denoise_ops.py), only ops whose gradients every
    TensorFlow has. Exported graphs (frozen GraphDef, SavedModel) are built so: their nodes
    would otherwise name gradient functions that only a process importing ``nets`` has
    registered, and ``tf.gradients`` on them elsewhere, as a white-box attacker of a
    submitted model would run it, raises LookupError. The forward computation is the same."""
    from .denoise_ops import exchange_network_median_gradient
    with tensorflow_bn_gradient(), exchange_network_median_gradient():
        yield


def batchnorm(x, data_format, zero_init=False, name="bn"):
    """BN after a conv; ``zero_init`` gives gamma = 0 so the residual branch starts as
    the identity mapping (Goyal et al. Sec. 5.1; the last BN of every residual branch).
    Frozen BN gets the cheaper gradient of ``_frozen_batchnorm_grad``."""
    kw = {"gamma_initializer": tf.zeros_initializer()} if zero_init else {}
    with tf.compat.v1.get_default_graph().gradient_override_map(_BN_GRADIENT_OVERRIDE):
        return BatchNorm(name, x, data_format=data_format, **kw)


def denoising_block(name, x, spec, data_format, bottleneck_fn=None, endpoints=None, key=None):
    """One denoising block named ``name`` (``groupK_denoise`` or ``.../non_local``).

    ``bottleneck_fn(x)`` builds the standard bottleneck used for the '+4 bottleneck'
    comparison of Fig. 7 (op = 'bottleneck'). ``endpoints`` (a dict) receives
    ``key + '/input'``, ``'/denoised'`` (the operation's output, Fig. 3) and ``'/output'``."""
    channels = x.shape.as_list()[channel_axis(data_format)]
    record = (lambda suffix, t: endpoints.setdefault(key + suffix, t)) if endpoints is not None \
        else (lambda suffix, t: None)
    record("/input", x)
    with tf.compat.v1.variable_scope(name):
        if spec.op == "bottleneck":
            y = bottleneck_fn(x)
            record("/output", y)
            return y
        y = DENOISE_OPS[spec.op](x, spec, data_format)
        record("/denoised", y)
        if spec.use_1x1:
            # Without the residual, the 1x1 branch is the whole output, so its BN must not
            # start at zero (that would cut the network); with it, gamma = 0 makes the
            # block the identity at initialisation.
            y = Conv2D("conv", y, channels, 1, strides=1, use_bias=False, data_format=data_format,
                       activation=lambda t: batchnorm(t, data_format, zero_init=spec.residual))
        if spec.residual:
            y = x + y
        record("/output", y)
        return y
