"""What every attacker is: a threat model, a way of drawing random numbers, and
``attack(clean, label, model_fn, num_classes) -> (adversarial images, targets)``.

``model_fn(images) -> logits`` runs the network on model-space images; it must reuse
existing variables with BN in inference mode (the network is built once, outside any attack
loop, by the caller: model/graph.py). Attacks never back-propagate through themselves: what
they return is wrapped in ``stop_gradient``.
"""
import tensorflow as tf

from .draws import Draws
from .threat import AttackError, LinfBall  # noqa: F401  (AttackError is part of this module's interface)


def unless_empty(count, run, empty):
    """``run()`` when ``count`` > 0, else ``empty()``: a network run on an empty batch fails on
    oneDNN's CPU kernels ("input depth must be evenly divisible by filter depth"), and attacks
    that work on the images still standing can be left with none."""
    return tf.cond(count > 0, run, empty)


class Attacker:
    """Base class: a named attack under ``threat`` whose random numbers come from ``draws``.

    ``targeted``: the paper's protocol (Sec. 6) draws a target class per image and counts an
    attack successful when the network predicts it; untargeted attacks succeed on any
    misclassification."""
    name = "attack"
    num_iter = 0

    def __init__(self, threat=None, targeted=True, draws=None):
        self.threat = threat if threat is not None else LinfBall(16.0)
        self.targeted = bool(targeted)
        self.draws = draws if draws is not None else Draws()

    @property
    def epsilon(self):
        """The radius on the 0..255 scale."""
        return self.threat.epsilon

    @property
    def eps(self):
        return self.threat.eps

    def describe(self):
        return self.name

    def targets(self, clean, label, num_classes, keys=None):
        """The target class of each image (Sec. 6: uniform among the other classes), or the
        true label for an untargeted attack."""
        if not self.targeted:
            return label
        keys = self.draws.keys(clean) if keys is None and self.draws.per_image else keys
        return self.draws.targets(label, num_classes, keys)

    def attack(self, clean, label, model_fn, num_classes):
        """(adversarial images through ``stop_gradient``, target labels)."""
        raise NotImplementedError


class NoAttack(Attacker):
    """The clean image (``--attack-iter 0``)."""
    name = "clean"

    def __init__(self, targeted=True, draws=None):
        super().__init__(LinfBall(0.0), targeted, draws)

    def describe(self):
        return "clean"

    def attack(self, clean, label, model_fn, num_classes):
        with tf.name_scope(self.name):
            return tf.stop_gradient(clean), self.targets(clean, label, num_classes)
