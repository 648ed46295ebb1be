"""docs/RESULTS.md and its figures, from the suite's finished results (experiments/results.py)
and verdicts (experiments/claims.py). Every number on the page is read from a JSON or
per-image file the suite wrote; the page says which command wrote each kind."""
import os
import re

import numpy as np

from core.files import repo_relative
from evaluation.blackbox import ALL_OR_NOTHING
from evaluation.stats import format_rate

from . import claims as claims_mod
from .results import attacker_sets, collect, metric_label
from .runner import Layout, load_json
from .schedule import MARGIN as SCHEDULE_MARGIN
from .schedule import decide
from .suite import AUDIT_TRANSFER, SCHEDULE_SEED, SOURCES, TRANSFER

AUDIT_CHECKS = (("epsilon_sweep", "epsilon sweep"), ("iterations_and_restarts", "iterations, restarts"),
                ("black_box", "black-box"), ("gradients", "gradients"), ("determinism", "deterministic"),
                ("bpda", "BPDA"))


def md_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def pct_ci(acc):
    """'82.3 ± 0.9' from Row.accuracy's tuple; one seed: its images' interval, marked."""
    if acc is None:
        return "–"
    mean, half, seeds, _ = acc
    return "%.1f ± %.1f%s" % (100 * mean, 100 * half, "" if seeds > 1 else " (1 seed)")


def points(d):
    return "%+.1f [%+.1f, %+.1f]" % (100 * d.estimate, 100 * d.low, 100 * d.high)


def fmt_p(p):
    if p != p:
        return "–"
    return "%.2g" % p if p >= 1e-4 else "<1e-4"


# ------------------------------------------------------------------------------------ sections
def verdict_summary(judged, residual):
    groups = {"holds": [], "contradicted": [], "not shown": [], "not measured": []}
    for j in judged:
        groups[j.verdict].append("%s (%s)%s" % (j.claim.text, j.claim.where, without(j)))
    key = next((k for k in ("not measured", "not shown", "holds", "contradicted") if residual[1].startswith(k)),
               "not measured")
    groups[key].append(
        "removing the residual connection makes training fail (Table 1; a rule, not a test)")
    lines = []
    for title, key in (("Hold", "holds"), ("Contradicted (the data show the opposite)", "contradicted"),
                       ("Not shown (the data cannot tell at this scale: neither confirmed nor contradicted)",
                        "not shown"), ("Not measured (rows cut or seeds missing)", "not measured")):
        lines.append("**%s** (%d):" % (title, len(groups[key])))
        lines += ["- %s" % x for x in groups[key]] or ["- none"]
        lines.append("")
    return "\n".join(lines).rstrip()


def without(j):
    """What a claim judged on fewer pairs leaves out ("" when it covers all of them)."""
    if j.status != "measured" or not j.cut_rows:
        return ""
    return "; without %s (cut by the budget)" % ", ".join(j.cut_rows)


def claims_table(judged, budget):
    out = []
    for j in judged:
        c = j.claim
        metric = metric_label(c.metric, budget) + ("" if not c.metric_b else " vs " + metric_label(c.metric_b, budget))
        if j.status != "measured":
            out.append([c.text, c.where, metric, j.why, "–", "–", j.verdict, "–", "–"])
            continue
        evidence = "; ".join("%s%s: %s (%d seeds)" % (
            a, "" if a == b else " − " + b, points(d), d.seeds) for a, b, d in j.diffs) + without(j)
        if j.power is None:
            power = "–"
        elif c.kind in claims_mod.EQUIVALENCE:
            power = "%.0f%% (if equal)" % (100 * j.power)
        else:
            power = "%.0f%% (%+.1f)" % (100 * j.power, c.paper_effect)
        out.append([c.text, c.where, metric, evidence, fmt_p(j.p), fmt_p(j.p_holm), "**%s**" % j.verdict,
                    power, "%.1f" % (100 * j.detectable) if j.detectable is not None else "–"])
    return md_table(["claim", "paper", "metric", "our difference, points [95% CI]", "p", "Holm p", "verdict",
                     "power at the paper's effect", "detectable (80% power), points"], out)


