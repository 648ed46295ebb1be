"""Tables, figures and the paper-claim verdicts of docs/RESULTS.md, from the JSON files the
runner's jobs wrote. Works on partial results: missing rows say so."""
import math
import os
import re

import numpy as np

from .runner import REPO, Layout, diverged_file, load_json, matched_groups, white_box_groups
from .suite import SOURCE, SOURCE_SEED, VARIANTS

Z95 = 1.96
# Seeds are separate training runs; a claim is judged only when it can replicate across them.
MIN_SEEDS = 2
# evaluation.blackbox.ALL_OR_NOTHING (not imported here: that module loads TensorFlow), the
# attacker name of the all-or-nothing outcome in a black-box per-image file
ALL_OR_NOTHING = "all-or-nothing"


class Row:
    """One variant's results over seeds: metric -> list of (accuracy, images) per seed."""

    def __init__(self, variant):
        self.variant = variant
        self.per_seed = {}          # metric -> {seed: (acc, n)}
        self.diverged = []          # seeds whose training stopped on a NaN/inf loss
        self.per_attacker = {}      # black-box attacker -> {seed: acc}
        self.final_loss = {}        # seed -> training cross-entropy of the last epoch
        self.per_image = {}         # metric -> {seed: (eval.py --per-image file, attacker name)}

    def add(self, metric, seed, acc, n, per_image=None):
        self.per_seed.setdefault(metric, {})[seed] = (acc, n)
        if per_image:
            self.per_image.setdefault(metric, {})[seed] = per_image

    def correct(self, metric, seed):
        """[N] bool: which images the model classified correctly (top-1) in that evaluation,
        or None where the evaluation kept no per-image results, or kept results that do not
        add up to the accuracy its JSON reports (a stale file: not to be paired)."""
        found = self.per_image_correct(metric, seed)
        return None if found is None else found[1]

    def paired(self, metric_x, metric_y, seed):
        """(correct in x, correct in y) of two evaluations of the same images in one seed
        (same count, same labels in the same order), or None."""
        return same_images_pair(self.per_image_correct(metric_x, seed), self.per_image_correct(metric_y, seed))

    def per_image_correct(self, metric, seed):
        """(labels, correct) of one evaluation's per-image file, or None (none, or stale)."""
        path, name = self.per_image.get(metric, {}).get(seed, (None, None))
        if path is None:
            return None
        labels, values = _load_per_image(path)
        correct = values.get(("top1_error", name))
        acc, n = self.per_seed[metric][seed]
        if correct is None or len(correct) != n or abs((correct == 0).mean() - acc) > 1e-9:
            return None
        return labels, correct == 0

    def stats(self, metric):
        """-> (mean accuracy over seeds, 95% half-width for the test images, min, max, seeds)
        or None. Every seed is scored on the same images, so the images count once (pooling
        them over seeds would claim twice the evidence); the spread between training runs is
        what min-max shows."""
        values = self.per_seed.get(metric)
        if not values:
            return None
        accs = [a for a, _ in values.values()]
        mean = sum(accs) / len(accs)
        return mean, binomial_half_width(mean, max(k for _, k in values.values())), min(accs), max(accs), len(accs)


_PER_IMAGE_FILES = {}


def _load_per_image(path):
    """eval.py --per-image file, read once per page (every claim and seed pairs from it)."""
    stat = os.stat(path)
    key = (path, stat.st_size, stat.st_mtime_ns)
    if key not in _PER_IMAGE_FILES:
        from evaluation.records import load_per_image
        _PER_IMAGE_FILES[key] = load_per_image(path)
    return _PER_IMAGE_FILES[key]


def same_images_pair(x, y):
    """Two ``Row.per_image_correct`` results -> (correct in x, correct in y) if both exist and
    cover the same images (same labels in the same order), else None."""
    if x is None or y is None or len(x[0]) != len(y[0]) or not np.array_equal(x[0], y[0]):
        return None
    return x[1], y[1]


