"""Low-precision (fp16 / bf16) attack iterations and their loss scaling.

The release notes of the original report that an fp16 + XLA attack roughly halved training
time at a cost of about 3 points of robustness (docs/ORIGINAL.md); the paper
(Sec. 5) itself trains with an fp32 attack. So this is an option, off by default, for the
attack iterations only: the SGD step and every evaluation stay in fp32.

How the network runs in low precision without new variables: the model is called on the
image cast to fp16/bf16 inside a ``variable_scope`` whose custom getter asks for the
existing float32 variable (same name, same object, so checkpoints are unaffected and the
attack reads the training tower's weights) and returns its cast. tf.layers and tensorpack
request variables in the input's dtype; BatchNorm requests float32 parameters for fp16 and
bf16 inputs (Keras' mixed-precision rule) and runs the fused kernel with float32 statistics,
so inference-mode BN stays numerically the fp32 computation. The logits are cast back to
float32 before the loss.

Loss scaling (fp16 only): fp16's smallest positive value is 6e-8, and the gradient of the
cross-entropy of a confidently classified image with respect to its logits is easily
below it (it is p - onehot), so the whole input gradient of such an image would underflow
to 0 and PGD would not move it. The attack's images are independent (BN in inference
mode), so each image gets its own scale: a power of two s_i that brings the largest
entry of its float32 logit gradient to between ``loss_scale``/2 and ``loss_scale``, i.e. the
backward pass through the network starts from the gradient of sum_i s_i L_i. The input gradient is divided by s_i in
float32 afterwards (exact: powers of two), so every attacker sees the gradient it would
see unscaled (sign steps are scale-invariant anyway; MI-FGSM's L1 normalisation too).
An image whose gradient is still not finite (an overflow in the fp16 backward) gets a zero
gradient for that iteration (PGD leaves it where it is, rather than making it NaN) and
continues with a 256x smaller scale (``OVERFLOW_BACKOFF``, carried per image through the
attack loop): dynamic loss scaling, per image, without the growth phase, which attacks of
a few dozen iterations do not need since the scale is re-fitted to each gradient anyway.
bf16 has fp32's exponent range and needs no scaling.
"""
import contextlib

import tensorflow as tf

tfv1 = tf.compat.v1

PRECISIONS = {"fp32": tf.float32, "fp16": tf.float16, "bf16": tf.bfloat16}
# The default target of the per-image scale: the backward starts from a gradient whose
# largest entry is 2^10, leaving 2^10..2^6 of head-room below fp16's maximum (65504) for
# the growth of gradients through the network, and 2^34 above its smallest subnormal.
DEFAULT_FP16_LOSS_SCALE = 2.0 ** 10
OVERFLOW_BACKOFF = 8.0     # log2 of the factor an overflowing image's scale is divided by


def _cast_getter(dtype):
    def cast_getter(getter, name, *args, **kwargs):
        if kwargs.get("dtype") is not None and tf.as_dtype(kwargs["dtype"]).base_dtype == dtype:
            kwargs["dtype"] = tf.float32
            return tf.cast(getter(name, *args, **kwargs), dtype)
        return getter(name, *args, **kwargs)
    return cast_getter


@contextlib.contextmanager
def cast_variables_to(dtype):
    """Variables requested in ``dtype`` are the float32 ones, read through a cast."""
    with tfv1.variable_scope(tfv1.get_variable_scope(), custom_getter=_cast_getter(dtype)):
        yield


def low_precision_logits(model_fn, images, dtype):
    """float32 logits of ``model_fn`` run in ``dtype`` (float32: the plain call)."""
    if dtype == tf.float32:
        return model_fn(images)
    with cast_variables_to(dtype):
        logits = model_fn(tf.cast(images, dtype))
    return tf.cast(logits, tf.float32)


