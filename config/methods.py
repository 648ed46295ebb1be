"""train.py's --method and its knobs, checked and turned into a training method
(model/methods.py), its training attacker, the guard's plan and the record kept in run.json and
model-final.npz. Every default is the method's paper's."""
from attacks import Draws, make_threat
from attacks.iterative import PGDAttacker

from .flags import FlagError, attack_epsilon

METHODS = ("pgd", "fgsm-rs", "n-fgsm", "free", "trades")
# the knobs' defaults, each its paper's (attacks/single_step.py, attacks/trades.py, model/methods.py)
DEFAULTS = {"fgsm_step": 1.25, "n_fgsm_noise": 2.0, "free_replays": 8, "trades_beta": 6.0, "trades_steps": 10}
KNOBS = {"pgd": (), "fgsm-rs": ("fgsm_step",), "n-fgsm": ("n_fgsm_noise",), "free": ("free_replays",),
         "trades": ("trades_beta", "trades_steps")}
# what only PGD training reads
PGD_ONLY = ("attack_iter", "prob_start_from_clean", "attack")
GUARDED = ("fgsm-rs", "n-fgsm", "free")          # the guard's default: on for these
GUARD_FLAGS = ("guard_every", "guard_images", "guard_margin")
DEFAULT_GUARD_IMAGES = 256
DEFAULT_GUARD_MARGIN = 20.0


def flag(name):
    return "--" + name.replace("_", "-")


def fallback_method(text):
    """--on-collapse: 'stop', a method, or pgd-K -> (method, pgd iterations or None)."""
    if text == "stop":
        return None, None
    if text.startswith("pgd-") and text[4:].isdigit() and int(text[4:]) >= 1:
        return "pgd", int(text[4:])
    if text in METHODS and text not in ("pgd", "free"):
        return text, None
    raise FlagError("--on-collapse %s: pass stop, or the method to continue with from the last checkpoint before "
                    "the collapse: n-fgsm, fgsm-rs, trades or pgd-K (PGD with K >= 1 steps)" % text)


def check_method_flags(args):
    """One line for a knob of another method, a flag the method does not read, a value out of
    range, or a guard flag with the guard off (before any work)."""
    method = args.method
    for m, knobs in KNOBS.items():
        for k in knobs:
            if m != method and getattr(args, k) is not None:
                raise FlagError("%s is a knob of --method %s, not of --method %s: drop it or pass --method %s" % (
                    flag(k), m, method, m))
    if method != "pgd":
        given = [flag(n) for n in PGD_ONLY if getattr(args, n) is not None]
        if args.attack_step_size is not None and method in ("fgsm-rs", "n-fgsm", "free"):
            given.append("--attack-step-size")
        if given:
            raise FlagError("%s %s read by --method pgd only (--method %s has its own %s): drop %s" % (
                ", ".join(given), "is" if len(given) == 1 else "are", method,
                ", ".join(flag(k) for k in KNOBS[method]) or "settings", "it" if len(given) == 1 else "them"))
    if method == "free" and (args.attack_precision != "fp32" or args.attack_xla or args.attack_loss_scale is not None):
        raise FlagError("--method free runs no attack iterations (its perturbation steps ride on the SGD step's own "
                        "backward pass): drop --attack-precision, --attack-xla and --attack-loss-scale")
    if args.trades_beta is not None and not args.trades_beta >= 0:
        raise FlagError("--trades-beta must be >= 0 (Zhang et al. use 1 to 10), got %g" % args.trades_beta)
    if args.free_replays is not None and args.free_replays < 1:
        raise FlagError("--free-replays must be >= 1 (Shafahi et al. use 8), got %d" % args.free_replays)
    if args.guard_margin is not None and not 0 < args.guard_margin <= 100:
        raise FlagError("--guard-margin is a fall in accuracy points, in (0, 100]; got %g" % args.guard_margin)
    fallback_method(args.on_collapse)
    if not guard_on(args):
        given = [flag(n) for n in GUARD_FLAGS if getattr(args, n) is not None]
        if args.on_collapse != "stop":
            given.append("--on-collapse")
        if given:
            raise FlagError("%s: the guard is off for --method %s (%s): add --guard on or drop %s" % (
                ", ".join(given), method, "--guard off" if args.guard == "off" else "its default",
                "it" if len(given) == 1 else "them"))


