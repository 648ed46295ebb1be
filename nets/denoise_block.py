"""The denoising block of Sec. 4.1, Fig. 4:

    y = x + BN(Conv1x1(denoise(x)))

"The denoised representation is first processed by a 1x1 convolutional layer, and then
added to the block's input via a residual connection." The 1x1 conv and the residual are
for feature combination; Table 1 ablates both (``use_1x1``, ``residual``).
"""
import tensorflow as tf
from tensorpack.models import BatchNorm, Conv2D

from .denoise_ops import DENOISE_OPS, channel_axis
from .gradients import FAST, identity_backward


def batchnorm(x, data_format, zero_init=False, name="bn", gradients=FAST):
    """BN after a conv; ``zero_init`` gives gamma = 0 so the residual branch starts as
    the identity mapping (Goyal et al. Sec. 5.1; the last BN of every residual branch).
    Frozen BN gets the cheaper gradient of nets/gradients.py unless ``gradients`` says not."""
    kw = {"gamma_initializer": tf.zeros_initializer()} if zero_init else {}
    with tf.compat.v1.get_default_graph().gradient_override_map(gradients.bn_override_map()):
        return BatchNorm(name, x, data_format=data_format, **kw)


def denoising_block(name, x, spec, data_format, bottleneck_fn=None, endpoints=None, key=None, gradients=FAST):
    """One denoising block named ``name`` (``groupK_denoise`` or ``.../non_local``).

    ``bottleneck_fn(x)`` builds the standard bottleneck used for the '+4 bottleneck'
    comparison of Fig. 7 (op = 'bottleneck'). ``endpoints`` (a dict) receives
    ``key + '/input'``, ``'/denoised'`` (the operation's output, Fig. 3) and ``'/output'``.
    ``gradients.bpda``: the operation is the identity in the backward pass (nets/gradients.py)."""
    channels = x.shape.as_list()[channel_axis(data_format)]
    record = (lambda suffix, t: endpoints.setdefault(key + suffix, t)) if endpoints is not None \
        else (lambda suffix, t: None)
    record("/input", x)
    with tf.compat.v1.variable_scope(name):
        if spec.op == "bottleneck":
            y = bottleneck_fn(x)
            record("/output", y)
            return y
        y = DENOISE_OPS[spec.op](x, spec, data_format, gradients=gradients)
        if gradients.bpda:
            y = identity_backward(x, y)
        record("/denoised", y)
        if spec.use_1x1:
            # Without the residual, the 1x1 branch is the whole output, so its BN must not
            # start at zero (that would cut the network); with it, gamma = 0 makes the
            # block the identity at initialisation.
            y = Conv2D("conv", y, channels, 1, strides=1, use_bias=False, data_format=data_format,
                       activation=lambda t: batchnorm(t, data_format, zero_init=spec.residual, gradients=gradients))
        if spec.residual:
            y = x + y
        record("/output", y)
        return y