def scaled_input_gradient(objective, logits, images, loss_scale, backoff):
    """d sum(objective) / d images with per-image power-of-two loss scaling (see above).

    ``objective`` [B] and ``logits`` [B, K] are float32, ``logits`` the cast of the
    low-precision network's output; ``backoff`` [B] the per-image log2 reduction of the
    scale so far (0 at the start). Returns (gradient, backoff for the next iteration)."""
    g_logits = tf.gradients(tf.reduce_sum(objective), logits)[0]
    peak = tf.reduce_max(tf.abs(g_logits), axis=1)
    exponent = tf.floor(tf.math.log(loss_scale / tf.maximum(peak, 1e-30)) / tf.math.log(2.0)) - backoff
    scale = tf.pow(2.0, tf.clip_by_value(exponent, -100.0, 100.0))
    grad = tf.gradients(logits, images, grad_ys=g_logits * scale[:, None])[0]
    grad = grad / tf.reshape(scale, [-1] + [1] * (grad.shape.ndims - 1))
    grad, finite = zero_non_finite(grad)
    return grad, tf.where(finite, backoff, backoff + OVERFLOW_BACKOFF)


def zero_non_finite(grad):
    """(gradient with non-finite images zeroed, finite [B] bool)."""
    axes = list(range(1, grad.shape.ndims))
    finite = tf.reduce_all(tf.math.is_finite(grad), axis=axes)
    mask = tf.reshape(finite, [-1] + [1] * len(axes))
    return tf.where(tf.broadcast_to(mask, tf.shape(grad)), grad, tf.zeros_like(grad)), finite


def running_mean(draw, count, first=None):
    """The mean of ``count`` draws of ``draw() -> (kept, averaged, carried)``: ``averaged``
    (tensors) averaged over the draws by the running update m_k = m_k-1 + (v_k - m_k-1) / k,
    which is exact when every draw gives the same value (a deterministic model: EOT then
    equals a single draw bit for bit); ``kept`` (tensors) those of the last draw. Draws run
    one after another in a ``tf.while_loop``, each calling the network anew, so a
    randomised model draws its randomness afresh (Athalye et al. 2018's expectation over
    transformation). ``first``: the first draw, if already made."""
    kept, averaged = first if first is not None else draw()
    if count == 1:
        return kept, averaged

    def body(k, kept, averaged):
        new_kept, new_avg = draw()
        weight = 1.0 / tf.cast(k + 1, tf.float32)
        return k + 1, new_kept, [m + (v - m) * weight for m, v in zip(averaged, new_avg)]

    _, kept, averaged = tf.compat.v1.while_loop(lambda k, *_: k < count, body, [tf.constant(1), kept, averaged],
                                                back_prop=False, parallel_iterations=1, name="eot")
    return kept, averaged


