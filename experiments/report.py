"""Tables, figures and the paper-claim verdicts of docs/RESULTS.md, from the JSON files the
runner's jobs wrote. Works on partial results: missing rows say so."""
import math
import os
import re

from .runner import Layout, diverged_file, load_json, white_box_groups
from .suite import VARIANTS

Z95 = 1.96


class Row:
    """One variant's results over seeds: metric -> list of (accuracy, images) per seed."""

    def __init__(self, variant):
        self.variant = variant
        self.per_seed = {}          # metric -> {seed: (acc, n)}
        self.diverged = []          # seeds whose training stopped on a NaN/inf loss
        self.per_attacker = {}      # black-box attacker -> {seed: acc}
        self.final_loss = {}        # seed -> training cross-entropy of the last epoch

    def add(self, metric, seed, acc, n):
        self.per_seed.setdefault(metric, {})[seed] = (acc, n)

    def stats(self, metric):
        """-> (mean accuracy, pooled 95% CI half-width, min, max, seeds) or None."""
        values = self.per_seed.get(metric)
        if not values:
            return None
        accs = [a for a, _ in values.values()]
        n = sum(k for _, k in values.values())
        mean = sum(accs) / len(accs)
        return mean, Z95 * math.sqrt(max(mean * (1 - mean), 1e-12) / max(n, 1)), min(accs), max(accs), len(accs)


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
                res = load_json(layout.white_box_file(v, seed, [i for i in iters if not v.clean_training or i <= 10],
                                                  limit))
                for name, r in ((res or {}).get("white_box") or {}).items():
                    row.add(name, seed, 1.0 - r["top1_error"], r["num_images"])
            bb = (load_json(layout.black_box_file(v, seed)) or {}).get("all_or_nothing")
            if bb:
                row.add("all_or_nothing", seed, bb["all_or_nothing_accuracy"], bb["num_images"])
                for name, acc in bb["per_attacker_accuracy"].items():
                    row.per_attacker.setdefault(name, {})[seed] = acc
        rows[v.name] = row
    return rows


