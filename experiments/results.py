"""The suite's finished results, read back as per-image correctness: for each row and metric,
one boolean array per seed over the same test images, which is what the two-level statistics
of evaluation/stats.py pair. Nothing here runs a model.

Metrics (keys of ``Row.correct``):
  clean           clean accuracy, all test images (the targeted evaluation's clean pass)
  pgd10-targeted  the paper's protocol (Sec. 6): targeted PGD-10, one random start
  pgd10           untargeted PGD-10: the threat model the white-box claims are judged under
  pgd100          untargeted PGD-<long_iter> on the first ``long_images`` images
  pgd10@long      untargeted PGD-10 on those same first images (sliced from ``pgd10``)
  all-or-nothing  CAAD 2018's criterion over every transfer set of both sources
  aon:<source>    the same criterion over one source's sets
  bb:<set>        one transfer set
  autoattack      AutoAttack's standard ensemble (the first seed only)
"""
import math
import os
import re
import zipfile

import numpy as np

from evaluation.blackbox import ALL_OR_NOTHING
from evaluation.records import load_per_image

from .runner import Layout, load_json
from .suite import SOURCES

LABELS = {
    "clean": "clean",
    "pgd10-targeted": "targeted PGD-10 (paper)",
    "pgd10": "untargeted PGD-10",
    "pgd100": "untargeted PGD-100",
    "pgd10@long": "untargeted PGD-10",
    ALL_OR_NOTHING: "all-or-nothing",
    "autoattack": "AutoAttack",
}


def metric_label(key, budget=None):
    if key == "pgd100" and budget is not None:
        return "untargeted PGD-%d" % budget.long_iter
    if key.startswith("aon:"):
        return "all-or-nothing, %s" % key[4:]
    return LABELS.get(key, key)


class Row:
    """One variant's results: ``correct[metric][seed]`` -> bool [N]; ``results[kind][seed]`` the
    eval.py JSON; ``final_loss[seed]`` the last epoch's training loss; ``diverged`` the seeds whose
    training stopped on a NaN/inf loss."""

    def __init__(self, variant):
        self.variant = variant
        self.correct, self.results, self.final_loss, self.diverged = {}, {}, {}, []
        self.trained_seeds = []

    def seeds(self, metric):
        return sorted(self.correct.get(metric, {}))

    def matrix(self, metric, seeds):
        """[len(seeds), N] float correctness, or None if a seed lacks the metric."""
        have = self.correct.get(metric, {})
        if not seeds or any(s not in have for s in seeds):
            return None
        return np.stack([have[s] for s in seeds]).astype(float)

    def accuracy(self, metric):
        """(mean over seeds and images, 95% half-width with seeds and images as levels, seeds,
        images), or None. One seed: the images' binomial interval only."""
        from evaluation.stats import paired_difference
        seeds = self.seeds(metric)
        m = self.matrix(metric, seeds)
        if m is None:
            return None
        d = paired_difference(m, np.zeros_like(m))
        return d.estimate, (d.high - d.low) / 2, len(seeds), m.shape[1]


def _per_image(path):
    """load_per_image, with a file that does not load (truncated) a DamagedFile."""
    from .runner import DamagedFile
    try:
        return load_per_image(path)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise DamagedFile(path, e)


def _correct(path, attacker, metric="top1_error"):
    """bool [N] correct of one attacker in a --per-image file, or None."""
    if not os.path.exists(path):
        return None
    _, arrays = _per_image(path)
    values = arrays.get((metric, attacker))
    return None if values is None else values == 0


def final_loss(model_dir):
    """The training cross-entropy of the last epoch's metrics line, or None."""
    import json
    path = os.path.join(model_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    last = None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                last = json.loads(line)
    if not last or "xentropy_loss" not in last:
        return None
    value = float(last["xentropy_loss"])             # the cross-entropy, without weight decay
    return value if math.isfinite(value) else None


def collect(out, budget, variants):
    """{variant name: Row} of what has finished under ``out``."""
    layout = Layout(out)
    rows = {}
    long_name = "pgd%d" % budget.long_iter
    for v in variants:
        row = Row(v)
        for seed in budget.seeds:
            model_dir = layout.model_dir(v.name, seed)
            if os.path.exists(os.path.join(model_dir, "diverged.json")):
                row.diverged.append(seed)
            if os.path.exists(os.path.join(model_dir, "trained.json")):
                row.trained_seeds.append(seed)
                loss = final_loss(model_dir)
                if loss is not None:
                    row.final_loss[seed] = loss
            for kind in ("targeted", "untargeted", "long", "black-box", "autoattack", "audit"):
                result = layout.eval_file(v.name, seed, kind)
                doc = load_json(result)
                if doc is None:
                    continue
                row.results.setdefault(kind, {})[seed] = doc
                per_image = Layout.per_image_file(result)
                found = {}
                if kind == "targeted":
                    found = {"clean": _correct(per_image, "clean"), "pgd10-targeted": _correct(per_image, "pgd10")}
                elif kind == "untargeted":
                    found = {"pgd10": _correct(per_image, "pgd10")}
                    if found["pgd10"] is not None:
                        found["pgd10@long"] = found["pgd10"][:budget.long_images]
                elif kind == "long":
                    found = {"pgd100": _correct(per_image, long_name)}
                elif kind == "autoattack":
                    found = {"autoattack": _correct(per_image, "autoattack")}
                elif kind == "black-box":
                    found = _black_box(per_image)
                for metric, values in found.items():
                    if values is not None:
                        row.correct.setdefault(metric, {})[seed] = values
        rows[v.name] = row
    return rows


def _black_box(per_image):
    """{metric: bool [N]}: the all-or-nothing outcome, each source's, and each set's."""
    if not os.path.exists(per_image):
        return {}
    _, arrays = _per_image(per_image)
    out = {}
    for (metric, attacker), values in arrays.items():
        if metric != "top1_error":
            continue
        if attacker == ALL_OR_NOTHING:
            out[ALL_OR_NOTHING] = values == 0
        else:
            # "<source>/<attack>.npz/<array>" (evaluation.jobs.attacker_keys): "<source>/<attack>"
            out["bb:" + re.sub(r"\.npz/.*$", "", attacker)] = values == 0
    for source in SOURCES:
        sets = [v for k, v in out.items() if k.startswith("bb:%s/" % source.name)]
        if sets:
            out["aon:" + source.name] = np.logical_and.reduce(sets)
    return out


def attacker_sets(rows):
    """The transfer sets' keys (``bb:<set>``) present in any row, sorted."""
    return sorted({k for r in rows.values() for k in r.correct if k.startswith("bb:")})