class Precision:
    """How an attack's iterations evaluate the network and its input gradient: ``precision``
    'fp32' (default), 'fp16' or 'bf16' on the same float32 variables; ``loss_scale`` fp16's
    per-image loss-scaling target (None: 2^10 for fp16, none otherwise; 0: no scaling);
    ``xla``: compile each iteration (forward, gradient, step, projection) with XLA; ``eot``:
    the gradient averaged over that many draws of a randomised model (expectation over
    transformation, Athalye et al., ICML 2018; AutoAttack's "rand" version takes 20), the
    logits those of the last draw, as AutoAttack's APGD takes them."""

    def __init__(self, precision="fp32", loss_scale=None, xla=False, eot=1):
        from .threat import AttackError
        if precision not in PRECISIONS:
            raise AttackError("unknown attack precision %r; valid: %s" % (precision, ", ".join(PRECISIONS)))
        if loss_scale is not None and not loss_scale >= 0:
            raise AttackError("attack loss scale must be >= 0 (0: none), got %g" % loss_scale)
        if not isinstance(eot, int) or eot < 1:
            raise AttackError("--eot must be an integer >= 1 (draws of the model per gradient), got %r" % (eot,))
        self.precision = precision
        self.loss_scale = (DEFAULT_FP16_LOSS_SCALE if precision == "fp16" else 0.0) if loss_scale is None \
            else float(loss_scale)
        self.xla = bool(xla)
        self.eot = eot

    def describe(self):
        extra = "" if self.precision == "fp32" else ", %s" % self.precision
        extra += ", loss_scale=%g" % self.loss_scale if self.loss_scale else ""
        extra += ", eot=%d" % self.eot if self.eot > 1 else ""
        return extra + (", xla" if self.xla else "")

    def scope(self):
        """Where each attack iteration's ops are built: XLA's jit scope, or nothing. (Every op
        of the iteration carries _XlaCompile, the gradient ops included. Compiling the loop
        body with tf.xla.experimental.compile gave wrong images in the training tower on
        TensorFlow 2.15's CPU kernels: docs/PERFORMANCE.md.)"""
        return tf.xla.experimental.jit_scope() if self.xla else contextlib.nullcontext()

    def _gradient_once(self, objective_fn, model_fn, images, backoff):
        logits = low_precision_logits(model_fn, images, PRECISIONS[self.precision])
        obj = objective_fn(logits)
        if self.precision == "fp32":
            return logits, tf.gradients(tf.reduce_sum(obj), images)[0], backoff
        if self.loss_scale:
            grad, backoff = scaled_input_gradient(obj, logits, images, self.loss_scale, backoff)
            return logits, grad, backoff
        return logits, zero_non_finite(tf.gradients(tf.reduce_sum(obj), images)[0])[0], backoff

    def _eot_gradient(self, objective_fn, model_fn, images, backoff):
        def draw():
            logits, grad, new_backoff = self._gradient_once(objective_fn, model_fn, images, backoff)
            return [logits, new_backoff], [grad]
        (logits, backoff), (grad,) = running_mean(draw, self.eot)
        return logits, grad, backoff

    def logits_and_gradient(self, objective_fn, model_fn, images):
        """(float32 logits, float32 gradient of the summed objective w.r.t. ``images``) in this
        precision (fp16 without per-image loss-scale memory: each call fits its scale afresh),
        the gradient averaged over ``eot`` draws."""
        logits, grad, _ = self._eot_gradient(objective_fn, model_fn, images, tf.zeros(tf.shape(images)[:1]))
        return logits, grad

    def input_gradient(self, objective_fn, model_fn, images, backoff):
        """(float32 gradient of the summed objective w.r.t. ``images``, the network run in this
        precision; next ``backoff``). ``objective_fn(logits) -> [B]``. In low precision an
        image with a non-finite gradient gets 0; ``backoff`` [B]: the per-image loss-scale
        reduction so far (see the module's docstring)."""
        _, grad, backoff = self._eot_gradient(objective_fn, model_fn, images, backoff)
        return grad, backoff

    def logits_and_jacobian(self, model_fn, images, num_classes):
        """(float32 logits [B, K], the gradient of every logit w.r.t. the image [B, K, ...]),
        averaged over ``eot`` draws. Each image is repeated K times and copy j's gradient is
        that of logit j: one backward pass of a K-times larger batch (FAB's untargeted
        version needs all K; the authors' code runs K backward passes of one batch). Runs in
        float32 whatever ``precision`` says (an fp16 Jacobian would need a loss scale per
        logit)."""
        k = int(num_classes)
        batch = tf.shape(images)[0]
        rank = images.shape.ndims
        tiled = tf.reshape(tf.tile(images[:, None], [1, k] + [1] * (rank - 1)),
                           tf.concat([[batch * k], tf.shape(images)[1:]], axis=0))

        def draw():
            z = tf.cast(model_fn(tiled), tf.float32)                               # [B K, K]
            chosen = tf.reduce_sum(z * tf.tile(tf.eye(k), [batch, 1]))
            jac = tf.gradients(chosen, tiled)[0]
            jac = tf.reshape(jac, tf.concat([[batch, k], tf.shape(images)[1:]], axis=0))
            return [tf.reshape(z, [batch, k, k])[:, 0]], [jac]
        (logits,), (jac,) = running_mean(draw, self.eot)
        return logits, jac


FP32 = Precision()