def compare(rows, a, b, metric, min_seeds=2):
    """Is variant ``a`` more accurate than ``b`` on ``metric``? -> (difference in points or
    None, verdict), over the seeds both have. Significant means the mean difference exceeds
    1.96 standard errors of the pooled binomial counts *and* every seed agrees in sign; the
    binomial error ignores the spread between training runs, which only the seeds show, so
    no verdict is given before ``min_seeds`` seeds."""
    ra, rb = rows.get(a), rows.get(b)
    if not ra or not rb:
        return None, "not measured yet"
    pa, pb = ra.per_seed.get(metric, {}), rb.per_seed.get(metric, {})
    seeds = sorted(set(pa) & set(pb))
    if not seeds:
        return None, "not measured yet"
    d = sum(pa[s][0] - pb[s][0] for s in seeds) / len(seeds)
    if len(seeds) < min_seeds:
        return 100 * d, "%d seed so far (a verdict needs %d)" % (len(seeds), min_seeds)
    se = math.sqrt(sum(_binomial_variance(p[s]) for p in (pa, pb) for s in seeds)) / len(seeds)
    signs = {math.copysign(1, pa[s][0] - pb[s][0]) for s in seeds}
    if abs(d) > Z95 * se and len(signs) == 1:
        return 100 * d, "yes" if d > 0 else "no, the opposite (significant)"
    return 100 * d, "not significant"


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
        return compare(rows, a, b, metric, min_seeds=min(2, len(budget.seeds)))

    ops = ["mean", "median", "bilateral", "nonlocal-dot", "nonlocal"]
    long_metric = "pgd%d" % max(i for i, _ in budget.white_box)
    metrics = [m for m in ("pgd10", "pgd100") if any(m == "pgd%d" % i for i, _ in budget.white_box)] or \
        ["pgd%d" % i for i, _ in budget.white_box if i]
    for other, where in (("baseline", "Fig. 7 (i)"), ("bottleneck", "Fig. 7 (ii)"), ("null", "Fig. 7 (iii)")):
        for m in metrics:
            results = [(op, cmp(op, other, m)) for op in ops]
            yes = sum(1 for _, (_, v) in results if v == "yes")
            measured = sum(1 for _, (d, _) in results if d is not None)
            judged = sum(1 for _, (_, v) in results if verdict_class(v) != "open")
            ev = ", ".join("%s %s" % (op, "%+.1f" % d if d is not None else "–") for op, (d, _) in results)
            verdict = ("%d of %d significantly better" % (yes, judged) if judged else
                       "not judged yet (too few seeds)" if measured else "not measured yet")
            if judged and judged < len(ops):
                verdict += " (%d of %d ops judged so far)" % (judged, len(ops))
            out.append(("every denoising op is more accurate than %s under %s" % (other, metric_label(m)), where,
                        "points over %s: %s" % (other, ev), verdict))
    for m in metrics:
        d, v = cmp("nonlocal", "nonlocal-dot", m)
        out.append(("non-local Gaussian is marginally better than dot product (%s)" % metric_label(m), "Fig. 7",
                    "%s points" % ("%+.1f" % d if d is not None else "–"),
                    "similar (difference not significant)" if v == "not significant" else v))
    for m in metrics:
        d, v = cmp("nonlocal", "nonlocal-no1x1", m)
        out.append(("removing the 1x1 conv lowers accuracy (%s)" % metric_label(m), "Table 1",
                    "%s points for keeping it" % ("%+.1f" % d if d is not None else "–"), v))
    out.append(_residual_claim(rows.get("nonlocal-noresidual"), rows.get("nonlocal"), budget))
    for m in ("all_or_nothing", long_metric):
        d, v = cmp("deep-nonlocal-all", "deep-nonlocal", m)
        out.append(("denoising after every residual block beats 4 blocks (%s)" % m, "Sec. 6.2, Table 2",
                    "%s points (S26)" % ("%+.1f" % d if d is not None else "–"), v))
    for a, b in (("nonlocal", "null"), ("null", "baseline"), ("nonlocal-dot", "null")):
        d, v = cmp(a, b, "all_or_nothing")
        out.append(("black-box all-or-nothing: %s more accurate than %s" % (a, b), "Table 2",
                    "%s points" % ("%+.1f" % d if d is not None else "–"), v))
    d, v = cmp("clean-nonlocal", "clean-baseline", "clean")
    out.append(("with clean training, denoising makes no significant difference on clean images", "Table 3",
                "%s points" % ("%+.1f" % d if d is not None else "–"),
                "yes (no significant difference)" if v == "not significant" else
                # a judged difference either way contradicts the claim; otherwise still open
                "no: significant difference" if v in ("yes", "no, the opposite (significant)") else v))
    for a, b in (("clean-baseline", "baseline"), ("clean-nonlocal", "nonlocal")):
        d, v = cmp(a, b, "clean")
        out.append(("adversarial training costs clean accuracy (%s vs %s)" % (b, a), "Sec. 6.3",
                    "%s points lost" % ("%.1f" % d if d is not None else "–"), v))
    base = rows.get("baseline")
    if base:
        curve = [(i, base.stats("pgd%d" % i if i else "clean")) for i, _ in budget.white_box]
        curve = [(i, s) for i, s in curve if s]
        if len(curve) >= 3:
            accs = [100 * s[0] for _, s in curve]
            drops = [accs[k] - accs[k + 1] for k in range(len(accs) - 1)]
            # Longer attacks run on smaller subsets of the test set, so only the direction is
            # compared; "diminishes with 1000-2000 iterations" needs more iterations than we run.
            out.append(("accuracy falls as attack iterations grow", "Fig. 6",
                        "baseline: " + ", ".join("%s %.1f (n=%s)" % ("clean" if i == 0 else "PGD-%d" % i, a,
                                                                     n or "all")
                                                 for (i, n), a in zip(
                                                     [(i, dict(budget.white_box)[i]) for i, _ in curve], accs)),
                        "yes (direction only: nested subsets)" if all(x > 0 for x in drops) else
                        "no: not falling at every step"))
    return out


def _residual_claim(r, with_residual, budget, num_classes=10):
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
    need = min(2, len(budget.seeds))
    if judged == 0:
        verdict = "not measured yet"
    elif judged < need:
        verdict = "%d seed so far (a verdict needs %d)" % (judged, need)
    elif len(failed) == judged:
        verdict = "yes: training failed in %d of %d seeds" % (len(failed), judged)
    else:
        verdict = "no: trained in %d of %d seeds" % (judged - len(failed), judged)
    return claim + (evidence, verdict)


def verdict_class(verdict):
    """'holds', 'does not hold' or 'open' for a verdict of ``claims``."""
    m = re.match(r"(\d+) of (\d+) significantly better( \((\d+) of (\d+) ops judged so far\))?", verdict)
    if m:
        yes, judged = int(m.group(1)), int(m.group(2))
        if yes < judged:
            return "does not hold"
        return "open" if m.group(3) else "holds"
    if verdict.startswith(("yes", "similar")):
        return "holds"
    if verdict.startswith(("no,", "no:", "not significant")):
        return "does not hold"
    return "open"           # not measured yet, not judged yet, one seed so far