def check_resumed_method(logdir, record):
    """A log directory holding a run's checkpoints resumes with that run's method only: one line
    naming the recorded method (run.json) and the flags that resume it. A run recorded without
    a method trained with PGD, the only method there was."""
    import json
    import os
    info_path = os.path.join(logdir, "run.json")
    if not (os.path.exists(os.path.join(logdir, "checkpoint")) and os.path.exists(info_path)):
        return
    try:
        with open(info_path) as f:
            recorded = json.load(f).get("method") or {"method": "pgd"}
    except (OSError, ValueError):
        return                       # resume.py reports a damaged run directory
    if recorded.get("method", "pgd") == record["method"]:
        return
    name = recorded.get("method", "pgd")
    resume = "--method %s" % name + (" --attack-iter %d" % recorded["iterations"]
                                     if name == "pgd" and recorded.get("iterations") is not None else "")
    raise FlagError("--method %s: the run in %s trained with --method %s (its run.json); resume it with %s, "
                    "train it again with --restart, or pass another --logdir" % (record["method"], logdir, name,
                                                                                resume))


def recorded_fallback(logdir, method, on_collapse):
    """The collapses recorded by the run in ``logdir`` if that run is this command's run gone on
    with its fallback (the last collapse of --method ``method`` continued with ``on_collapse``),
    so that the same command resumes it with the fallback; else None."""
    import json
    import os
    info_path = os.path.join(logdir or "", "run.json")
    if not logdir or not os.path.exists(os.path.join(logdir, "checkpoint")) or not os.path.exists(info_path):
        return None
    try:
        with open(info_path) as f:
            collapses = (json.load(f).get("method") or {}).get("collapses") or []
    except (OSError, ValueError):
        return None
    last = collapses[-1] if collapses else {}
    if last.get("method") == method and last.get("continued_with") == on_collapse:
        return list(collapses)
    return None


def guard_on(args):
    return args.guard == "on" or (args.guard == "auto" and args.method in GUARDED)


def training_method(args, preset, seed, total_batch, batch, rank):
    """-> (model.methods method, the training attacker, record for run.json and the export)."""
    from attacks import NoAttack
    from attacks.single_step import FGSMRSAttacker, NFGSMAttacker
    from attacks.trades import TradesAttacker
    from model.methods import AdversarialTraining, FreeTraining, Trades

    from .flags import attacker_from_args, or_preset
    from attacks import Precision
    method = args.method
    eps = attack_epsilon(args, preset)
    threat = make_threat(args.norm, eps)
    draws = Draws(seed)
    precision = Precision(args.attack_precision, args.attack_loss_scale, args.attack_xla)
    value = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in DEFAULTS.items()}
    record = {"method": method, "epsilon": eps, "norm": args.norm}
    if method == "pgd":
        attack_iter = or_preset(args.attack_iter, preset, "train_attack_iter")
        attacker = attacker_from_args(args, preset, attack_iter,
                                      or_preset(args.prob_start_from_clean, preset, "prob_start_from_clean"),
                                      seed=seed, precision_flags=True)
        record.update(attack=attacker.describe(), iterations=attack_iter, targeted=attacker.targeted)
        return AdversarialTraining(attacker), attacker, record
    if method == "fgsm-rs":
        attacker = FGSMRSAttacker(threat, value["fgsm_step"], targeted=False, draws=draws, precision=precision)
        record.update(step=value["fgsm_step"])
        return AdversarialTraining(attacker, "fgsm-rs"), attacker, dict(record, attack=attacker.describe())
    if method == "n-fgsm":
        attacker = NFGSMAttacker(threat, value["n_fgsm_noise"], targeted=False, draws=draws, precision=precision)
        record.update(noise=value["n_fgsm_noise"])
        return AdversarialTraining(attacker, "n-fgsm"), attacker, dict(record, attack=attacker.describe())
    if method == "free":
        m = FreeTraining(threat, value["free_replays"], total_batch, rank, batch)
        record.update(replays=value["free_replays"])
        return m, NoAttack(targeted=False), dict(record, attack=m.describe())
    steps = value["trades_steps"]
    step = args.attack_step_size if args.attack_step_size is not None else eps / 4.0
    attacker = TradesAttacker(threat, steps, step, draws=draws, precision=precision) if steps else \
        NoAttack(targeted=False)
    record.update(beta=value["trades_beta"], steps=steps, step=step)
    return Trades(attacker, value["trades_beta"]), attacker, dict(record, attack=attacker.describe())


def guard_plan(args, steps_per_epoch, eps):
    """The guard (training.trainer.GuardPlan) of these flags at the training epsilon ``eps``, or
    None."""
    from training.trainer import GuardPlan
    if not guard_on(args):
        return None
    attacker = PGDAttacker(make_threat(args.norm, eps), 10, step_size=eps / 4.0, targeted=False,
                           draws=Draws(0, per_image=True))
    every = steps_per_epoch // 2 if args.guard_every is None else args.guard_every
    return GuardPlan(attacker=attacker, every=every, images=args.guard_images or DEFAULT_GUARD_IMAGES,
                     margin=args.guard_margin if args.guard_margin is not None else DEFAULT_GUARD_MARGIN)
