"""ResNet / ResNeXt backbones with denoising blocks (Sec. 6: "Our baselines are
ResNet-101/152 [9]"; Sec. 6.2: ResNeXt-101 32x8d [26] for the CAAD 2018 entry).

Variable names and shapes are those of the released checkpoints
(tests/data/checkpoint-variables/*.json): ``conv0``, ``group{K}/block{I}/conv{1,2,3}``,
``convshortcut``, every conv without bias and followed by ``<conv>/bn``, ``linear``.
"""
import tensorflow as tf
from tensorpack.models import (BatchNorm, Conv2D, FullyConnected, GlobalAvgPooling, MaxPooling)
from tensorpack.tfutils.argscope import argscope

from .denoise_block import batchnorm, denoising_block
from .gradients import FAST
from .spec import RESNEXT_CARDINALITY, RESNEXT_GROUP_WIDTH


def _bn_relu(data_format, zero_init=False, gradients=FAST):
    return lambda x: tf.nn.relu(batchnorm(x, data_format, zero_init=zero_init, gradients=gradients))


def _bn(data_format, zero_init=False, gradients=FAST):
    return lambda x: batchnorm(x, data_format, zero_init=zero_init, gradients=gradients)


def bottleneck_block(x, width, out_channels, stride, data_format, groups=1, gradients=FAST):
    """conv1 1x1 -> conv2 3x3 (carries the stride; grouped for ResNeXt) -> conv3 1x1, each
    with BN; the last BN starts at gamma = 0 (Goyal et al. Sec. 5.1). A projection shortcut
    ``convshortcut`` where the shape changes."""
    in_channels = x.shape.as_list()[1 if data_format == "NCHW" else 3]
    shortcut = x
    y = Conv2D("conv1", x, width, 1, activation=_bn_relu(data_format, gradients=gradients))
    y = Conv2D("conv2", y, width, 3, strides=stride, split=groups,
               activation=_bn_relu(data_format, gradients=gradients))
    y = Conv2D("conv3", y, out_channels, 1, activation=_bn(data_format, zero_init=True, gradients=gradients))
    if in_channels != out_channels or stride != 1:
        shortcut = Conv2D("convshortcut", x, out_channels, 1, strides=stride,
                          activation=_bn(data_format, gradients=gradients))
    return tf.nn.relu(y + shortcut)


def _stage_shape(spec, stage):
    """(bottleneck width, output channels, groups) of stage ``stage`` (res{stage+2})."""
    if spec.family == "resnext":
        width = RESNEXT_CARDINALITY * RESNEXT_GROUP_WIDTH * 2 ** stage
        return width, 256 * 2 ** stage, RESNEXT_CARDINALITY
    width = spec.width * 2 ** stage
    return width, 4 * width, 1


def backbone_logits(image, spec, endpoints=None, gradients=FAST):
    """Logits of the network ``spec`` (an ArchSpec) for ``image``, NHWC float in [-1, 1].

    ``endpoints``, if a dict, receives the intermediate feature maps (in ``spec.data_format``)
    that Sec. 3 looks at: ``res{2..5}`` (each stage's output; with denoising at the end of the
    stage only, before it, with ``at="all"`` after the last block's denoising) and,
    per denoising block, ``<name>/input``, ``<name>/denoised`` (after the denoising operation,
    before the 1x1 conv: the blue box of Fig. 4, shown in Fig. 3) and ``<name>/output``.

    ``gradients``: which gradient implementations the graph carries (nets/gradients.py).

    Tensorpack layers, so variables are created on first use and reused when the caller's
    variable scope says so; BN follows tensorpack's tower context unless an argscope says
    otherwise (the attack freezes it)."""
    df = spec.data_format
    den = spec.denoise
    if df == "NCHW":
        image = tf.transpose(image, [0, 3, 1, 2])

    def bottleneck_for_denoise(x):
        c = x.shape.as_list()[1 if df == "NCHW" else 3]
        return bottleneck_block(x, c // 4, c, 1, df, gradients=gradients)

    with argscope([Conv2D, MaxPooling, GlobalAvgPooling, BatchNorm], data_format=df), \
            argscope(Conv2D, use_bias=False,
                     # He init, fan-out (Goyal et al.), as the original: TensorFlow 1's
                     # variance_scaling_initializer, whose default draws from a normal truncated
                     # at two standard deviations and rescaled to variance 2 / fan-out. The TF1
                     # initializer honours the graph seed, so seeded runs are reproducible.
                     kernel_initializer=tf.compat.v1.variance_scaling_initializer(
                         scale=2.0, mode="fan_out", distribution="truncated_normal")):
        if spec.family == "small":
            # 28x28 / 32x32 inputs: a 3x3 stem and no max-pool, so res2 works at full size.
            x = Conv2D("conv0", image, spec.width, 3, strides=1, activation=_bn_relu(df, gradients=gradients))
        else:
            x = Conv2D("conv0", image, 64, 7, strides=2, activation=_bn_relu(df, gradients=gradients))
            x = MaxPooling("pool0", x, 3, strides=2, padding="SAME")

        for stage, num_blocks in enumerate(spec.blocks_per_stage):
            width, out_channels, groups = _stage_shape(spec, stage)
            with tf.compat.v1.variable_scope("group%d" % stage):
                for i in range(num_blocks):
                    stride = 2 if (i == 0 and stage > 0) else 1
                    with tf.compat.v1.variable_scope("block%d" % i):
                        x = bottleneck_block(x, width, out_channels, stride, df, groups, gradients)
                        if den.enabled and den.at == "all":
                            # Sec. 6.2: "one denoising block after each residual block".
                            x = denoising_block("non_local", x, den, df, bottleneck_for_denoise,
                                                endpoints, "res%d/block%d/denoise" % (stage + 2, i), gradients)
            if endpoints is not None:
                endpoints.setdefault("res%d" % (stage + 2), x)
            if den.enabled and den.at == "groups":
                # Sec. 6: "each is added after the last residual block of res2..res5".
                x = denoising_block("group%d_denoise" % stage, x, den, df, bottleneck_for_denoise,
                                    endpoints, "res%d/denoise" % (stage + 2), gradients)

        x = GlobalAvgPooling("gap", x)
        # The FC layer initialised from N(0, 0.01) (Goyal et al. Sec. 5.1).
        logits = FullyConnected("linear", x, spec.num_classes,
                                kernel_initializer=tf.compat.v1.random_normal_initializer(stddev=0.01))
    return logits
