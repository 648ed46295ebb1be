"""Single-step training attacks: a fraction of PGD's cost (two network passes instead of 2k).

- FGSM-RS, "fast" adversarial training (Wong, Rice and Kolter, ICLR 2020, Algorithm 3):
  a start drawn uniformly from the ball, one signed-gradient step of alpha = 1.25 epsilon,
  projected back onto the ball (and the image range). Without the random start (plain FGSM
  training, their Sec. 3) the method overfits catastrophically; with it, it can still collapse
  at larger epsilon (their Sec. 5.3), which training/guard.py watches for.
- N-FGSM (de Jorge, Bibi, Volpi, Sanyal, Torr, Rogez and Dokania, NeurIPS 2022, Eq. 3): noise
  uniform in [-k epsilon, k epsilon] (k = 2; 4 for their widest nets at large epsilon), one
  signed step of epsilon from the noisy point, and no projection back onto the epsilon ball:
  the perturbation may reach (k + 1) epsilon, by design; only the image range is enforced.

Both work under either threat model (attacks/threat.py): the L-inf sign step, or the L2
normalised gradient; N-FGSM's L2 noise is uniform in the L2 ball of radius k epsilon.
"""
import tensorflow as tf

from .iterative import PGDAttacker
from .threat import IMAGE_MAX, IMAGE_MIN, AttackError

FGSM_RS_STEP = 1.25       # Wong et al.: alpha = 1.25 epsilon
N_FGSM_NOISE = 2.0        # de Jorge et al.: k = 2
N_FGSM_STEP = 1.0         # ... and a step of epsilon


class FGSMRSAttacker(PGDAttacker):
    """FGSM with a random start: one step of ``step_multiple`` x epsilon (model space) from a
    point uniform in the ball, projected onto the ball and the image range."""
    name = "fgsm-rs"

    def __init__(self, threat, step_multiple=FGSM_RS_STEP, **kw):
        if not step_multiple > 0:
            raise AttackError("FGSM-RS's step must be a positive multiple of epsilon, got %g" % step_multiple)
        kw.pop("num_iter", None)
        kw.pop("step_size", None)
        super().__init__(threat, 1, step_size=1.0, **kw)
        self.step_multiple = float(step_multiple)

    @property
    def step(self):
        return self.step_multiple * self.eps

    def describe(self):
        return "%s(eps=%g%s, step=%g eps, %s%s)" % (self.name, self.epsilon, self.threat.describe(), self.step_multiple,
                                                   "targeted" if self.targeted else "untargeted",
                                                   self.draws.describe())


class NFGSMAttacker(PGDAttacker):
    """N-FGSM: noise of ``noise_multiple`` x epsilon, one step of ``step_multiple`` x epsilon,
    clipped to the image range only."""
    name = "n-fgsm"

    def __init__(self, threat, noise_multiple=N_FGSM_NOISE, step_multiple=N_FGSM_STEP, **kw):
        if not noise_multiple >= 0:
            raise AttackError("N-FGSM's noise must be a multiple of epsilon >= 0, got %g" % noise_multiple)
        if not step_multiple > 0:
            raise AttackError("N-FGSM's step must be a positive multiple of epsilon, got %g" % step_multiple)
        kw.pop("num_iter", None)
        kw.pop("step_size", None)
        super().__init__(threat, 1, step_size=1.0, **kw)
        self.noise_multiple = float(noise_multiple)
        self.step_multiple = float(step_multiple)
        # the ball the noise is drawn from, and the bound the perturbation stays in
        self.noise_threat = type(threat)(threat.epsilon * self.noise_multiple)
        self.reach = type(threat)(threat.epsilon * (self.noise_multiple + self.step_multiple))

    @property
    def step(self):
        return self.step_multiple * self.eps

    def describe(self):
        return "%s(eps=%g%s, noise=%g eps, step=%g eps, %s%s)" % (
            self.name, self.epsilon, self.threat.describe(), self.noise_multiple, self.step_multiple,
            "targeted" if self.targeted else "untargeted", self.draws.describe())

    def random_start(self, clean, restart=0, keys=None):
        if self.draws.per_image and keys is None:
            keys = self.draws.keys(clean)
        noise = self.draws.start_noise(self.noise_threat, clean, keys, restart)
        return tf.clip_by_value(clean + noise, IMAGE_MIN, IMAGE_MAX)

    def perturb(self, clean, label, target, model_fn, restart=0, keys=None):
        if self.eps == 0:
            return clean
        start = self.random_start(clean, restart, keys)
        with self.precision.scope():
            grad, _ = self.gradient(start, label, target, model_fn, tf.zeros(tf.shape(clean)[:1]))
            adv = self.threat.step(start, grad, self.step)
        # no projection onto the epsilon ball (de Jorge et al.): the image range only
        return tf.clip_by_value(adv, IMAGE_MIN, IMAGE_MAX)