def schedule_section(schedule, budget, figures):
    curve, clean = schedule.get("curve", {}), schedule.get("clean", {})
    if not curve:
        return "Not measured yet: the schedule runs come first."
    table = md_table(["epochs", "clean accuracy (validation) %", "untargeted PGD-10 accuracy (validation) %"],
                     [["**%d**" % e if e == schedule.get("epochs") else str(e), "%.1f" % (100 * clean.get(e, np.nan)),
                       "%.1f" % (100 * curve[e])] for e in sorted(curve)])
    plot_schedule(schedule, budget, os.path.join(figures, "schedule.png"))
    chosen = schedule.get("epochs")
    text = table + "\n\n![schedule](figures/schedule.png)\n\n"
    if chosen is None:
        return text + "Not chosen yet: candidates %s still to finish." % ", ".join(map(str, schedule["missing"]))
    text += ("Chosen: **%d epoch(s)** by the rule fixed before the run (experiments/schedule.py): the fewest "
             "epochs within %g point of the best validation accuracy under untargeted PGD-10." % (
                 chosen, 100 * SCHEDULE_MARGIN))
    if schedule.get("at_longest"):
        text += (" The best candidate is the longest one: the curve had not flattened within the candidates, so "
                 "the models may still be short of convergence.")
    return text


