"""The attacker for a command line, by name: one place that turns flat settings into the
threat model, draws, precision and attack objects."""
import math

from .apgd import TARGETS, APGDAttacker, default_targets
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
# AutoAttack's members (Croce and Hein 2020), each also runnable alone.
MEMBERS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
# AutoAttack's standard ensemble, in its order.
AUTOATTACK = ("apgd-ce", "apgd-t", "fab-t", "square")
# The budgets of every version: 100 iterations for APGD and FAB, 5,000 queries for Square.
STANDARD_ITERATIONS = 100
STANDARD_QUERIES = 5000
# Each version's members in their order and their settings, as the authors' ``set_version``
# gives them (autoattack.py of github.com/fra31/auto-attack): restarts, target classes, EOT
# draws. "custom" (``--aa-attacks``) takes each member with the authors' constructor defaults,
# which are "plus"'s settings.
MEMBER_DEFAULTS = {
    "apgd-ce": dict(restarts=5), "apgd-dlr": dict(restarts=5), "fab": dict(restarts=5),
    "apgd-t": dict(restarts=1, targets=TARGETS), "fab-t": dict(restarts=1, targets=TARGETS),
    "square": dict(restarts=1),
}
VERSIONS = {
    "standard": (("apgd-ce", dict(restarts=1)), ("apgd-t", MEMBER_DEFAULTS["apgd-t"]),
                 ("fab-t", MEMBER_DEFAULTS["fab-t"]), ("square", MEMBER_DEFAULTS["square"])),
    "plus": tuple((m, MEMBER_DEFAULTS[m]) for m in ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t")),
    "rand": (("apgd-ce", dict(restarts=1, eot=20)), ("apgd-dlr", dict(restarts=1, eot=20))),
}
AA_VERSIONS = tuple(VERSIONS) + ("custom",)
# The members whose restarts --restarts sets in the versions that restart ("plus", "custom").
RESTARTED = ("apgd-ce", "apgd-dlr", "fab")
# Attacks that measure misclassification whatever the target: untargeted by nature.
UNTARGETED_ONLY = MEMBERS + ("autoattack",)
ALL_ATTACKS = tuple(ATTACKERS) + MEMBERS + ("autoattack",)
# Attackers with no random start: a restart would repeat the first run exactly.
NO_RANDOM_START = ("fgsm", "ifgsm", "mifgsm")


def make_member(kind, num_iter=STANDARD_ITERATIONS, epsilon=16.0, norm="linf", per_image_seed=0,
                queries=STANDARD_QUERIES, targets=TARGETS, restarts=1, precision="fp32", eot=1, in_ensemble=False,
                num_classes=None):
    """One AutoAttack member: apgd-ce | apgd-dlr | apgd-t | fab | fab-t | square. ``eot``: the
    gradient averaged over that many draws (gradient members only); ``in_ensemble``: Square's
    window schedule as AutoAttack runs it (unrescaled), else rescaled to the budget;
    ``num_classes`` (when known): the targets of APGD-T and FAB-T are at most the other classes,
    and APGD-T is refused below 4 classes."""
    if num_classes is not None and kind in ("apgd-t", "fab-t"):
        if kind == "apgd-t" and num_classes < 4:
            raise AttackError("APGD-T's targeted DLR loss divides by z_pi1 - (z_pi3 + z_pi4) / 2, the 1st, 3rd and "
                              "4th highest logits, so it needs at least 4 classes; this model has %d: %s" % (
                                  num_classes, "use --aa-version custom --aa-attacks apgd-ce,fab-t,square"
                                  if in_ensemble else "use --attack apgd-ce or fab-t"))
        targets = default_targets(num_classes, targets)
    threat = make_threat(norm, epsilon)
    draws = Draws(per_image_seed, per_image=True)
    if kind == "square":
        if eot != 1:
            raise AttackError("Square uses no gradient: --eot applies to gradient attacks only, drop it")
        return SquareAttacker(threat, queries, draws=draws, rescale_schedule=not in_ensemble, restarts=restarts)
    prec = Precision(precision, eot=eot)
    if kind == "apgd-ce":
        return APGDAttacker(threat, num_iter, "xent", draws=draws, precision=prec, restarts=restarts)
    if kind == "apgd-dlr":
        return APGDAttacker(threat, num_iter, "dlr", draws=draws, precision=prec, restarts=restarts)
    if kind == "apgd-t":
        return APGDAttacker(threat, num_iter, targets=targets, draws=draws, precision=prec, restarts=restarts)
    if kind in ("fab", "fab-t"):
        return FABAttacker(threat, num_iter, targets=targets, precision=prec, draws=draws, restarts=restarts,
                           targeted=kind == "fab-t")
    raise AttackError("unknown AutoAttack member %r; valid: %s" % (kind, ", ".join(MEMBERS)))


def autoattack_members(version="standard", norm="linf", epsilon=16.0, num_iter=STANDARD_ITERATIONS,
                       queries=STANDARD_QUERIES, per_image_seed=0, restarts=None, eot=None, attacks=None,
                       precision="fp32", num_classes=None):
    """AutoAttack's ``version`` (standard | plus | rand | custom with ``attacks``), name ->
    attacker, in the order they run. ``restarts`` replaces the restarts of APGD-CE, APGD-DLR and
    FAB in "plus" and "custom" (the other versions run them once by definition: refused);
    ``eot`` the EOT draws of every gradient member (default: the version's, 20 in "rand")."""
    if version not in AA_VERSIONS:
        raise AttackError("unknown AutoAttack version %r; valid: %s" % (version, ", ".join(AA_VERSIONS)))
    if version == "custom":
        if not attacks:
            raise AttackError("--aa-version custom needs --aa-attacks, e.g. apgd-ce,apgd-t")
        unknown = [a for a in attacks if a not in MEMBERS]
        if unknown:
            raise AttackError("unknown AutoAttack member %s in --aa-attacks; valid: %s" % (
                ", ".join(unknown), ", ".join(MEMBERS)))
        if len(set(attacks)) != len(attacks):
            raise AttackError("--aa-attacks names a member twice: %s" % ",".join(attacks))
        plan = tuple((m, MEMBER_DEFAULTS[m]) for m in attacks)
    else:
        if attacks:
            raise AttackError("--aa-attacks chooses the members of --aa-version custom; the %s version has its own "
                              "(%s): drop --aa-attacks or pass --aa-version custom" % (
                                  version, ", ".join(m for m, _ in VERSIONS[version])))
        plan = VERSIONS[version]
    if restarts not in (None, 1) and version in ("standard", "rand"):
        raise AttackError("the %s version runs every member once (its definition): drop --restarts, or pass "
                          "--aa-version plus (5 restarts of APGD-CE, APGD-DLR and FAB; --restarts R sets them)"
                          % version)
    if eot is not None and not [m for m, _ in plan if m != "square"]:
        raise AttackError("--eot applies to gradient attacks, and these members use none: drop --eot")
    members = {}
    for kind, settings in plan:
        settings = dict(settings)
        if restarts is not None and kind in RESTARTED:
            settings["restarts"] = restarts
        if kind != "square":
            settings["eot"] = settings.get("eot", 1) if eot is None else eot
        members[kind] = make_member(kind, num_iter, epsilon, norm, per_image_seed, queries, precision=precision,
                                    in_ensemble=True, num_classes=num_classes, **settings)
    return members


def make_attacker(kind="pgd", num_iter=10, epsilon=16.0, step_size=1.0, targeted=True, loss="xent",
                  prob_start_from_clean=0.0, restarts=1, seed=None, precision="fp32", loss_scale=None, xla=False,
                  per_image_seed=None, norm="linf", eot=1, num_classes=None):
    """``num_iter == 0`` is the clean evaluation. ``seed``: the op seed of training's stateful
    draws; ``per_image_seed``: evaluation's stateless per-image draws (attacks/draws.py).
    ``precision``, ``loss_scale``, ``xla``: the attack iterations (attacks/precision.py);
    ``eot``: gradients averaged over that many draws of a randomised model."""
    if kind in MEMBERS:
        if num_iter == 0:
            return NoAttack(targeted=False, draws=Draws(per_image_seed or 0, per_image=True))
        # Square's strength is its query budget; alone, its schedule is rescaled to it
        return make_member(kind, num_iter, epsilon, norm, 0 if per_image_seed is None else per_image_seed,
                           queries=num_iter, restarts=restarts, precision=precision, eot=eot, num_classes=num_classes)
    if kind not in ATTACKERS:
        raise AttackError("unknown attack %r; valid: %s" % (kind, ", ".join(ALL_ATTACKS)))
    draws = Draws(per_image_seed, per_image=True) if per_image_seed is not None else Draws(seed)
    threat = make_threat(norm, epsilon)
    if num_iter == 0:
        return NoAttack(targeted=targeted, draws=draws)
    if num_iter < 0:
        raise AttackError("attack iterations must be >= 0, got %d" % num_iter)
    if restarts != 1 and kind in NO_RANDOM_START:
        raise AttackError("--restarts: %s starts from the clean image, so every restart would repeat the first run "
                          "exactly; restart an attack with a random start (pgd, apgd-ce, fab, square) or drop "
                          "--restarts" % kind)
    if step_size is not None and not math.isfinite(step_size):
        raise AttackError("attack step size must be finite (0..255 scale), got %g" % step_size)
    if step_size is not None and epsilon > 0 and step_size > epsilon:
        raise AttackError("attack step size %g is larger than epsilon %g: use a step <= epsilon" % (
            step_size, epsilon))
    attacker = ATTACKERS[kind](threat, num_iter=num_iter, step_size=step_size if step_size is not None else 1.0,
                               loss=loss, targeted=targeted, draws=draws, prob_start_from_clean=prob_start_from_clean,
                               precision=Precision(precision, loss_scale, xla, eot=eot))
    if restarts != 1:
        return RestartAttacker(attacker, restarts)
    return attacker