def summary(found):
    """The claims table in plain words: which hold at this scale, which do not, which are open."""
    groups = {"holds": [], "does not hold": [], "open": []}
    for claim, where, evidence, verdict in found:
        groups[verdict_class(verdict)].append("%s (%s): %s" % (claim, where, verdict))
    lines = []
    for title, key in (("Hold here", "holds"), ("Do not hold here", "does not hold"),
                       ("Not settled yet (missing runs or seeds)", "open")):
        lines.append("**%s** (%d of %d):" % (title, len(groups[key]), len(found)))
        lines += ["- %s" % x for x in groups[key]] or ["- none"]
        lines.append("")
    return "\n".join(lines).rstrip()


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
            pts = [(i, row.stats("pgd%d" % i)) for i in iters] if row else []
            pts = [(i, s) for i, s in pts if s]
            if not pts:
                continue
            xs = [i for i, _ in pts]
            ys = [100 * s[0] for _, s in pts]
            err = [100 * s[1] for _, s in pts]
            ax.errorbar(xs, ys, yerr=err, marker="o", ms=3, capsize=2, label=v.name, color="C%d" % (k % 10))
        ax.set_xscale("log")
        ax.set_xlabel("targeted PGD iterations")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Fashion-MNIST, white-box targeted PGD at epsilon %g/255 (mean over seeds, 95%% CI)"
                 % budget.epsilon, fontsize=9)
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
    text = RESULTS_TEMPLATE.format(
        progress=progress_line, command=meta["command"], commit=meta["commit"], machine=meta["machine"],
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
        feature_figs="\n".join("![%s](figures/%s)" % (n, n) for n in (features or {}).get("figures", [])))
    from fdenoise.checkpoint import atomic_write
    atomic_write(os.path.join(docs, "RESULTS.md"), lambda f: f.write(text), mode="w")
    return found


RESULTS_TEMPLATE = """# Reproducing the paper at Fashion-MNIST scale

{progress}

Generated by `{command}` ({commit}, {date}) on {machine}; wall time of the jobs so far:
{wall}. Every number below comes from the JSON files that command writes under its `--out`
directory; rerunning it regenerates this page, the tables and the figures.

## Set-up (the same for every model: no per-variant tuning)

- Data: Fashion-MNIST (60,000 training / 10,000 test images, 28x28 grayscale, 10 classes).
- Networks: the small-image ResNet `S14` of width {width} (one bottleneck block per stage, 28, 14,
  7, 4 pixels); denoising blocks after res2, res3, res4, res5 (Sec. 6). The "after every
  residual block" comparison (Sec. 6.2) uses `S26` (two blocks per stage), against `S26` with 4 blocks.
- Adversarial training (Sec. 5): every batch of {batch} replaced by its targeted PGD-{k} version at
  epsilon {eps} on the 0..255 scale (0.1 of the range), 20% of batches from the clean image;
  {steps} SGD steps (Nesterov, lr {lr:g}, /10 at 75%, weight decay 1e-4, label smoothing 0.1).
  Table 3's models train on clean images with the same schedule.
- Seeds: {seeds}. Each cell is the mean over seeds, ± a 95% binomial interval of the pooled
  images, and [min–max over seeds].
- White-box evaluation: targeted PGD with a random start at epsilon {eps}, step
  max(epsilon/10, epsilon/iterations), evaluation seed 0 for every model, on {wb_sizes} (the first
  N test images: the same images for every model).
- Black-box (Sec. 6.2): {n_transfer} transfer attacks crafted white-box on a separately trained baseline
  (seed 101) on the first {bb_images} test images: {transfer_list}. "2eps" is twice the training
  epsilon, as in the CAAD setting (32 against models trained at 16). All-or-nothing: an image
  counts only if every one of its adversarial versions is classified correctly.

## Which of the paper's claims hold at this scale

"Significant": the mean difference over the seeds both models have exceeds 1.96 standard errors
of their binomial counts, and every seed agrees in sign; no verdict is given from one seed.

{summary}

{claims}

## White-box robustness (Fig. 7; accuracy %)

{white_box}

![robustness](figures/robustness.png)

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
used as much as they are.

{usage}

## Feature noise (Sec. 3, Figs. 1-3)

Relative perturbation ||f(x_adv) - f(x)|| / ||f(x)|| of each stage's output under white-box
targeted PGD-10 of the same model (mean over images); for denoising models, "→" gives the
same quantity right after the denoising operation of that stage.

{noise}

{feature_figs}
"""
