"""Every workaround tensorpack 0.11 and Horovod 0.28 need on TensorFlow 2, in one place.

Applied once, when the project is imported (``import core.compat`` does it; so do ``nets``,
``attacks`` and ``data``). Each workaround names the failure it prevents, and each has a
test in ``tests/test_compat.py`` that fails without it.

(0. and 4. below are environment variables that TensorFlow reads when it loads, so they are
set before it is imported.)
0. Keras 2. TensorFlow 2.16 and later bundle Keras 3, and tensorpack 0.11's layers (Conv2D,
   BatchNorm, FullyConnected: wrappers of ``tf.compat.v1.layers``) fail on it with
   ``AttributeError: `Conv2D` is not available with Keras 3``. ``TF_USE_LEGACY_KERAS=1`` makes
   ``tf.keras`` the tf-keras 2 package pinned in setup.cfg. It is forced, not defaulted: with
   any other value nothing of this project builds. If Keras 3 was loaded before this module
   (a program that touched ``tf.keras`` first), importing it stops with the fix.
1. Graph mode. tensorpack builds TF1-style graphs; it turns eager execution off only inside
   ``launch_train_with_config``. Evaluation, export and the tests build graphs outside a
   trainer, so eager execution is turned off at import for all of them alike.
2. ``HorovodTrainer.initialize`` calls ``tf.global_variables()``, which TensorFlow 2 no
   longer has (AttributeError before the first step).
   The ``tf`` that tensorpack's trainer module sees is given a fallback to ``tf.compat.v1``
   for names TensorFlow 2 removed; nothing else about TensorFlow changes.
3. tensorpack's trainer reports a failed run with ``logger.error("Training failed at
   global_step=", step)``: an argument without a ``%s``, so Python's logging prints
   "--- Logging error ---" and a traceback to stderr on top of the real error (a diverged
   loss, a failed checkpoint write). tensorpack's ``logger.error``/``warn``/``info`` are
   made to join such extra arguments to the message instead.
"""
import os
import types

# TensorFlow's C++ start-up chatter hides our own messages; users can still override it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# 0. Keras 2 for tensorpack's layers (see above).
os.environ["TF_USE_LEGACY_KERAS"] = "1"
# 4. oneDNN kernels on every CPU. TensorFlow turns them on by default only on AVX-512-class
#    CPUs; without them the NCHW Conv2D/MaxPool kernels do not exist on the CPU at all, and an
#    adversarial training step of the small nets was 1.6x (baseline) to 2.3x (Gaussian
#    non-local) slower on an AVX2 machine. Read once, when TensorFlow is first imported, hence
#    before the import below; a user's own setting wins. Known issue (seen on TF 2.15.1):
#    after an NCHW max-pool, an NHWC max-pool of the same shape in the same process can return
#    wrong values; use one layout per process (train.py/eval.py do).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import tensorflow as tf  # noqa: E402

_APPLIED = False


class _TF2WithV1Fallback(types.ModuleType):
    """``tensorflow`` as tensorpack's trainer module expects it: TF2's names first, and
    for a name TF2 removed (``global_variables``, ...), the ``tf.compat.v1`` one."""

    def __init__(self):
        super().__init__("tensorflow_with_v1_fallback")

    def __getattr__(self, name):
        try:
            return getattr(tf, name)
        except AttributeError:
            return getattr(tf.compat.v1, name)


def _patch_tensorpack_trainers():
    from tensorpack.train import trainers
    if not isinstance(trainers.tf, _TF2WithV1Fallback):
        trainers.tf = _TF2WithV1Fallback()


def _tolerant(log):
    def call(msg, *args, **kwargs):
        if args and "%" not in str(msg):
            msg, args = " ".join([str(msg)] + [str(a) for a in args]), ()
        kwargs.setdefault("stacklevel", 2)   # log records name the caller, not this wrapper
        return log(msg, *args, **kwargs)
    call.tolerant = True
    return call


def _patch_tensorpack_logger():
    from tensorpack.utils import logger
    for name in ("error", "warn", "warning", "info"):
        log = getattr(logger, name, None)
        if log is not None and not getattr(log, "tolerant", False):
            setattr(logger, name, _tolerant(log))


def _check_keras_2():
    """tensorpack's layers wrap ``tf.compat.v1.layers``, which only Keras 2 provides."""
    if not hasattr(tf.compat.v1.layers, "Conv2D"):
        raise ImportError("tf.keras is Keras %s, but tensorpack's layers need Keras 2 (the tf-keras package): import "
                          "the project (core, nets, attacks or data) before anything touches tf.keras, and install "
                          "tf-keras (bash scripts/setup.sh does)" % getattr(tf.keras, "__version__", "3"))


def apply():
    """Apply all workarounds (idempotent)."""
    global _APPLIED
    if _APPLIED:
        return
    _check_keras_2()
    tf.compat.v1.disable_eager_execution()
    _patch_tensorpack_trainers()
    _patch_tensorpack_logger()
    _APPLIED = True


apply()
