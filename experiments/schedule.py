"""The suite's schedule, chosen from the baseline's learning curve on held-out training
images, by a rule fixed here before any run.

Each candidate is a whole schedule (E epochs, the learning rate divided by 10 at 75% of them),
trained once on the first 55,000 training images (seed ``SCHEDULE_SEED``, a seed no table
uses) and evaluated on the last 5,000, which no model of the suite ever trains on; the test
set is not read. The criterion is accuracy under untargeted PGD-10 at the training epsilon
(the white-box threat model the claims are judged under), and the rule is:

    the fewest epochs whose validation accuracy is within ``MARGIN`` of the best candidate's.

"Within a point of the best" is the convergence criterion: more epochs would buy less than the
resolution of the comparisons (and cost every row the same factor). The width (8) and the
training attack (PGD-3) are the demo preset's and are not searched: at width 16 the Gaussian
non-local rows alone would take the whole budget (measured: docs/RESULTS.md, "What the run
cost"). If the best candidate is the longest, the page says the curve had not flattened
within the candidates.
"""
import json
import os

MARGIN = 0.01          # accuracy, a fraction: one point
CRITERION = "pgd10"    # the untargeted PGD-10 evaluation's key in the schedule runs' JSON


def choose(curve, margin=MARGIN):
    """``curve``: {epochs: validation accuracy}. -> the fewest epochs within ``margin`` of the
    best accuracy (ties in accuracy go to fewer epochs)."""
    if not curve:
        raise ValueError("no schedule candidate has finished")
    best = max(curve.values())
    return min(e for e, acc in curve.items() if acc >= best - margin - 1e-12)


def candidate_accuracy(result_file):
    """Validation accuracy under the criterion in a schedule run's eval.py JSON, or None."""
    try:
        with open(result_file) as f:
            doc = json.load(f)
        return 1.0 - doc["white_box"][CRITERION]["top1_error"]
    except (OSError, ValueError, KeyError):
        return None


def decide(layout, budget):
    """{'epochs': chosen or None, 'curve': {epochs: accuracy}, 'clean': {...}, 'missing': [...]}:
    the choice is made only once every candidate has its validation result, and once made it
    is recorded (schedule.json) so a resumed suite keeps it."""
    recorded = None
    if os.path.exists(layout.schedule_file()):
        with open(layout.schedule_file()) as f:
            recorded = json.load(f)
        if recorded.get("epochs") is not None:
            for key in ("curve", "clean"):            # JSON keys are strings
                recorded[key] = {int(e): v for e, v in recorded.get(key, {}).items()}
            return dict(recorded, missing=[])
    curve, clean, missing = {}, {}, []
    for e in budget.candidates:
        path = layout.schedule_eval_file(e)
        acc = candidate_accuracy(path)
        if acc is None:
            missing.append(e)
            continue
        curve[e] = acc
        with open(path) as f:
            clean[e] = 1.0 - json.load(f)["white_box"]["clean"]["top1_error"]
    out = {"epochs": None if missing else choose(curve), "curve": curve, "clean": clean, "missing": missing,
           "rule": "fewest epochs within %g point(s) of the best validation accuracy under untargeted PGD-10"
                   % (100 * MARGIN),
           "validation_images": budget.validation}
    if out["epochs"] is not None:
        # the curve had not flattened if its best point is its last
        out["at_longest"] = max(curve, key=lambda e: (curve[e], -e)) == max(budget.candidates)
        from .runner import write_json
        write_json(layout.schedule_file(), {k: v for k, v in out.items() if k != "missing"})
    return out


def lr_decay_epochs(epochs, budget):
    """The one learning-rate drop of an ``epochs``-long run, as train.py's --lr-decay-epochs."""
    return "%g" % (budget.decay_at * epochs)
