"""The attacker for a command line, by name: one place that turns flat settings into the
threat model, draws, precision and attack objects."""
import math

from .apgd import TARGETS, APGDAttacker
from .base import NoAttack
from .draws import Draws
from .fab import FABAttacker
from .iterative import FGSMAttacker, IFGSMAttacker, MIFGSMAttacker, PGDAttacker
from .precision import Precision
from .restarts import RestartAttacker
from .square import SquareAttacker
from .threat import AttackError, make_threat

ATTACKERS = {
    "pgd": PGDAttacker,
    "fgsm": FGSMAttacker,
    "ifgsm": IFGSMAttacker,
    "mifgsm": MIFGSMAttacker,
}
# AutoAttack's standard ensemble (Croce and Hein 2020), in its order; each member alone too.
AUTOATTACK = ("apgd-ce", "apgd-t", "fab-t", "square")
# The standard version's budgets: 100 iterations for APGD and FAB, 5,000 queries for Square.
STANDARD_ITERATIONS = 100
STANDARD_QUERIES = 5000
# Attacks that measure misclassification whatever the target: untargeted by nature.
UNTARGETED_ONLY = AUTOATTACK + ("autoattack",)
ALL_ATTACKS = tuple(ATTACKERS) + AUTOATTACK + ("autoattack",)


def make_member(kind, num_iter=STANDARD_ITERATIONS, epsilon=16.0, norm="linf", per_image_seed=0,
                queries=STANDARD_QUERIES, targets=TARGETS, restarts=1, precision="fp32"):
    """One AutoAttack member: apgd-ce | apgd-t | fab-t | square (also apgd-dlr)."""
    threat = make_threat(norm, epsilon)
    draws = Draws(per_image_seed, per_image=True)
    prec = Precision(precision)
    if kind == "apgd-ce":
        return APGDAttacker(threat, num_iter, "xent", draws=draws, precision=prec, restarts=restarts)
    if kind == "apgd-dlr":
        return APGDAttacker(threat, num_iter, "dlr", draws=draws, precision=prec, restarts=restarts)
    if kind == "apgd-t":
        return APGDAttacker(threat, num_iter, targets=targets, draws=draws, precision=prec, restarts=restarts)
    if kind == "fab-t":
        return FABAttacker(threat, num_iter, targets=targets, precision=prec)
    if kind == "square":
        return SquareAttacker(threat, queries, draws=draws)
    raise AttackError("unknown AutoAttack member %r; valid: %s" % (kind, ", ".join(AUTOATTACK + ("apgd-dlr",))))


def autoattack_members(norm="linf", epsilon=16.0, num_iter=STANDARD_ITERATIONS, queries=STANDARD_QUERIES,
                       per_image_seed=0, targets=TARGETS):
    """AutoAttack's standard ensemble, name -> attacker, in the order they run."""
    return {kind: make_member(kind, num_iter, epsilon, norm, per_image_seed, queries, targets)
            for kind in AUTOATTACK}


def make_attacker(kind="pgd", num_iter=10, epsilon=16.0, step_size=1.0, targeted=True, loss="xent",
                  prob_start_from_clean=0.0, restarts=1, seed=None, precision="fp32", loss_scale=None, xla=False,
                  per_image_seed=None, norm="linf"):
    """``num_iter == 0`` is the clean evaluation. ``seed``: the op seed of training's stateful
    draws; ``per_image_seed``: evaluation's stateless per-image draws (attacks/draws.py).
    ``precision``, ``loss_scale``, ``xla``: the attack iterations (attacks/precision.py)."""
    if kind in AUTOATTACK or kind == "apgd-dlr":
        if num_iter == 0:
            return NoAttack(targeted=False, draws=Draws(per_image_seed or 0, per_image=True))
        # Square's strength is its query budget
        return make_member(kind, num_iter, epsilon, norm, 0 if per_image_seed is None else per_image_seed,
                           queries=num_iter, restarts=restarts, precision=precision)
    if kind not in ATTACKERS:
        raise AttackError("unknown attack %r; valid: %s" % (kind, ", ".join(ALL_ATTACKS)))
    draws = Draws(per_image_seed, per_image=True) if per_image_seed is not None else Draws(seed)
    threat = make_threat(norm, epsilon)
    if num_iter == 0:
        return NoAttack(targeted=targeted, draws=draws)
    if num_iter < 0:
        raise AttackError("attack iterations must be >= 0, got %d" % num_iter)
    if step_size is not None and not math.isfinite(step_size):
        raise AttackError("attack step size must be finite (0..255 scale), got %g" % step_size)
    if step_size is not None and epsilon > 0 and step_size > epsilon:
        raise AttackError("attack step size %g is larger than epsilon %g: use a step <= epsilon" % (
            step_size, epsilon))
    attacker = ATTACKERS[kind](threat, num_iter=num_iter, step_size=step_size if step_size is not None else 1.0,
                               loss=loss, targeted=targeted, draws=draws, prob_start_from_clean=prob_start_from_clean,
                               precision=Precision(precision, loss_scale, xla))
    if restarts != 1:
        return RestartAttacker(attacker, restarts)
    return attacker