def plot_schedule(schedule, budget, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    curve, clean = schedule["curve"], schedule.get("clean", {})
    es = sorted(curve)
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.plot(es, [100 * curve[e] for e in es], "-o", label="untargeted PGD-10")
    if clean:
        ax.plot(es, [100 * clean[e] for e in es], "-s", label="clean")
    if schedule.get("epochs") is not None:
        ax.axvline(schedule["epochs"], color="gray", ls=":", label="chosen")
    ax.set_xlabel("epochs (whole schedule, lr /10 at 75%)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("Baseline on %d held-out training images" % budget.validation, fontsize=9)
    ax.set_xticks(es)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def rows_section(layout, budget, variants, rows):
    record = load_json(layout.rows_file(), {"kept": [], "cut": {}})
    out = []
    for v in variants:
        if v.name in record["cut"]:
            status = "cut: %s" % record["cut"][v.name]
        elif v.name in record["kept"]:
            r = rows[v.name]
            status = "run: %d of %d seeds trained%s" % (len(r.trained_seeds) + len(r.diverged), len(budget.seeds),
                                                          ", diverged in seed(s) %s" % ",".join(map(str, r.diverged))
                                                          if r.diverged else "")
        else:
            status = "not reached yet"
        out.append(["%s (%s)" % (v.name, v.label), "%.1f" % v.cost, status])
    return md_table(["row", "relative cost", "status"], out)


def white_box_table(rows, budget, variants, groups):
    header = ["row", "clean", "targeted PGD-10 (paper's protocol)", "untargeted PGD-10",
              "%s (first %d)" % (metric_label("pgd100", budget), budget.long_images),
              "AutoAttack (seed %d, first %d)" % (budget.seeds[0], budget.aa_images), "audit (seed %d)" %
              budget.seeds[0], "paper (ImageNet)"]
    out = []
    for v in variants:
        if not set(groups) & set(v.groups):
            continue
        r = rows[v.name]
        if r.diverged and not r.correct:
            cells = ["NaN (diverged in seed(s) %s)" % ",".join(map(str, r.diverged))] + ["–"] * 5
        else:
            cells = [pct_ci(r.accuracy(m)) for m in ("clean", "pgd10-targeted", "pgd10", "pgd100", "autoattack")]
            cells.append(audit_cell(r))
        paper = ", ".join("%s %s" % (k, val) for k, val in v.paper.items() if k != "all_or_nothing")
        out.append(["%s" % v.name] + cells + [paper])
    return md_table(header, out)


def audit_cell(row):
    docs = row.results.get("audit", {})
    if not docs:
        return "–"
    audit = next(iter(docs.values()))["audit"]
    failed = [label for key, label in AUDIT_CHECKS if audit["checks"].get(key, {}).get("passed") is False]
    return "pass" if not failed else "**FAIL**: " + ", ".join(failed)


def autoattack_table(rows, variants):
    out = []
    names = None
    for v in variants:
        docs = rows[v.name].results.get("autoattack", {})
        if not docs:
            continue
        seed, doc = next(iter(sorted(docs.items())))
        wb = doc["white_box"]
        row = wb["autoattack"]
        names = list(row["members"])
        out.append([v.name, str(seed), "%.1f" % (100 * (1 - wb["clean"]["top1_error"])),
                    format_rate(row["top1_error"], row["num_images"], complement=True)] +
                   ["%d (%.0f s)" % (m["removed"], m["seconds"]) for m in row["members"].values()] +
                   ["%.0f" % doc["white_box"]["autoattack"].get("seconds_wall", sum(
                       m["seconds"] for m in row["members"].values()))])
    if not out:
        return "Not measured yet."
    return md_table(["row", "seed", "clean %", "robust %"] + ["%s removed" % n for n in names] + ["seconds"], out)


def audit_table(rows, variants):
    out, lines = [], []
    for v in variants:
        docs = rows[v.name].results.get("audit", {})
        if not docs:
            continue
        seed, doc = next(iter(sorted(docs.items())))
        checks = doc["audit"]["checks"]
        out.append([v.name, str(seed)] + [{True: "pass", False: "**FAIL**", None: "n/a"}[
            checks[k]["passed"]] if k in checks else "–" for k, _ in AUDIT_CHECKS])
        lines += ["- %s: %s" % (v.name, checks[k]["verdict"]) for k, _ in AUDIT_CHECKS
                  if k in checks and checks[k]["passed"] is False]
    if not out:
        return "Not measured yet."
    text = md_table(["row", "seed"] + [label for _, label in AUDIT_CHECKS], out)
    if lines:
        text += "\n\nThe failed checks, in the audit's words:\n\n" + "\n".join(lines)
    return text


def black_box_table(rows, variants):
    sources = [s.name for s in SOURCES]
    header = ["row"] + ["all-or-nothing, %s" % s for s in sources] + ["all-or-nothing, both", "paper (Table 2)"]
    out = []
    for v in variants:
        r = rows[v.name]
        if ALL_OR_NOTHING not in r.correct:
            continue
        out.append([v.name] + [pct_ci(r.accuracy("aon:" + s)) for s in sources] +
                   [pct_ci(r.accuracy(ALL_OR_NOTHING)), v.paper.get("all_or_nothing", "")])
    if not out:
        return "Not measured yet."
    sets = attacker_sets(rows)
    per_set = []
    for v in variants:
        r = rows[v.name]
        if ALL_OR_NOTHING not in r.correct:
            continue
        per_set.append([v.name] + ["%.1f" % (100 * r.accuracy(k)[0]) if r.accuracy(k) else "–" for k in sets])
    return md_table(header, out) + "\n\nEach transfer set alone (accuracy %, mean over seeds):\n\n" + md_table(
        ["row"] + [k[3:] for k in sets], per_set)


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
    return md_table(["row"] + ["%s (→ after the op)" % k for k in keys], out)


# The BN that closes an added block (the denoising block's after its 1x1 conv, the bottleneck
# block's after conv3) and every backbone residual branch start with gamma = 0: a block whose
# gamma stays near 0 is still the identity, i.e. the network did not use it.
_ADDED_BLOCK_GAMMA = re.compile(r"^(.*(?:_denoise|/non_local))/(?:conv|conv3)/bn/gamma$")
_BACKBONE_GAMMA = re.compile(r"^group\d+/block\d+/conv3/bn/gamma$")


def block_usage(model_file):
    """-> ([(block scope, mean |gamma|)] of the added blocks in network order, mean |gamma| of
    the backbone's residual branches), from a model-final.npz."""
    with np.load(model_file) as params:
        added = [(m.group(1), float(np.abs(params[k]).mean()))
                 for k in params.files for m in [_ADDED_BLOCK_GAMMA.match(k)] if m]
        backbone = [float(np.abs(params[k]).mean()) for k in params.files if _BACKBONE_GAMMA.match(k)]

    def order(scope):
        return [int(t) for t in re.findall(r"\d+", scope)]
    return sorted(added, key=lambda a: order(a[0])), (sum(backbone) / len(backbone) if backbone else None)


def block_usage_table(layout, budget, variants):
    """Each added block's output scale in each row's first-seed model: the one model per row a
    commit of the suite keeps (results/repro/.gitignore), so a clone regenerates the same table
    whatever other seeds' models happen to be on the machine."""
    seed = budget.seeds[0]
    table = []
    for v in variants:
        if not os.path.exists(layout.model_file(v.name, seed)):
            continue
        added, backbone = block_usage(layout.model_file(v.name, seed))
        if not added:
            continue
        table.append([v.name, " / ".join("%.2f" % g for _, g in added),
                      "%.2f" % backbone if backbone is not None else "–"])
    if not table:
        return "No trained model with added blocks on disk."
    return md_table(["row", "added blocks, input to output (mean abs gamma, seed %d)" % seed,
                     "backbone residual branches (mean abs gamma, seed %d)" % seed], table)


def cost_table(layout, budget, variants):
    timings = load_json(layout.timings(), {})
    if not timings:
        return "No job has finished yet."

    def total(prefix):
        return sum(t for name, t in timings.items() if name.startswith(prefix))
    out = [["schedule runs (%d candidates, training and validation)" % len(budget.candidates), "%.2f" % (
        total("schedule/") / 3600)],
           ["sources and transfer sets", "%.2f" % ((total("source/") + total("craft/")) / 3600)]]
    for v in variants:
        spent = sum(t for name, t in timings.items() if "/%s/seed" % v.name in name)
        if spent:
            train = [t for name, t in timings.items() if name.startswith("train/%s/seed" % v.name)]
            extra = "".join("; %s %.0f s" % (what, total("%s/%s/" % (what, v.name)))
                            for what in ("autoattack", "audit") if total("%s/%s/" % (what, v.name)))
            out.append(["%s (training %.0f s per seed%s)" % (v.name, np.mean(train) if train else 0, extra),
                        "%.2f" % (spent / 3600)])
    out.append(["feature figures", "%.2f" % (total("features") / 3600)])
    out.append(["**total**", "**%.2f**" % (sum(timings.values()) / 3600)])
    return md_table(["jobs", "hours"], out)


# ------------------------------------------------------------------------------------ the page
def write_page(out, budget, variants, docs, meta):
    """Writes ``docs/RESULTS.md`` and ``docs/figures/``; -> (judged claims, residual verdict)."""
    from core.files import atomic_write
    from config.presets import PRESETS
    preset = PRESETS[budget.preset]
    layout = Layout(out)
    rows = collect(out, budget, variants)
    figures = os.path.join(docs, "figures")
    os.makedirs(figures, exist_ok=True)
    judged = claims_mod.judge(rows, cut=load_json(layout.rows_file(), {}).get("cut", {}))
    residual = claims_mod.residual_rule(rows)
    schedule = decide(layout, budget)
    features = load_json(layout.features_file())
    feature_figs = ""
    if features:
        import shutil
        from .features import NOISE_FIGURE, figure_noise
        for name in features.get("figures", []):
            src = os.path.join(out, "features", name)
            if name == NOISE_FIGURE and features.get("relative_perturbation"):
                figure_noise(features["relative_perturbation"], os.path.join(figures, name))
            elif os.path.exists(src):
                shutil.copyfile(src, os.path.join(figures, name))
        feature_figs = "\n".join("![%s](figures/%s)" % (n, n) for n in features.get("figures", []))
    plot_white_box(rows, budget, variants, os.path.join(figures, "white_box.png"))
    archive = os.path.join(docs, "archive")
    earlier = sorted(n for n in (os.listdir(archive) if os.path.isdir(archive) else ()) if n.startswith("RESULTS-"))
    shown = repo_relative(out)
    text = TEMPLATE.format(
        progress=meta["progress"], command=meta["command"], commit=meta["commit"], date=meta["date"],
        machine=meta["machine"], wall=meta["wall"], out=shown,
        earlier=("\n\nThe suite's earlier runs (400-step models, one black-box source of the baseline's own recipe, "
                 "a pooled variance and no correction for multiplicity) are kept in %s; %s" % (
                     ", ".join("[%s](archive/%s)" % (n[:-3], n) for n in earlier), meta.get("why_changed", "")))
        if earlier else "",
        summary=verdict_summary(judged, residual), claims=claims_table(judged, budget),
        family=sum(1 for j in judged if j.status == "measured"), alpha=claims_mod.ALPHA,
        margin=100 * claims_mod.MARGIN, min_seeds=claims_mod.MIN_SEEDS, residual_evidence=residual[0],
        residual_verdict=residual[1], validation=budget.validation, train_images=60000 - budget.validation,
        epochs=schedule.get("epochs") or "–", seeds=", ".join(map(str, budget.seeds)), eps=budget.epsilon,
        test_images="all 10,000" if budget.test_images is None else "the first %d" % budget.test_images,
        long_iter=budget.long_iter, long_images=budget.long_images, aa_images=budget.aa_images,
        aa_iter=budget.aa_iter, aa_queries=budget.aa_queries, audit_images=budget.audit_images,
        audit_iter=budget.audit_iter, audit_queries=budget.audit_queries, bb_images=budget.bb_images,
        sources="\n".join("  - `%s`: %s, seed %d" % (s.name, s.label, s.seed) for s in SOURCES),
        transfer=", ".join("`%s` (%s)" % (a.name, " ".join(a.flags)) for a in TRANSFER),
        audit_transfer=" ".join(AUDIT_TRANSFER.flags), schedule_seed=SCHEDULE_SEED, hours=budget.hours,
        preset=preset.name, arch=preset.arch, width=preset.width, batch=preset.batch, k=preset.train_attack_iter,
        clean_start=100 * preset.prob_start_from_clean, momentum=preset.momentum,
        lr=preset.base_lr * preset.batch / 256, decay=100 * budget.decay_at, wd=preset.weight_decay,
        smoothing=preset.label_smoothing,
        schedule=schedule_section(schedule, budget, figures), rows=rows_section(layout, budget, variants, rows),
        fig7=white_box_table(rows, budget, variants, ("fig7",)),
        table1=white_box_table(rows, budget, variants, ("table1", "all")),
        table3=white_box_table(rows, budget, variants, ("table3",)),
        autoattack=autoattack_table(rows, variants), audit=audit_table(rows, variants),
        black_box=black_box_table(rows, variants), usage=block_usage_table(layout, budget, variants),
        noise=noise_table(features), feature_figs=feature_figs, cost=cost_table(layout, budget, variants))
    atomic_write(os.path.join(docs, "RESULTS.md"), lambda f: f.write(text), mode="w")
    return judged, residual


def plot_white_box(rows, budget, variants, path):
    """Accuracy of every row under each white-box evaluation, with its 95% interval."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    metrics = ["clean", "pgd10-targeted", "pgd10", "pgd100", "autoattack"]
    shown = [v for v in variants if not v.clean_training and rows[v.name].correct]
    fig, ax = plt.subplots(figsize=(9, 3.8))
    width = 0.8 / len(metrics)
    for k, m in enumerate(metrics):
        vals = [rows[v.name].accuracy(m) for v in shown]
        xs = [i + (k - len(metrics) / 2 + 0.5) * width for i in range(len(shown))]
        ax.bar(xs, [100 * a[0] if a else 0 for a in vals], width,
               yerr=[100 * a[1] if a else 0 for a in vals], label=metric_label(m, budget), capsize=2)
    ax.set_xticks(range(len(shown)))
    ax.set_xticklabels([v.name for v in shown], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.set_title("White-box accuracy at epsilon %g/255 (mean over seeds, 95%% CI; AutoAttack: seed %d)" % (
        budget.epsilon, budget.seeds[0]), fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, ncol=len(metrics))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


TEMPLATE = """# Reproducing the paper at Fashion-MNIST scale

{progress}

Generated by `{command}` ({commit}, {date}) on {machine}; time of the finished jobs: {wall}.
Every number below is read from the files that command writes under `{out}` (committed with
this page); `python -m experiments --report-only` regenerates the page from them, and
`python -m experiments` continues the suite where it stopped. Each number's own command is the
first line of its job's log, `{out}/logs/<job>.log` (the job names are below each table's
section: `targeted/<row>/seed<s>`, `untargeted/...`, `long/...`, `black-box/...`,
`autoattack/...`, `audit/...`, `train/...`, `schedule/e<E>`, `craft/<source>/<attack>`).{earlier}

## Verdicts

{summary}

{claims}

Table 1's residual claim is judged by a rule fixed in advance, not a test: a seed fails if its
loss went NaN, or its last-epoch training loss is closer to chance than to the same block's with
the residual connection. Evidence: {residual_evidence}. Verdict: **{residual_verdict}**.

How the verdicts are reached (experiments/claims.py, evaluation/stats.py):

- Each comparison pairs two rows on the seeds both have and the same test images. Its
  uncertainty has two levels, the training runs (seeds) and the test images (shared by every
  seed and both rows), estimated from that pair's own per-image results as crossed random
  factors, with Satterthwaite's degrees of freedom; no variance is borrowed from other rows.
  No verdict rests on fewer than {min_seeds} seeds.
- A claim about several pairs holds only if every pair shows it (an intersection-union test:
  its p is the largest of the pairs'). Pairs whose row the budget cut are left out and named
  ("without ..."): such a claim covers only the rows that ran.
- "Similar" claims are equivalence tests (two one-sided tests) against a margin of
  {margin:g} point fixed before the run; a non-significant difference is never read as
  similarity.
- Holm's correction runs over the {family} claims measured, at {alpha:g}. A claim is
  "contradicted" when a pair shows the opposite (or a difference beyond the margin, for
  "similar" and "no better", a difference significantly beyond the margin) at {alpha:g} /
  {family}; otherwise, if it does not hold, it is "not shown". "No better" claims are the
  one-sided half of the equivalence test.
- White-box claims are judged under untargeted PGD-10, fixed before the run: on 10 classes the
  paper's targeted attack reaches its target on few images, and accuracy under it stays near
  clean accuracy (both are in the tables).
- Power: the chance of a verdict at {alpha:g} (before Holm) if the true difference were the
  paper's (for "similar" and "no better": the chance to conclude it if the two were equal),
  and the smallest difference the test detects with 80% power, each from the pair's measured
  noise (the weakest pair for a claim about several) and its seeds.

## Set-up (the same for every row: no per-variant tuning)

- Data: Fashion-MNIST. The last {validation} training images are held out (the schedule is
  chosen on them); every model trains on the other {train_images}. The test set is read only
  by the final evaluations.
- Networks: the small-image ResNet `{arch}` of width {width} (one bottleneck block per stage);
  denoising blocks after res2 to res5 (Sec. 6). Sec. 6.2's "after every residual block" uses
  `S26` (two blocks per stage), against `S26` with 4 blocks.
- Adversarial training (Sec. 5; preset `{preset}`): each batch of {batch} replaced by its
  targeted PGD-{k} version at epsilon {eps:g} on the 0..255 scale, {clean_start:g}% of batches
  from the clean image; {epochs} epoch(s) (chosen below), SGD with Nesterov momentum {momentum:g},
  learning rate {lr:g} divided by 10 at {decay:g}% of the run, weight decay {wd:g}, label
  smoothing {smoothing:g}. Table 3's rows train on clean images with the same schedule.
  Initialisation as the original release's (theta/phi embeddings from N(0, 0.01), convolutions
  from a truncated normal with He's fan-out variance).
- Seeds: {seeds} for every row (the schedule runs use seed {schedule_seed}, which no row uses).
- White-box evaluation, at epsilon {eps:g} with each image's target and random start drawn
  from evaluation seed 0 and the image (the same for every model): clean and the paper's
  targeted PGD-10 and untargeted PGD-10 on {test_images} test images; untargeted PGD-{long_iter}
  on the first {long_images}; AutoAttack's standard ensemble (APGD-CE, APGD-T, FAB-T with
  {aa_iter} iterations, Square with {aa_queries} queries) on the first {aa_images}, first seed;
  the gradient-masking audit (eval.py --audit: {audit_iter} iterations, {audit_queries} Square
  queries, and each source's transfer set `{audit_transfer}` at the training epsilon) on the
  first {audit_images}, first seed.
- Black-box (Sec. 6.2): transfer sets crafted white-box on two sources that share no row's
  recipe, on the first {bb_images} test images, at twice the training epsilon as in CAAD:
{sources}
  Attacks per source: {transfer}. All-or-nothing: an image counts only if every one of its
  adversarial versions is classified correctly; each source's sets on their own beside both.
- Budget: the rows run in the order of the table below, each with all its seeds; a row whose
  projected time (the first row's measured time times its relative cost) would take the suite
  past {hours:g} hours is cut, rows before seeds, and named.

## The schedule, chosen on held-out images

{schedule}

## Rows

{rows}

## White-box robustness (Fig. 7; accuracy %, mean ± 95% interval over seeds and images)

{fig7}

![white box](figures/white_box.png)

## Block design (Table 1) and denoising after every block (Sec. 6.2)

{table1}

## Clean training (Table 3)

{table3}

## AutoAttack, member by member

Each member runs only on the images the ones before it left correct; "removed": images it broke.

{autoattack}

## Gradient-masking audit (Carlini et al. 2019)

{audit}

## Black-box transfer and all-or-nothing (Table 2; accuracy %)

{black_box}

## Do the networks use the added blocks?

Every added block ends in a BN whose scale gamma starts at 0, so at initialization the block is
the identity (the block without its residual connection starts at gamma = 1, as it replaces
its input). Mean |gamma| after training: near 0, the block is unused.

{usage}

## Feature noise (Sec. 3, Figs. 1-3)

Relative perturbation ||f(x_adv) - f(x)|| / ||f(x)|| of each stage's output under white-box
targeted PGD-10 of the same model (first seed, mean over images); "→" the same right after the
denoising operation of that stage.

{noise}

{feature_figs}

## What the run cost

Hours of each group of jobs as the machine was at the time (timings.json).

{cost}
"""
