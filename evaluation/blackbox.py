"""Black-box evaluation (Sec. 6.2): predictions over directories of images, and the CAAD
2018 "all-or-nothing" criterion over several attackers' directories."""

import numpy as np

from core.files import write_npz

from .stats import rate_ci95


def all_or_nothing_per_image(true_labels, predictions_per_attacker):
    """Every image's outcome under the CAAD 2018 criterion (Sec. 6.2): -> (filenames sorted,
    their true labels [N], {attacker: [N] bool correct}, [N] bool correct under every
    attacker). An image missing from an attacker's predictions counts as wrong. Two models
    judged on the same transfer images can then be compared image by image (paired)."""
    names = sorted(true_labels)
    labels = np.array([int(true_labels[f]) for f in names], dtype=np.int32)
    correct = {attacker: np.array([preds.get(f) == true_labels[f] for f in names], dtype=bool)
               for attacker, preds in sorted(predictions_per_attacker.items())}
    all_correct = np.ones(len(names), dtype=bool)
    for c in correct.values():
        all_correct &= c
    return names, labels, correct, all_correct


def all_or_nothing(true_labels, predictions_per_attacker):
    """CAAD 2018 criterion (Sec. 6.2): "an image is considered correctly classified only if
    the model correctly classifies all adversarial versions of this image created by all
    attackers". ``true_labels``: filename -> label; ``predictions_per_attacker``: attacker ->
    {filename -> predicted label}. An image missing from an attacker's predictions counts
    as wrong. Returns dict with the all-or-nothing accuracy and per-attacker accuracies."""
    names, _, correct, all_correct = all_or_nothing_per_image(true_labels, predictions_per_attacker)
    n = len(names)
    per_attacker = {a: float(c.mean()) if n else float("nan") for a, c in correct.items()}
    acc = float(all_correct.mean()) if n else float("nan")
    return {"num_images": n, "all_or_nothing_accuracy": acc,
            "all_or_nothing_ci95": rate_ci95(acc, n) if n else [0.0, 1.0],
            "per_attacker_accuracy": per_attacker}


#: the name under which a black-box --per-image file holds the all-or-nothing outcome
ALL_OR_NOTHING = "all-or-nothing"


def save_all_or_nothing_per_image(path, true_labels, predictions_per_attacker):
    """A black-box --per-image file in :class:`PerImageRecorder`'s format, images in filename
    order: ``labels``, ``top1_error/<attacker>`` for each attacker and
    ``top1_error/all-or-nothing`` (1 = wrong), so the same reader pairs it."""
    _, labels, correct, all_correct = all_or_nothing_per_image(true_labels, predictions_per_attacker)
    arrays = {"top1_error/%s" % a: (~c).astype(np.uint8) for a, c in correct.items()}
    arrays["top1_error/" + ALL_OR_NOTHING] = (~all_correct).astype(np.uint8)
    arrays["labels"] = labels
    write_npz(path, **arrays)
