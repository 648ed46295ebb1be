"""TRADES's inner attack (Zhang, Yu, Jiao, Xing, El Ghaoui and Jordan, ICML 2019, Eq. 5 and
Algorithm 1): x' maximises KL(f(x) || f(x')), the divergence of the network's predictions on
the adversarial image from those on the clean one, by k signed-gradient steps from
x + 0.001 N(0, I) (on the [0, 1] scale: 0.002 in model space), each projected onto the ball
and the image range. It needs no label: the clean prediction is the reference. The training
loss that uses it is model/desc.py's: CE(f(x), y) + beta KL(f(x) || f(x')).
"""
import tensorflow as tf

from .iterative import PGDAttacker
from .threat import IMAGE_MAX, IMAGE_MIN, PIXEL_SCALE

# the start's standard deviation: 0.001 on the [0, 1] scale of the authors' code
START_STD = 0.001 * 255.0 * PIXEL_SCALE


def kl_divergence(reference_logits, logits):
    """[B] KL(softmax(reference) || softmax(logits)), in float32."""
    p = tf.nn.softmax(reference_logits)
    return tf.reduce_sum(p * (tf.nn.log_softmax(reference_logits) - tf.nn.log_softmax(logits)), axis=1)


class TradesAttacker(PGDAttacker):
    """``num_iter`` steps of ``step_size`` (0..255 scale) on KL(f(x) || f(x'))."""
    name = "trades"

    def __init__(self, threat, num_iter=10, step_size=2.0, **kw):
        kw.pop("targeted", None)
        kw.pop("loss", None)
        super().__init__(threat, num_iter, step_size=step_size, targeted=False, **kw)
        self._reference = None

    @property
    def step(self):
        # the authors' step, as given (not max(step, epsilon / iterations): that rule is Sec. 6.1's)
        return self.step_size_pixels * PIXEL_SCALE

    def describe(self):
        return "%s(eps=%g%s, step=%g, iter=%d, kl%s)" % (self.name, self.epsilon, self.threat.describe(),
                                                         self.step / PIXEL_SCALE, self.num_iter, self.draws.describe())

    def random_start(self, clean, restart=0, keys=None):
        if self.draws.per_image and keys is None:
            keys = self.draws.keys(clean)
        noise = self.draws.normal(keys, 1, clean, None) * START_STD
        return self.threat.project(tf.clip_by_value(clean + noise, IMAGE_MIN, IMAGE_MAX), clean)

    def objective(self, logits, label, target):
        return kl_divergence(self._reference, tf.cast(logits, tf.float32))

    def attack(self, clean, label, model_fn, num_classes):
        with tf.name_scope(self.name):
            self._reference = tf.stop_gradient(tf.cast(model_fn(clean), tf.float32))
            keys = self.draws.keys(clean)
            adv = self.perturb(clean, label, label, model_fn, keys=keys)
            return tf.stop_gradient(adv), label
