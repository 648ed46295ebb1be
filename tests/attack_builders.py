"""The tests' shorthand for attackers: ``PGDAttacker(epsilon, step, iterations, ...)`` with
the settings as flat keywords (threat model, draws and precision built here), the way the
tests read best."""
import attacks
from attacks import Draws, Precision, make_threat


def _common(epsilon, norm, seed, per_image_seed, precision, loss_scale, xla):
    draws = Draws(per_image_seed, per_image=True) if per_image_seed is not None else Draws(seed)
    return make_threat(norm, epsilon), draws, Precision(precision, loss_scale, xla)


def PGDAttacker(epsilon=16.0, step_size=1.0, num_iter=10, norm="linf", seed=None, per_image_seed=None,
                precision="fp32", loss_scale=None, xla=False, cls=attacks.PGDAttacker, **kw):
    threat, draws, prec = _common(epsilon, norm, seed, per_image_seed, precision, loss_scale, xla)
    return cls(threat, num_iter, step_size, draws=draws, precision=prec, **kw)


def IFGSMAttacker(epsilon=16.0, step_size=1.0, num_iter=10, **kw):
    return PGDAttacker(epsilon, step_size, num_iter, cls=attacks.IFGSMAttacker, **kw)


def MIFGSMAttacker(epsilon=16.0, step_size=1.0, num_iter=10, **kw):
    return PGDAttacker(epsilon, step_size, num_iter, cls=attacks.MIFGSMAttacker, **kw)


def FGSMAttacker(epsilon=16.0, **kw):
    return PGDAttacker(epsilon, 1.0, 1, cls=attacks.FGSMAttacker, **kw)


RestartAttacker = attacks.RestartAttacker