def binomial_half_width(acc, n, z=Z95):
    """Half-width to print as ``acc ± h``: the larger side of the Wilson 95% interval, so the
    printed range covers it (near 0 or 1 the interval is lopsided; Wald's collapses to 0)."""
    n = max(n, 1)
    centre = (acc + z * z / (2 * n)) / (1 + z * z / n)
    spread = z * math.sqrt(acc * (1 - acc) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(acc - (centre - spread), (centre + spread) - acc)


def collect(out, budget, variants=VARIANTS):
    layout = Layout(out)
    rows = {}
    for v in variants:
        row = Row(v)
        for seed in budget.seeds:
            if os.path.exists(diverged_file(layout.model_dir(v, seed))):
                row.diverged.append(seed)
            # tensorpack's JSONWriter: one entry per epoch; only a finished training counts
            epochs = load_json(os.path.join(layout.model_dir(v, seed), "stats.json")) or []
            if os.path.exists(layout.model_file(v, seed)) and epochs and "xentropy_loss" in epochs[-1]:
                row.final_loss[seed] = epochs[-1]["xentropy_loss"]
            for limit, iters in white_box_groups(budget):
                _add_white_box(row, seed, layout.white_box_file(
                    v, seed, [i for i in iters if not v.clean_training or i <= 10], limit), "%s")
            for limit, iters in matched_groups(budget):
                _add_white_box(row, seed, layout.white_box_file(v, seed, iters, limit), "%%s@n%d" % limit)
            bb_file = layout.black_box_file(v, seed)
            bb = (load_json(bb_file) or {}).get("all_or_nothing")
            if bb:
                # its per-image file pairs two models on the same transfer images (Table 2 claims)
                per_image = Layout.per_image_file(bb_file)
                row.add("all_or_nothing", seed, bb["all_or_nothing_accuracy"], bb["num_images"],
                        (per_image, ALL_OR_NOTHING) if os.path.exists(per_image) else None)
                for name, acc in bb["per_attacker_accuracy"].items():
                    row.per_attacker.setdefault(name, {})[seed] = acc
        rows[v.name] = row
    return rows


def _add_white_box(row, seed, path, key_format):
    """One eval.py white-box result (and its per-image file, if it kept one) into ``row``,
    each attacker under ``key_format % name``."""
    res = load_json(path)
    per_image = Layout.per_image_file(path)
    per_image = per_image if os.path.exists(per_image) else None
    for name, r in ((res or {}).get("white_box") or {}).items():
        row.add(key_format % name, seed, 1.0 - r["top1_error"], r["num_images"],
                (per_image, name) if per_image else None)


def mcnemar(x_correct, y_correct):
    """McNemar's exact test of two evaluations of the same images: -> (b, c, two-sided p),
    b = images right in x only, c = right in y only. Under "x and y are equally accurate"
    each of the b + c discordant images is equally likely to go either way, so b is
    Binomial(b + c, 1/2); images both got right or both got wrong carry no information."""
    b = int(np.sum(x_correct & ~y_correct))
    c = int(np.sum(~x_correct & y_correct))
    n = b + c
    if n == 0:
        return b, c, 1.0
    tail = sum(math.comb(n, k) for k in range(max(b, c), n + 1)) / 2.0 ** n
    return b, c, min(1.0, 2 * tail)


def seed_differences(rows, a, b, metric):
    """{seed: (accuracy of a - accuracy of b, standard error)} over the seeds both have."""
    ra, rb = rows.get(a), rows.get(b)
    if not ra or not rb:
        return {}
    pa, pb = ra.per_seed.get(metric, {}), rb.per_seed.get(metric, {})
    return {s: (pa[s][0] - pb[s][0], math.sqrt(_image_variance(ra, rb, metric, s)))
            for s in sorted(set(pa) & set(pb))}


def _image_variance(ra, rb, metric, seed):
    """The test images' part of the variance of one seed's difference between two models:
    paired where both evaluations kept per-image results on the same images (the models
    mostly get the same images right, so this is much smaller), else both binomial variances."""
    pair = same_images_pair(ra.per_image_correct(metric, seed), rb.per_image_correct(metric, seed))
    if pair is not None:
        return paired_variance(*pair)
    return _binomial_variance(ra.per_seed[metric][seed]) + _binomial_variance(rb.per_seed[metric][seed])


def paired_variance(x_correct, y_correct):
    """Variance of the mean of the per-image differences x - y (each +1, -1 or 0) of two
    evaluations of the same N images: (p_b + p_c - (p_b - p_c)^2) / N, with b images right
    in x only and c in y only. The proportions get half an image each, p_b = (b + 1/2) /
    (N + 1): with no discordant image at all the plain estimate would be 0, though 100 images
    cannot rule out a discordance rate of a few percent."""
    n = len(x_correct)
    p_b = (np.sum(x_correct & ~y_correct) + 0.5) / (n + 1.0)
    p_c = (np.sum(~x_correct & y_correct) + 0.5) / (n + 1.0)
    return float(p_b + p_c - (p_b - p_c) ** 2) / n


def run_variance(rows, metric):
    """-> (variance of one training run's accuracy around its variant's mean, degrees of
    freedom), pooled over the Fig. 7 variants with several seeds of ``metric`` (the models
    that train normally: a failing ablation such as Table 1's no-residual block would swamp
    it); (None, 0) before any has two. The test images are the same in every run, so this is
    the spread that training itself (initialization, data order, attack noise) adds."""
    squares, dof = 0.0, 0
    for row in rows.values():
        if "fig7" not in row.variant.groups:
            continue
        accs = [acc for acc, _ in row.per_seed.get(metric, {}).values()]
        if len(accs) > 1:
            mean = sum(accs) / len(accs)
            squares += sum((x - mean) ** 2 for x in accs)
            dof += len(accs) - 1
    return (squares / dof if dof else None), dof


def compare(rows, a, b, metric, min_seeds=MIN_SEEDS):
    """Is variant ``a`` more accurate than ``b`` on ``metric``? -> (mean difference in points
    or None, verdict), over the seeds both have.

    Significant: the mean difference over k seeds exceeds 1.96 standard errors, where the
    variance is 2 s^2 / k for the training runs (s^2 from ``run_variance``, pooled over all
    variants) plus the test images' variance (the same images in every seed, so that part does
    not shrink with k): paired per image where both evaluations kept per-image results, else
    both models' binomial variance (unpaired, so conservative)."""
    diffs = seed_differences(rows, a, b, metric)
    if not diffs:
        return None, "not measured yet"
    d = sum(x for x, _ in diffs.values()) / len(diffs)
    if len(diffs) < min_seeds:
        return 100 * d, "%d seed so far (a verdict needs %d)" % (len(diffs), min_seeds)
    runs, dof = run_variance(rows, metric)
    if not dof:
        return 100 * d, "not judged yet (no run-to-run spread measured: no Fig. 7 model has %d seeds)" % min_seeds
    se = difference_se(runs, diffs)
    if d > Z95 * se:
        return 100 * d, "yes"
    if d < -Z95 * se:
        return 100 * d, "no, the opposite (significant)"
    return 100 * d, "not significant"


def difference_se(runs, diffs):
    """Standard error of the mean of ``diffs`` ({seed: (difference, image standard error)}),
    with ``runs`` the run-to-run variance of ``run_variance`` (None: not measured)."""
    images = sum(se ** 2 for _, se in diffs.values()) / len(diffs)
    return math.sqrt(2 * (runs or 0.0) / len(diffs) + images)


def points(rows, a, b, metric, unit=" points"):
    """The evidence for one comparison: mean difference, and each seed's when there are several."""
    diffs = seed_differences(rows, a, b, metric)
    if not diffs:
        return "–"
    text = "%+.1f%s" % (100 * sum(x for x, _ in diffs.values()) / len(diffs), unit)
    if len(diffs) > 1:
        text += " (per seed %s; significant beyond ±%.1f)" % (
            ", ".join("%+.1f" % (100 * x) for x, _ in diffs.values()),
            100 * Z95 * difference_se(run_variance(rows, metric)[0], diffs))
    return text


def _binomial_variance(acc_n):
    acc, n = acc_n
    return max(acc * (1 - acc), 1e-12) / max(n, 1)


def metric_label(m):
    return "clean" if m == "clean" else m.replace("pgd", "PGD-") if m.startswith("pgd") else m


def pct(stat, spread=True):
    if stat is None:
        return "–"
    mean, ci, lo, hi, k = stat
    text = "%.1f ± %.1f" % (100 * mean, 100 * ci)
    if spread and k > 1:
        text += " [%.1f–%.1f]" % (100 * lo, 100 * hi)
    return text


def claims(rows, budget):
    """The paper's claims checked on our rows: list of (claim, where, evidence, verdict)."""
    out = []

    def cmp(a, b, metric):
        return compare(rows, a, b, metric)

    ops = ["mean", "median", "bilateral", "nonlocal-dot", "nonlocal"]
    metrics = [m for m in ("pgd10", "pgd100") if any(m == "pgd%d" % i for i, _ in budget.white_box)] or \
        ["pgd%d" % i for i, _ in budget.white_box if i]
    for other, where in (("baseline", "Fig. 7 (i)"), ("bottleneck", "Fig. 7 (ii)"), ("null", "Fig. 7 (iii)")):
        for m in metrics:
            results = [(op, cmp(op, other, m)) for op in ops]
            out.append(("every denoising op is more accurate than %s under %s" % (other, metric_label(m)), where,
                        _points_per_op(results, other), _count_verdict(results, "better")))
    for m in metrics:
        v = cmp("nonlocal", "nonlocal-dot", m)[1]
        out.append(("non-local Gaussian is marginally better than dot product (%s)" % metric_label(m), "Fig. 7",
                    points(rows, "nonlocal", "nonlocal-dot", m),
                    "similar (difference not significant)" if v == "not significant" else v))
    # Sec. 6.1: "robust even under 2000-iteration PGD": +3.4 over the baseline at 2000 iterations.
    longest = "pgd%d" % max(i for i, _ in budget.white_box)
    if longest not in metrics:
        out.append(("non-local Gaussian is more accurate than baseline under the longest attack (%s)"
                    % metric_label(longest), "Fig. 6, Sec. 6.1", points(rows, "nonlocal", "baseline", longest),
                    cmp("nonlocal", "baseline", longest)[1]))
    for m in metrics:
        out.append(("removing the 1x1 conv lowers accuracy (%s)" % metric_label(m), "Table 1",
                    points(rows, "nonlocal", "nonlocal-no1x1", m, " points for keeping it"),
                    cmp("nonlocal", "nonlocal-no1x1", m)[1]))
    out.append(_residual_claim(rows.get("nonlocal-noresidual"), rows.get("nonlocal")))
    # Sec. 6.2 reports the all-blocks model under black-box attack only (49.5 vs 46.4 with 4
    # blocks); its white-box numbers are in the tables, not judged against a claim.
    out.append(("denoising after every residual block beats 4 blocks (black-box all-or-nothing)",
                "Sec. 6.2, Table 2", points(rows, "deep-nonlocal-all", "deep-nonlocal", "all_or_nothing") + " (S26)",
                cmp("deep-nonlocal-all", "deep-nonlocal", "all_or_nothing")[1]))
    for a, b in (("nonlocal", "null"), ("null", "baseline"), ("nonlocal-dot", "null")):
        out.append(("black-box all-or-nothing: %s more accurate than %s" % (a, b), "Table 2",
                    points(rows, a, b, "all_or_nothing"), cmp(a, b, "all_or_nothing")[1]))
    out.append(("black-box all-or-nothing: non-local Gaussian and dot product perform similarly", "Table 2",
                points(rows, "nonlocal", "nonlocal-dot", "all_or_nothing"),
                _no_difference(cmp("nonlocal", "nonlocal-dot", "all_or_nothing")[1])))
    local = [(op, cmp(op, "null", "all_or_nothing")) for op in ("mean", "median", "bilateral")]
    out.append(("black-box all-or-nothing: local filters (mean, median, bilateral) are not convincingly better "
                "than null", "Table 2",
                _points_per_op(local, "null"), _count_verdict(local, "not better")))
    out.append(("with clean training, denoising makes no significant difference on clean images", "Table 3",
                points(rows, "clean-nonlocal", "clean-baseline", "clean"),
                _no_difference(cmp("clean-nonlocal", "clean-baseline", "clean")[1])))
    for a, b in (("clean-baseline", "baseline"), ("clean-nonlocal", "nonlocal")):
        out.append(("adversarial training costs clean accuracy (%s vs %s)" % (b, a), "Sec. 6.3",
                    points(rows, a, b, "clean", " points lost"), cmp(a, b, "clean")[1]))
    out.append(_attack_strength_claim(rows.get("baseline"), budget))
    return out


def _no_difference(verdict):
    """A claim of *no* difference from ``compare``'s verdict: a judged difference either way
    contradicts it; a verdict not yet given stays open."""
    if verdict == "not significant":
        return "yes (no significant difference)"
    if verdict in ("yes", "no, the opposite (significant)"):
        return "no: significant difference"
    return verdict


def _points_per_op(results, other):
    """Evidence of a claim over several ops: each op's mean difference from ``other``."""
    return "points over %s: %s" % (other, ", ".join(
        "%s %s" % (op, "%+.1f" % d if d is not None else "–") for op, (d, _) in results))


def _count_verdict(results, want):
    """Verdict for "every op is better" (``want`` 'better') or "no op is significantly better"
    (``want`` 'not better') from [(op, (difference, verdict))]."""
    better = [op for op, (_, v) in results if v == "yes"]
    worse = [op for op, (_, v) in results if v.startswith("no, the opposite")]
    judged = sum(1 for _, (_, v) in results if verdict_class(v) != "open")
    measured = sum(1 for _, (d, _) in results if d is not None)
    if not judged:
        return "not judged yet (too few seeds)" if measured else "not measured yet"
    if want == "better":
        verdict = "%d of %d significantly better" % (len(better), judged)
        verdict += " (%s)" % ", ".join(better) if better else ""
        verdict += ", %d significantly worse (%s)" % (len(worse), ", ".join(worse)) if worse else ""
        return verdict + (" (%d of %d ops judged so far)" % (judged, len(results)) if judged < len(results) else "")
    if better:
        return "no: %s significantly better" % ", ".join(better)
    if judged < len(results):
        return "none significantly better so far (%d of %d judged)" % (judged, len(results))
    return "yes: none significantly better"


def metric_key(iters, limit=None):
    """The Row key of a white-box result: 'clean', 'pgd10'; '@n500' marks a shorter attack rerun
    on a longer attack's subset (runner.matched_groups)."""
    return ("clean" if iters == 0 else "pgd%d" % iters) + ("" if limit is None else "@n%d" % limit)


def same_images(budget, iters, limit):
    """[(iterations, Row key)]: every attack up to ``iters`` on the first ``limit`` images."""
    planned = set(budget.white_box)
    return [(i, metric_key(i) if (i, limit) in planned or limit is None else metric_key(i, limit))
            for i in sorted({i for i, _ in budget.white_box if i <= iters})]


def _attack_strength_claim(base, budget):
    """Fig. 6: accuracy falls as PGD runs longer. Judged on each subset a longer attack runs
    on, where the shorter attacks were rerun on the same images (a subset can be easier than
    the whole test set). A seed shows the fall if no step rises significantly and, on some
    subset, the fall from its first attack to its last is significant (5% level, two-sided).
    Where both evaluations kept per-image results, the test is paired (McNemar's exact test:
    only images that one attack broke and the other did not count); otherwise it compares the
    two rates (1.96 standard errors of both binomials), which is far less sensitive. A fall
    within the noise leaves the claim undecided, not contradicted."""
    claim = ("accuracy falls as attack iterations grow (on the same images)", "Fig. 6")
    curves = [(limit, same_images(budget, max(iters), limit)) for limit, iters in white_box_groups(budget) if limit]
    if not curves:
        curves = [(None, same_images(budget, max(i for i, _ in budget.white_box), None))]
    keys = [k for _, curve in curves for _, k in curve]
    seeds = sorted(set.intersection(*[set(base.per_seed.get(k, {})) for k in keys])) if base else []
    if not seeds:
        return claim + ("–", "not measured yet")
    evidence = "baseline, " + "; ".join("first %s images: %s" % (limit or "all", ", ".join(
        "%s %.1f" % (metric_label(metric_key(i)), 100 * sum(base.per_seed[k][s][0] for s in seeds) / len(seeds))
        for i, k in curve)) for limit, curve in curves)
    if len(seeds) < MIN_SEEDS:
        return claim + (evidence, "%d seed so far (a verdict needs %d)" % (len(seeds), MIN_SEEDS))

    used = {}     # seed -> [(test, step)]: which test judged which step, for the verdict's note

    def beyond_noise(seed, step, alpha=0.05):      # step's first attack significantly more accurate
        (ix, kx), (iy, ky), limit = step
        pair = base.paired(kx, ky, seed)
        used.setdefault(seed, []).append(("paired" if pair is not None else "unpaired", step))
        if pair is not None:
            b, c, p = mcnemar(*pair)
            return b > c and p < alpha
        x, y = base.per_seed[kx][seed], base.per_seed[ky][seed]
        return x[0] - y[0] > Z95 * math.sqrt(_binomial_variance(x) + _binomial_variance(y))

    outcome = []
    chains = [([(i, k) for i, k in curve if i > 0], limit) for limit, curve in curves]
    steps = sum(len(a) - 1 for a, _ in chains)
    for seed in seeds:
        # a rise at any of the steps: each step tested at 5% / steps (Bonferroni), so that the
        # chance of a false "rises" stays at 5% however many steps there are
        rises = any(beyond_noise(seed, (a[j + 1], a[j], limit), 0.05 / max(steps, 1))
                    for a, limit in chains for j in range(len(a) - 1))
        falls = any(len(a) > 1 and beyond_noise(seed, (a[0], a[-1], limit)) for a, limit in chains)
        outcome.append("rises" if rises else "falls" if falls else "flat")
    how = " (%s)" % _tests_used(used)
    if all(o == "falls" for o in outcome):
        return claim + (evidence, "yes: falls in all %d seeds%s" % (len(outcome), how))
    if "rises" in outcome:
        return claim + (evidence, "no: rises at some step in %d of %d seeds%s" % (
            outcome.count("rises"), len(outcome), how))
    return claim + (evidence, "undecided: the fall is within the noise of these images in %d of %d seeds%s" % (
        outcome.count("flat"), len(outcome), how))


def _tests_used(used):
    """Which test judged the Fig. 6 steps: one phrase if every seed used the same, else per
    seed, naming the steps that fell back to comparing rates (no per-image results)."""
    def step_name(step):
        (ix, _), (iy, _), limit = step
        return "PGD-%d vs PGD-%d on %s" % (min(ix, iy), max(ix, iy),
                                           "the first %d images" % limit if limit else "all images")

    def seed_phrase(tests):
        unpaired = sorted({step_name(step) for test, step in tests if test == "unpaired"})
        if not unpaired:
            return "paired per image"
        if len(unpaired) == len({step_name(step) for _, step in tests}):
            return "rates compared, unpaired"
        return "paired per image, except rates compared for " + ", ".join(unpaired)
    phrases = {seed: seed_phrase(tests) for seed, tests in sorted(used.items())}
    if len(set(phrases.values())) == 1:
        return next(iter(phrases.values()))
    return "; ".join("seed %s: %s" % (seed, phrase) for seed, phrase in phrases.items())


def _residual_claim(r, with_residual, num_classes=10):
    """Table 1: "removing the residual connection makes training unstable, and its loss does
    not decrease" (the table shows NaN). A seed counts as failed if its loss went NaN/inf, or
    if its last-epoch training loss is closer to the chance-level loss ln(K) than to the
    last-epoch loss of the same block with its residual connection."""
    claim = ("removing the residual connection makes training unstable (NaN, or a loss that does "
             "not decrease)", "Table 1")
    if r is None or with_residual is None:
        return claim + ("–", "not measured yet")
    chance = math.log(num_classes)
    reference = list(with_residual.final_loss.values())
    reference = sum(reference) / len(reference) if reference else None
    failed, judged = list(r.diverged), len(r.diverged)
    for seed, loss in r.final_loss.items():
        if reference is None or seed in r.diverged:
            continue
        judged += 1
        if loss > (chance + reference) / 2:
            failed.append(seed)
    losses = ", ".join("%.2f" % r.final_loss[s] for s in sorted(r.final_loss) if s not in r.diverged)
    evidence = "%s; last-epoch training loss %s vs %s with the residual, %.2f at chance; clean %s" % (
        "NaN in seed(s) %s" % ",".join(map(str, r.diverged)) if r.diverged else "no NaN",
        losses or "–", "%.2f" % reference if reference is not None else "–", chance, pct(r.stats("clean"), False))
    if judged == 0:
        verdict = "not measured yet"
    elif judged < MIN_SEEDS:
        verdict = "%d seed so far (a verdict needs %d)" % (judged, MIN_SEEDS)
    elif len(failed) == judged:
        # Say which way it failed: the paper's NaN, or only a loss that stays near chance.
        near_chance = len(failed) - len(r.diverged)
        verdict = "yes: training failed in %d of %d seeds (%s)" % (len(failed), judged, ", ".join(
            x for x in ("%d NaN" % len(r.diverged) if r.diverged else "",
                        "%d without NaN but with a loss near chance" % near_chance if near_chance else "") if x))
    else:
        verdict = "no: trained in %d of %d seeds" % (judged - len(failed), judged)
    return claim + (evidence, verdict)


def verdict_class(verdict):
    """For a verdict of ``claims``: 'holds'; 'does not hold' (the data say the opposite,
    significantly); 'within noise' (judged, but the difference the claim is about is not
    significant at this scale: not shown, and not contradicted either); or 'open' (runs or
    seeds missing)."""
    m = re.match(r"(\d+) of (\d+) significantly better( \([^)]*\))?(, (\d+) significantly worse)?", verdict)
    if m:
        yes, judged, worse = int(m.group(1)), int(m.group(2)), int(m.group(5) or 0)
        if worse:
            return "does not hold"
        if yes < judged:
            return "within noise"
        return "open" if "ops judged so far" in verdict else "holds"
    if verdict.startswith(("undecided", "not significant")):
        return "within noise"
    if verdict.startswith(("yes", "similar")):
        return "holds"
    if verdict.startswith(("no,", "no:")):
        return "does not hold"
    return "open"           # not measured yet, not judged yet, one seed so far


def summary(found):
    """The claims table in plain words: which hold at this scale, which do not, which are open."""
    groups = {"holds": [], "does not hold": [], "within noise": [], "open": []}
    for claim, where, evidence, verdict in found:
        groups[verdict_class(verdict)].append("%s (%s): %s" % (claim, where, verdict))
    lines = []
    for title, key in (("Hold here", "holds"), ("Contradicted here (the opposite is significant)", "does not hold"),
                       ("Not shown here (within the noise of this scale: neither confirmed nor contradicted)",
                        "within noise"),
                       ("Not settled yet (missing runs or seeds)", "open")):
        lines.append("**%s** (%d of %d):" % (title, len(groups[key]), len(found)))
        lines += ["- %s" % x for x in groups[key]] or ["- none"]
        lines.append("")
    return "\n".join(lines).rstrip()


def full_set_estimate(row, budget, iters):
    """-> (accuracy, 95% half-width) of PGD-``iters`` on the whole test set, or None.

    An attack run on the first N images only is not comparable as it is with one run on all of
    them: the first N are not a random draw of difficulty. So the estimate chains the drops:
    the next shorter attack's estimate, minus the drop from it to this attack measured on this
    attack's N images (runner.matched_groups); the chain starts at an attack run on all
    images. Each seed's chain is computed from that seed alone, and seeds with a complete chain
    are averaged. The half-width adds the variances of every term: a drop's is paired where
    both evaluations kept every image's result (the variance of the per-image differences),
    otherwise the sum of both binomial variances (conservative: it ignores that the attacks of
    one subset share their images). The terms are added as if independent, though the subsets
    are nested (the first 100 images are among the first 500). The seeds share the images too,
    so averaging seeds does not shrink it."""
    chains = [c for c in (_chain(row, budget, iters, seed) for seed in sorted(row.per_seed.get(metric_key(iters), {})))
              if c]
    if not chains:
        return None
    return (sum(v for v, _ in chains) / len(chains),
            Z95 * math.sqrt(sum(var for _, var in chains) / len(chains)))


def _chain(row, budget, iters, seed):
    """-> (estimate, variance) of ``full_set_estimate`` for one seed, or None."""
    attacks = sorted((i, n) for i, n in budget.white_box if i > 0)
    limit = dict(attacks)[iters]
    if limit is None or iters == attacks[0][0] or not any(n is None for _, n in attacks):
        value = row.per_seed.get(metric_key(iters), {}).get(seed)
        return value and (value[0], _binomial_variance(value))
    shorter = max(i for i, _ in attacks if i < iters)
    start = _chain(row, budget, shorter, seed)
    longer_key, before_key = metric_key(iters), dict(same_images(budget, iters, limit))[shorter]
    longer = row.per_seed.get(longer_key, {}).get(seed)
    before = row.per_seed.get(before_key, {}).get(seed)
    if not (start and longer and before):
        return None
    return start[0] - (before[0] - longer[0]), start[1] + _drop_variance(row, before_key, longer_key, seed)


def _drop_variance(row, before_key, after_key, seed):
    """Variance of the accuracy drop between two evaluations of the same images in one seed:
    ``paired_variance`` where both kept per-image results, otherwise both binomial variances
    added (conservative: ignores that the images are shared)."""
    pair = row.paired(before_key, after_key, seed)
    if pair is not None:
        return paired_variance(*pair)
    return _binomial_variance(row.per_seed[before_key][seed]) + _binomial_variance(row.per_seed[after_key][seed])


def plot_curves(rows, budget, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    iters = [i for i, _ in budget.white_box if i > 0]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = (("Fig. 7 variants", [v for v in VARIANTS if "fig7" in v.groups]),
              ("Table 1 and Sec. 6.2 variants", [v for v in VARIANTS if {"table1", "all"} & set(v.groups)]))
    for ax, (title, variants) in zip(axes, panels):
        for k, v in enumerate(variants):
            row = rows.get(v.name)
            pts = [(i, full_set_estimate(row, budget, i)) for i in iters] if row else []
            pts = [(i, s) for i, s in pts if s]
            if not pts:
                continue
            # spread the variants a little along the (log) x axis, so their intervals stay apart
            xs = [i * 1.06 ** (k - (len(variants) - 1) / 2) for i, _ in pts]
            ys = [100 * s[0] for _, s in pts]
            err = [100 * s[1] for _, s in pts]
            ax.errorbar(xs, ys, yerr=err, marker="o", ms=3, capsize=2, elinewidth=0.8, label=v.name,
                        color="C%d" % (k % 10))
        ax.set_xscale("log")
        ax.set_xlabel("targeted PGD iterations")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Fashion-MNIST, white-box targeted PGD at epsilon %g/255 (mean over seeds, 95%% CI); "
                 "an attack run on a subset: the next shorter attack's\nall-image value minus the drop between "
                 "the two on that subset (see 'Longer attacks on the same images')" % budget.epsilon, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _md_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def white_box_table(rows, budget, groups):
    metrics = ["clean"] + ["pgd%d" % i for i, _ in budget.white_box if i > 0]
    sizes = {("clean" if i == 0 else "pgd%d" % i): n for i, n in budget.white_box}
    header = ["model"] + ["%s (n=%s)" % (metric_label(m), sizes[m] or "all") for m in metrics] + ["paper (ImageNet)"]
    out = []
    for v in VARIANTS:
        if not set(groups) & set(v.groups):
            continue
        row = rows.get(v.name)
        cells = [pct(row.stats(m)) if row else "–" for m in metrics]
        if row and row.diverged:
            cells = ["NaN (diverged, seed %s)" % ",".join(map(str, row.diverged))] + cells[1:]
        paper = ", ".join("%s %s" % (k, val) for k, val in v.paper.items() if k != "all_or_nothing") or ""
        out.append(["%s (%s)" % (v.name, v.label)] + cells + [paper])
    return _md_table(header, out)


def black_box_table(rows):
    names = sorted({a for r in rows.values() for a in r.per_attacker})
    header = ["model"] + names + ["all-or-nothing", "paper (Table 2)"]
    out = []
    for v in VARIANTS:
        r = rows.get(v.name)
        if not r or "all_or_nothing" not in r.per_seed:
            continue
        cells = ["%.1f" % (100 * sum(r.per_attacker[a].values()) / len(r.per_attacker[a]))
                 if a in r.per_attacker else "–" for a in names]
        out.append([v.name] + cells + [pct(r.stats("all_or_nothing")), v.paper.get("all_or_nothing", "")])
    return _md_table(header, out)


def same_images_table(rows, budget):
    """Fig. 6 on matched images: every attack on each subset a longer attack runs on, and the
    longer attacks' whole-test-set estimate (``full_set_estimate``)."""
    subsets = [(limit, max(iters)) for limit, iters in white_box_groups(budget) if limit is not None]
    if not subsets:
        return "Every attack runs on the whole test set."
    columns = [(limit, i, key) for limit, longest in subsets for i, key in same_images(budget, longest, limit)]
    # whole-set estimates need a chain that starts on the whole test set
    estimated = [longest for _, longest in subsets] if any(n is None for i, n in budget.white_box if i) else []
    header = (["model"] + ["%s, first %d" % (metric_label(metric_key(i)), limit) for limit, i, _ in columns] +
              ["%s, all images (estimated)" % metric_label(metric_key(i)) for i in estimated])
    out = []
    for v in VARIANTS:
        row = rows.get(v.name)
        if v.clean_training or not row or not any(row.stats(key) for _, _, key in columns):
            continue
        cells = [pct(row.stats(key), spread=False) for _, _, key in columns]
        for i in estimated:
            e = full_set_estimate(row, budget, i)
            cells.append("%.1f ± %.1f" % (100 * e[0], 100 * e[1]) if e else "–")
        out.append([v.name] + cells)
    return _md_table(header, out) if out else "Not measured yet."


def cost_table(out, budget, variants=VARIANTS):
    """Seconds each model's jobs took (timings.json: the sum over attempts, as the machine was
    at the time, so contended or retried jobs count in full)."""
    timings = load_json(Layout(out).timings(), {})
    if not timings:
        return "No job has finished yet."

    def total(prefix):
        return sum(t for name, t in timings.items() if name.startswith(prefix))

    table = []
    for v in (SOURCE,) + tuple(variants):
        seeds = (SOURCE_SEED,) if v is SOURCE else budget.seeds
        train = ["%.0f" % timings["train/%s/seed%d" % (v.name, s)] for s in seeds
                 if "train/%s/seed%d" % (v.name, s) in timings]
        if not train:
            continue
        wb, bb = total("white-box/%s/" % v.name), total("black-box/%s/" % v.name)
        table.append([v.name, " / ".join(train), "%.0f" % wb if wb else "–", "%.0f" % bb if bb else "–",
                      "%.0f" % (total("train/%s/" % v.name) + wb + bb)])
    other = total("craft/") + total("features")
    table.append(["transfer attacks and feature figures", "–", "–", "–", "%.0f" % other])
    backfill = total("backfill/")
    if backfill:     # `--backfill-per-image`: older evaluations rerun for their per-image results
        table.append(["per-image backfill (older evaluations rerun)", "–", "%.0f" % backfill, "–", "%.0f" % backfill])
    return _md_table(["model", "training, per seed (s)", "white-box evaluations, all seeds (s)",
                      "black-box evaluation, all seeds (s)", "total (s)"], table) + "\n\n" + _targets(timings)


# the suite's targets on a 2-core CPU
TARGET_SUITE_HOURS, TARGET_TRAINING_SECONDS = 6, 600


def _targets(timings):
    """How the run compares with the targets it was planned for, in plain words."""
    hours = sum(timings.values()) / 3600.0
    training = {name[len("train/"):]: t for name, t in timings.items() if name.startswith("train/")}
    over = sorted(((t, name) for name, t in training.items() if t > TARGET_TRAINING_SECONDS), reverse=True)
    return ("Targets: the suite was planned for about %d hours of jobs on 2 cores, with every training run under "
            "about %d minutes. Finished jobs: %.1f hours. Training runs over %d minutes: %d of %d%s." % (
                TARGET_SUITE_HOURS, TARGET_TRAINING_SECONDS // 60, hours, TARGET_TRAINING_SECONDS // 60, len(over),
                len(training),
                " (%s)" % ", ".join("%s %d min %02d s" % (n, t // 60, t % 60) for t, n in over) if over else ""))


def checkpoint_cuts(out, budget, variants=VARIANTS):
    """Models whose training was cut into another number of checkpointed "epochs" than the
    budget's (an earlier version of the runner trained in one epoch): the learning rate of
    every step is the same (tests/test_experiments.py checks it), only the checkpoints and the
    per-epoch averages of training statistics differ. -> a sentence, or ''."""
    layout = Layout(out)
    other = []
    for v in (SOURCE,) + tuple(variants):
        for s in ((SOURCE_SEED,) if v is SOURCE else budget.seeds):
            run = load_json(os.path.join(layout.model_dir(v, s), "run.json")) or {}
            if run.get("epochs") not in (None, budget.checkpoints):
                other.append("%s/seed%d (%d epoch(s) of %d steps)" % (
                    v.name, s, run["epochs"], budget.steps // max(run["epochs"], 1)))
    if not other:
        return ""
    return ("- Checkpoints: %s were trained by an earlier version of the runner, which did not cut the run "
            "into %d checkpointed epochs. The learning rate at every step is the same; only the checkpoints "
            "and the per-epoch averages of training statistics differ.\n" % (", ".join(other), budget.checkpoints))


def per_image_note(rows):
    """Which white-box evaluations kept no per-image results (an earlier runner's, not
    backfilled): comparisons that involve them fall back to the unpaired test. Grouped by
    evaluation and seed. -> a sentence, or '' when every evaluation kept them."""
    missing, models = {}, {}
    for name, row in rows.items():
        for m, by_seed in row.per_seed.items():
            if m == "all_or_nothing":
                continue
            for seed, (_, n) in by_seed.items():
                key = (seed, -n, int(re.sub(r"\D", "", m.split("@")[0]) or 0),
                       "%s n=%d" % (metric_label(m.split("@")[0]), n))
                models.setdefault(key, []).append(name)
                if seed not in row.per_image.get(m, {}):
                    missing.setdefault(key, []).append(name)
    if not missing:
        return ""
    groups = ["%s in seed %d: %s" % (key[3], key[0],
                                     "every model" if len(names) == len(models[key]) else ", ".join(names))
              for key, names in sorted(missing.items())]
    return ("- Per-image results (`eval.py --per-image`), which the paired tests need, are missing for evaluations "
            "run before the runner kept them (and not backfilled): %s. Comparisons that involve them use the "
            "unpaired test.\n" % "; ".join(groups))


def noise_table(features):
    if not features:
        return "Not measured yet."
    keys = ["res2", "res3", "res4", "res5"]
    out = []
    for name, vals in sorted(features["relative_perturbation"].items()):
        cells = []
        for k in keys:
            after = vals.get(k + "/denoise/denoised")
            cells.append("%.3f" % vals[k] + (" → %.3f" % after if after is not None else ""))
        out.append([name] + cells)
    return _md_table(["model"] + ["%s (→ after the op)" % k for k in keys], out)


# The BN that closes an added block (the denoising block's after its 1x1 conv, the bottleneck
# block's after conv3) and every backbone residual branch start with gamma = 0
# (nets/denoise_block.batchnorm, zero_init; not the block without a residual connection):
# a block whose gamma stays near 0 is still the identity, i.e. the network did not use it.
_ADDED_BLOCK_GAMMA = re.compile(r"^(.*(?:_denoise|/non_local))/(?:conv|conv3)/bn/gamma$")
_BACKBONE_GAMMA = re.compile(r"^group\d+/block\d+/conv3/bn/gamma$")


def block_usage(model_file):
    """-> ([(block scope, mean |gamma|)] of the added blocks in network order, mean |gamma| of
    the backbone's residual branches), from a model-final.npz."""
    import numpy as np
    with np.load(model_file) as params:
        added = [(m.group(1), float(np.abs(params[k]).mean()))
                 for k in params.files for m in [_ADDED_BLOCK_GAMMA.match(k)] if m]
        backbone = [float(np.abs(params[k]).mean()) for k in params.files if _BACKBONE_GAMMA.match(k)]
    order = lambda scope: [int(t) for t in re.findall(r"\d+", scope)]
    return sorted(added, key=lambda a: order(a[0])), (sum(backbone) / len(backbone) if backbone else None)


def block_usage_table(out, budget, variants=VARIANTS):
    """Mean over seeds of each added block's output scale; variants without added blocks or
    without a trained model are left out."""
    layout = Layout(out)
    table = []
    for v in variants:
        per_seed = [block_usage(layout.model_file(v, seed)) for seed in budget.seeds
                    if os.path.exists(layout.model_file(v, seed))]
        per_seed = [u for u in per_seed if u[0]]
        if not per_seed:
            continue
        blocks = [scope for scope, _ in per_seed[0][0]]
        means = [sum(u[0][i][1] for u in per_seed) / len(per_seed) for i in range(len(blocks))]
        backbone = [u[1] for u in per_seed if u[1] is not None]
        table.append([v.name, " / ".join("%.2f" % m for m in means),
                      "%.2f" % (sum(backbone) / len(backbone)) if backbone else "–", str(len(per_seed))])
    if not table:
        return "No trained model with added blocks yet."
    return _md_table(["model", "added blocks, input to output (mean abs gamma)",
                      "backbone residual branches (mean abs gamma)", "seeds"], table)


def draws_note(out):
    """How the evaluations on disk drew their targets and random starts, from the attack
    each result records: per image (stateless, attacks.base.Attacker's ``per_image_seed``),
    per batch (the runner before that), or both."""
    import glob
    kinds = set()
    for path in glob.glob(os.path.join(out, "eval", "*", "*", "white-box-*.json")):
        for result in (load_json(path) or {}).get("white_box", {}).values():
            if result.get("attack", "clean") != "clean":
                kinds.add("per-image seed=" in result["attack"])
    if kinds == {True}:
        return " (each image's target and start drawn from the seed and the image: independent of the batch)"
    if kinds == {False}:
        return (" (targets and starts drawn per batch of eval.py's 250 images by the code of the jobs' commit, before "
                "evaluations drew them per image)")
    if kinds:
        return " (some evaluations drew targets and starts per batch, newer ones per image)"
    return ""


def write_report(out, budget, docs, meta, progress_line):
    """Writes ``docs/RESULTS.md`` and ``docs/figures/robustness.png``; returns the claims."""
    rows = collect(out, budget)
    figures = os.path.join(docs, "figures")
    os.makedirs(figures, exist_ok=True)
    plot_curves(rows, budget, os.path.join(figures, "robustness.png"))
    features = load_json(Layout(out).features_file())
    if features:
        import shutil
        from .features import NOISE_FIGURE, figure_noise
        for name in features.get("figures", []):
            src = os.path.join(out, "features", name)
            if name == NOISE_FIGURE and features.get("relative_perturbation"):
                # drawn from the measurement itself, so the page's drawing code applies
                figure_noise(features["relative_perturbation"], os.path.join(figures, name))
            elif os.path.exists(src):
                shutil.copyfile(src, os.path.join(figures, name))
    found = claims(rows, budget)
    inside = os.path.relpath(os.path.abspath(out), REPO)
    out_shown = "" if inside.startswith("..") else " (`%s` in the repository)" % inside
    # earlier runs of the suite kept beside the page (docs/archive), for comparison
    archive = os.path.join(docs, "archive")
    earlier = sorted(n for n in (os.listdir(archive) if os.path.isdir(archive) else ()) if n.startswith("RESULTS-"))
    earlier = ("\nEarlier runs of the suite, kept for comparison: %s." % ", ".join(
        "[%s](archive/%s)" % (n[:-3], n) for n in earlier)) if earlier else ""
    text = RESULTS_TEMPLATE.format(
        out_shown=out_shown, earlier=earlier, progress=progress_line, draws=draws_note(out), command=meta["command"],
        commit=meta["commit"], machine=meta["machine"],
        wall=meta["wall"], date=meta["date"], seeds=", ".join(map(str, budget.seeds)),
        steps=budget.steps, batch=budget.batch, k=budget.train_attack_iter, eps=budget.epsilon,
        width=budget.width, bb_images=budget.black_box_images, n_transfer=len(budget.transfer_attacks()),
        transfer_list=", ".join("`%s`" % a.name for a in budget.transfer_attacks()),
        wb_sizes=", ".join("%s: %s" % (metric_label("pgd%d" % i if i else "clean"),
                                       "all 10,000 test images" if n is None else "%d images" % n)
                           for i, n in budget.white_box), lr=budget.base_lr * budget.batch / 256,
        claims=_md_table(["paper's claim", "where", "our evidence (mean over seeds)", "holds here?"], found),
        summary=summary(found),
        white_box=white_box_table(rows, budget, ("fig7",)),
        ablations=white_box_table(rows, budget, ("table1", "all")),
        table3=white_box_table(rows, budget, ("table3",)),
        black_box=black_box_table(rows), noise=noise_table(features), usage=block_usage_table(out, budget),
        same_images=same_images_table(rows, budget), cost=cost_table(out, budget),
        checkpoint_cuts=checkpoint_cuts(out, budget), per_image=per_image_note(rows), min_seeds=MIN_SEEDS,
        feature_figs="\n".join("![%s](figures/%s)" % (n, n) for n in (features or {}).get("figures", [])))
    from core.files import atomic_write
    atomic_write(os.path.join(docs, "RESULTS.md"), lambda f: f.write(text), mode="w")
    return found


RESULTS_TEMPLATE = """# Reproducing the paper at Fashion-MNIST scale

{progress}

Generated by `{command}` ({commit}, {date}) on {machine}; wall time of the finished jobs:
{wall}. Every number below comes from the JSON files that command writes under its `--out`
directory{out_shown}; rerunning it regenerates this page, the tables and the figures.{earlier}

## Set-up (the same for every model: no per-variant tuning)

- Data: Fashion-MNIST (60,000 training / 10,000 test images, 28x28 grayscale, 10 classes).
- Networks: the small-image ResNet `S14` of width {width} (one bottleneck block per stage, 28, 14,
  7, 4 pixels); denoising blocks after res2, res3, res4, res5 (Sec. 6). The "after every
  residual block" comparison (Sec. 6.2) uses `S26` (two blocks per stage), against `S26` with 4 blocks.
- Adversarial training (Sec. 5): every batch of {batch} replaced by its targeted PGD-{k} version at
  epsilon {eps} on the 0..255 scale (0.1 of the range), 20% of batches from the clean image;
  {steps} SGD steps (Nesterov, lr {lr:g}, /10 at 75%, weight decay 1e-4, label smoothing 0.1).
  Table 3's models train on clean images with the same schedule.
- Seeds: {seeds}. Each cell is the mean over seeds, ± the larger side of the 95% (Wilson)
  binomial interval of its test images (every seed sees the same images, so they count once),
  and [min–max over seeds]: the spread between training runs.
{checkpoint_cuts}- White-box evaluation: targeted PGD with a random start at epsilon {eps}, step
  max(epsilon/10, epsilon/iterations), evaluation seed 0 for every model{draws}, on {wb_sizes} (the first
  N test images: the same images for every model). The longer attacks run on subsets to keep
  the suite on a CPU budget (PGD-1000 on all 10,000 images would cost a hundred times the
  PGD-10 evaluation, per model), so their intervals are wider. A subset is not a random draw of
  difficulty, so the shorter attacks are rerun on each subset for the comparisons across
  iterations (Fig. 6, and the curves).
{per_image}- Black-box (Sec. 6.2): {n_transfer} transfer attacks crafted white-box on a separately trained baseline
  (seed 101) on the first {bb_images} test images: {transfer_list}. "2eps" is twice the training
  epsilon, as in the CAAD setting (32 against models trained at 16). All-or-nothing: an image
  counts only if every one of its adversarial versions is classified correctly. Every model sees
  the same transfer images, so its per-image outcomes (kept beside its result) pair the Table 2
  comparisons like the white-box ones.

## Which of the paper's claims hold at this scale

"Significant": the mean difference over the seeds both models have exceeds 1.96 standard
errors, counting two sources of noise. Training: how much one run's accuracy varies from
another's, measured from the seeds of the Fig. 7 models (pooled over them). Test images:
counted once, since every run sees the same images; the variance of the two models' per-image
differences where both evaluations kept per-image results (paired), else both models' binomial
variance (unpaired, so conservative). No verdict is given from fewer than {min_seeds} seeds. Where the evidence lists
"per
seed", those are the separate runs' differences, followed by the difference the test needed.
A claim "not shown here" is neither confirmed nor contradicted: its difference is within that
noise. Fig. 6 compares attacks within one run on the same images, so training noise does not
enter; where both evaluations kept every image's result (`eval.py --per-image`) it uses
McNemar's exact test on the images one attack broke and the other did not, otherwise the two
rates' binomial noise.

{summary}

{claims}

## White-box robustness (Fig. 7; accuracy %)

Fig. 7 is a plot; the paper's text gives numbers only for the baseline and the non-local
Gaussian rows, which the last column shows.

{white_box}

![robustness](figures/robustness.png)

### Longer attacks on the same images (Fig. 6)

Each subset of the test set with its own attacks: the drop from one attack to a longer one is
measured on the same images. The last columns estimate the longer attacks on all images, as a
chain: the next shorter attack's all-image value minus the drop between the two measured on the
longer attack's subset (the figure above plots these).

{same_images}

## Block design (Table 1) and denoising after every block (Sec. 6.2)

{ablations}

## Clean training (Table 3)

{table3}

## Black-box transfer and all-or-nothing (Table 2; accuracy %)

{black_box}

## Do the networks use the added blocks?

Every added block ends in a BN whose scale gamma starts at 0, so at initialization the block is
the identity (as every residual branch of the backbone is; the block without its residual
connection, Table 1, starts at gamma = 1 instead, since it replaces its input). The mean
|gamma| after training says how much of the block's output the network chose to add: near 0
means the block was left unused, values like the backbone's own residual branches mean it is
used as much as they are. The block without its 1x1 conv (Table 1) has no such BN (the 1x1 conv
and its BN are what that ablation removes: the block adds the denoised features to its input
as they are), so it has no row here.

{usage}

## Feature noise (Sec. 3, Figs. 1-3)

Relative perturbation ||f(x_adv) - f(x)|| / ||f(x)|| of each stage's output under white-box
targeted PGD-10 of the same model (mean over images); for denoising models, "→" gives the
same quantity right after the denoising operation of that stage.

{noise}

{feature_figs}

## What the run cost

Seconds per job as the machine was at the time (timings.json): a job that failed and ran again
counts in full, one cut short by stopping the suite does not count, and jobs that shared the
machine with other work took longer. Each op's cost per step on a quiet machine is in
docs/PERFORMANCE.md (`python -m bench.run`).

{cost}
"""
