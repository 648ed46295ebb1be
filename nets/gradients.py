"""Which gradients a network graph carries, and how its element-wise work is compiled. The
forward computation is the same under every choice; what changes is how ``tf.gradients``
computes through it (which the attacks use) and how fast.

- ``frozen_bn``: inference-mode BN gets a one-multiply gradient (``frozen_batchnorm_grad``),
  the same formula as TensorFlow's but without the gamma/beta work the attack never uses.
- ``median``: "selected" sends all of the gradient to the input the 3x3 median selected;
  "network" back-propagates through the 18 min/max ops of its separable network.
- ``nonlocal_grad``: "fused" gives the Gaussian non-local op a hand-written gradient that
  uses sum_j dW_ij W_ij = sum_c dY_ic Y_ic (an N x C sum instead of TensorFlow's N x N product
  and sum in the softmax's gradient); "tensorflow" differentiates the softmax as TensorFlow does.
- ``xla``: the element-wise work of the median, bilateral and Gaussian non-local ops is
  compiled by XLA (``jit_scope``) into fused loops: one pass over memory instead of one per
  op. The same values (tests/test_denoise_ops.py compares them); chosen because it measured
  faster on CPUs (docs/PERFORMANCE.md); a process that sees a GPU builds the plain ops.
- ``bpda``: every denoising operation is the identity in the backward pass only
  (Backward Pass Differentiable Approximation, Athalye et al., ICML 2018): the audit's check
  that the operations do not mask gradients.

``FAST`` is what training and evaluation use; ``TENSORFLOW_ONLY`` is what exported graphs are
built with: only ops whose gradients every TensorFlow has, and no XLA clusters, so that any
TensorFlow process (or a converter such as tf2onnx) can run and differentiate them without this
code (a white-box attacker of a submitted model).
"""
import contextlib
from dataclasses import dataclass

import tensorflow as tf

FROZEN_BN_GRADIENT = "FdenoiseFrozenBatchNormGrad"
MEDIAN_GRADIENTS = ("selected", "network")
NONLOCAL_GRADIENTS = ("fused", "tensorflow")


@dataclass(frozen=True)
class Gradients:
    frozen_bn: bool = True
    median: str = "selected"
    nonlocal_grad: str = "fused"
    xla: bool = True
    bpda: bool = False

    def __post_init__(self):
        if self.median not in MEDIAN_GRADIENTS:
            raise ValueError("median gradient %r; valid: %s" % (self.median, ", ".join(MEDIAN_GRADIENTS)))
        if self.nonlocal_grad not in NONLOCAL_GRADIENTS:
            raise ValueError("non-local gradient %r; valid: %s" % (self.nonlocal_grad, ", ".join(NONLOCAL_GRADIENTS)))

    def fused(self):
        """A context in which the element-wise ops built are compiled by XLA (``xla``), or none.
        On CPUs only: that is where it was measured; a process that sees a GPU builds the plain
        ops (XLA on GPUs needs CUDA's libdevice and ptxas, untested here)."""
        if self.xla and not _sees_gpu():
            return tf.xla.experimental.jit_scope()
        return contextlib.nullcontext()

    def bn_override_map(self):
        """The gradient_override_map for the BN ops of a graph built with these gradients."""
        return {"FusedBatchNormV3": FROZEN_BN_GRADIENT} if self.frozen_bn else {}


def _sees_gpu():
    return bool(tf.config.list_physical_devices("GPU"))


FAST = Gradients()
TENSORFLOW_ONLY = Gradients(frozen_bn=False, median="network", nonlocal_grad="tensorflow", xla=False)


@tf.RegisterGradient(FROZEN_BN_GRADIENT)
def frozen_batchnorm_grad(op, dy, *unused):
    """Gradient of FusedBatchNormV3. In inference mode (frozen BN: the attack, evaluation)
    BN is y = x * s + (beta - mean * s) with s = gamma / sqrt(var + eps), so dx = dy * s: one
    multiply, the same formula as TensorFlow's FusedBatchNormGradV3 (which also computes the
    gamma/beta gradients the attack never uses). The BN op's extra outputs then have no
    consumer, so the forward conv + BN (+ ReLU) fuse into one oneDNN kernel as they do without
    a gradient. `python -m bench.run` measures the speed-up against TensorFlow's gradient in
    every run ("Frozen-BN gradient (ablation)" in docs/PERFORMANCE.md). The gamma/beta gradients
    are still returned (TensorFlow prunes them when unused); training-mode BN keeps
    TensorFlow's gradient."""
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


def identity_backward(x, y):
    """``y`` in the forward pass, the identity of ``x`` in the backward pass (BPDA). Exact:
    stop_gradient(y) + (x - stop_gradient(x)) adds a true zero to y."""
    return tf.stop_gradient(y) + (x - tf.stop_gradient(x))
