"""The training methods of train.py compared at Fashion-MNIST scale, resumably, through the
reproduction harness's jobs (docs/TRAINING-METHODS.md).

    python -m experiments.methods --commit          # every training and evaluation, committed as they finish
    python -m experiments.methods --list            # the jobs and which are finished

What runs, fixed here before any result exists:

- the reproduction's net and schedule (the ``repro`` preset: S14 of width 8, 4 epochs with the
  learning rate /10 after 3, 5,000 training images held out as in the suite), 3 seeds;
- on the baseline net every method: PGD-7 targeted (the paper's recipe, Sec. 5) and untargeted
  (as the cheap methods attack), FGSM-RS, N-FGSM, free training and TRADES, each with its
  paper's defaults (train.py's);
- on the dot-product non-local net: PGD-7 targeted and the best cheap method, chosen by
  ``best_cheap`` from the baseline's results once all of them exist (and recorded, so that a
  later result cannot change the choice);
- the guarded methods (FGSM-RS, N-FGSM, free) continue a collapse with PGD-2 (``FALLBACK``);
- every model: clean accuracy and untargeted PGD-100 on the first 500 test images, AutoAttack
  (standard) on the same images, per image (for paired comparisons); its training time is the
  training job's (``timings.json``), its passes per step and the guard's record are in its
  ``run.json``.
"""
import argparse
import dataclasses
import os
import sys
from typing import Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    label: str
    flags: Tuple[str, ...]
    cheap: bool             # one attack pass per step or fewer (the candidates for the non-local net)


# The guarded (cheap) methods go on after a collapse with PGD-2 from the checkpoint before it, so
# that every seed yields a model to evaluate; the table says where the guard fired, and the
# training time includes the fallback's.
FALLBACK = ("--on-collapse", "pgd-2")
METHODS = (
    Method("pgd7-targeted", "PGD-7, targeted (the paper's recipe)", ("--method", "pgd", "--attack-iter", "7"), False),
    Method("pgd7", "PGD-7, untargeted", ("--method", "pgd", "--attack-iter", "7", "--untargeted"), False),
    Method("fgsm-rs", "FGSM from a random start (Wong et al. 2020)", ("--method", "fgsm-rs") + FALLBACK, True),
    Method("n-fgsm", "N-FGSM (de Jorge et al. 2022)", ("--method", "n-fgsm") + FALLBACK, True),
    Method("free", "free training (Shafahi et al. 2019)", ("--method", "free") + FALLBACK, True),
    Method("trades", "TRADES (Zhang et al. 2019)", ("--method", "trades"), False),
)
NETS = {"baseline": (), "nonlocal-dot": ("--denoise", "nonlocal-dot")}
REFERENCE = "pgd7-targeted"      # what the non-local net's cheap method is compared with


@dataclasses.dataclass(frozen=True)
class Plan:
    name: str
    preset: str
    epochs: int
    decay_epochs: str
    validation: int
    seeds: Tuple[int, ...]
    images: int                 # clean, PGD-100 and AutoAttack on the first this many test images
    long_iter: int
    aa_iter: int
    aa_queries: int


PLANS = {
    "full": Plan("full", "repro", 4, "3", 5000, (1, 2, 3), 500, 100, 100, 5000),
    # the tests': every code path in seconds
    "tiny": Plan("tiny", "tiny", 1, "1", 64, (1, 2), 16, 3, 2, 10),
}


# What --commit leaves out: checkpoints, event files, the models of every seed but the first.
GITIGNORE = """# written by experiments/methods.py: what a commit of the campaign's results leaves out
models/*/*/seed*/*
!models/*/*/seed*/*.json
!models/*/*/seed*/*.jsonl
!models/*/*/seed*/log.log
!models/*/*/seed1/model-final.npz
*.partial
"""


def row_name(net, method):
    return "%s/%s" % (net, method)


def best_cheap(accuracy, seconds):
    """The cheap method with the highest mean AutoAttack accuracy over its seeds on the
    baseline net (ties: the lower mean training time). ``accuracy``/``seconds``: method ->
    list over seeds. None until every cheap method has all its seeds."""
    cheap = [m.name for m in METHODS if m.cheap]
    if any(not accuracy.get(m) for m in cheap):
        return None

    def mean(xs):
        return sum(xs) / float(len(xs))
    return max(cheap, key=lambda m: (mean(accuracy[m]), -mean(seconds.get(m) or [0.0])))


class MethodsPlanner:
    def __init__(self, plan, layout, data, python=sys.executable):
        self.plan, self.layout, self.data, self.py = plan, layout, data, [python]
        self.common = ["--data", data, "--dataset", "fashion-mnist"]

    def train_argv(self, logdir, seed, net, method):
        p = self.plan
        return self.py + [os.path.join(REPO, "train.py")] + self.common + [
            "--preset", p.preset, "--validation", str(p.validation), "--epochs", str(p.epochs),
            "--lr-decay-epochs", p.decay_epochs, "--seed", str(seed), "--logdir", logdir] + \
            list(NETS[net]) + list(method.flags)

    def eval_argv(self, model, out, extra):
        return self.py + [os.path.join(REPO, "eval.py"), "--load", model] + self.common + [
            "--seed", "0", "--quiet", "--limit", str(self.plan.images)] + list(extra) + [
            "--json-out", out, "--per-image", self.layout.per_image_file(out)]

    def row_jobs(self, net, method):
        from experiments.runner import Job
        p, lay = self.plan, self.layout
        row, jobs = row_name(net, method.name), []
        for seed in p.seeds:
            model = lay.model_file(row, seed)
            what = "%s/seed%d" % (row, seed)
            jobs.append(Job("train/" + what, self.train_argv(os.path.dirname(model), seed, net, method), model,
                            lay.log("train/" + what), diverged_ok=True, trains=True))
            for kind, extra in (("pgd100", ["--untargeted", "--attack-iter", "0,%d" % p.long_iter]),
                                ("autoattack", ["--attack", "autoattack", "--untargeted", "--attack-iter",
                                                "0,%d" % p.aa_iter, "--square-queries", str(p.aa_queries)])):
                out = lay.eval_file(row, seed, kind)
                jobs.append(Job("%s/%s" % (kind, what), self.eval_argv(model, out, extra), out,
                                lay.log("%s/%s" % (kind, what)), needs=(model,)))
        return jobs

    def choice_file(self):
        return os.path.join(self.layout.out, "choice.json")

    def choose(self):
        """The non-local net's cheap method: recorded once, then read back."""
        from experiments.runner import load_json, write_json
        recorded = load_json(self.choice_file())
        if recorded:
            return recorded["method"]
        accuracy, seconds = {}, {}
        timings = load_json(self.layout.timings(), {})
        for m in METHODS:
            for seed in self.plan.seeds:
                row = row_name("baseline", m.name)
                res = load_json(self.layout.eval_file(row, seed, "autoattack"))
                if res is None and os.path.exists(os.path.join(self.layout.model_dir(row, seed), "diverged.json")):
                    res = {"white_box": {"autoattack": {"robust_accuracy": 0.0}}}    # diverged: no robust model
                if res is None:
                    break
                accuracy.setdefault(m.name, []).append(res["white_box"]["autoattack"]["robust_accuracy"])
                seconds.setdefault(m.name, []).append(
                    timings.get("train/%s/seed%d" % (row_name("baseline", m.name), seed), 0.0))
            else:
                continue
            accuracy.pop(m.name, None)       # a method with a missing seed is not complete
        method = best_cheap(accuracy, seconds)
        if method is not None:
            write_json(self.choice_file(), {"method": method, "rule": best_cheap.__doc__.split(".")[0],
                                            "autoattack_accuracy": accuracy, "training_seconds": seconds})
        return method

    def jobs(self):
        jobs = []
        for m in METHODS:
            jobs += self.row_jobs("baseline", m)
        by_name = {m.name: m for m in METHODS}
        jobs += self.row_jobs("nonlocal-dot", by_name[REFERENCE])
        cheap = self.choose()
        if cheap is not None:
            jobs += self.row_jobs("nonlocal-dot", by_name[cheap])
        return jobs


# ----------------------------------------------------------------------------------------
# the page: docs/TRAINING-METHODS.md, section SECTION, and its figure
SECTION = "The measurements on Fashion-MNIST"
MARGIN = 0.01          # "no more than 1 point below PGD-7", fixed before the run
SPEED_UP = 3.0         # "at 3x less training time or better"
# The paper's cost, for the ImageNet projection: R152-Denoise trained with targeted PGD-30 in
# about 90 hours on 128 V100s (the original release's README), i.e. 2 x 30 + 3 = 63 forward-pass
# units per SGD step (docs/PERFORMANCE.md's count). A method's steps on ImageNet cost its passes
# per step in the same units; free training replays each minibatch m times over 1/m of the epochs,
# so its number of steps is the paper's too.
PAPER_HOURS, PAPER_PASSES = 90.0, 63.0


def imagenet_hours(passes_per_step):
    """Projected hours of R152-Denoise on 128 GPUs with a method of ``passes_per_step``: the
    paper's 90 hours scaled by passes per step (a projection: nothing here trains on ImageNet)."""
    return PAPER_HOURS * passes_per_step / PAPER_PASSES


def collect(plan, layout):
    """row -> {seed: {"clean"/"pgd100"/"autoattack": bool [N] correct, "seconds": training
    seconds, "passes": passes per step, "collapses": the guard's record, "diverged": bool}}."""
    import json

    from experiments.results import _correct
    from experiments.runner import load_json
    timings = load_json(layout.timings(), {})
    rows = {}
    for net in NETS:
        for m in METHODS:
            row = row_name(net, m.name)
            for seed in plan.seeds:
                model_dir = layout.model_dir(row, seed)
                run_json = os.path.join(model_dir, "run.json")
                if not os.path.exists(run_json):
                    continue
                with open(run_json) as f:
                    info = json.load(f)
                got = {"seconds": timings.get("train/%s/seed%d" % (row, seed)), "passes": info.get("passes_per_step"),
                       "collapses": (info.get("method") or {}).get("collapses") or [],
                       "diverged": os.path.exists(os.path.join(model_dir, "diverged.json"))}
                for kind, names in (("pgd100", ("clean", "pgd%d" % plan.long_iter)), ("autoattack", ("autoattack",))):
                    per_image = layout.per_image_file(layout.eval_file(row, seed, kind))
                    for name in names:
                        got["pgd100" if name.startswith("pgd") else name] = _correct(per_image, name)
                rows.setdefault(row, {})[seed] = got
    return rows


def _stack(seeds, key):
    import numpy as np
    arrays = [seeds[s][key] for s in sorted(seeds)]
    return None if any(a is None for a in arrays) else np.stack(arrays).astype(float)


def judge(rows, plan):
    """Each method against PGD-7 (targeted, the paper's) on the same net: its training time
    ratio and the non-inferiority test of its AutoAttack accuracy at MARGIN (one-sided,
    ``stats.no_better`` of PGD-7 over it), Holm-corrected over the comparisons made. A method
    reaches the goal when both hold: SPEED_UP x less time and non-inferior."""
    from evaluation.stats import holm, no_better, paired_difference
    out = []
    for net in NETS:
        ref = rows.get(row_name(net, REFERENCE), {})
        for m in METHODS:
            row = rows.get(row_name(net, m.name), {})
            if m.name == REFERENCE or not row:
                continue
            seeds = sorted(set(ref) & set(row))
            a = _stack({s: row[s] for s in seeds}, "autoattack") if seeds else None
            b = _stack({s: ref[s] for s in seeds}, "autoattack") if seeds else None
            times = [(ref[x]["seconds"], row[x]["seconds"]) for x in seeds]
            if a is None or b is None or len(seeds) < len(plan.seeds) or any(None in t for t in times):
                out.append({"net": net, "method": m.name, "skipped": "results for %d of %d seeds" % (
                    len(seeds) if a is not None and b is not None else 0, len(plan.seeds))})
                continue
            diff = paired_difference(a, b)                       # method minus PGD-7
            worse = paired_difference(b, a)                      # PGD-7 minus method
            time_ratio = sum(t[0] for t in times) / sum(t[1] for t in times)
            out.append({"net": net, "method": m.name, "difference": diff, "time_ratio": time_ratio,
                        "p_not_worse": no_better(worse, MARGIN)})
    judged = [c for c in out if "skipped" not in c]
    if judged:
        adjusted, rejected = holm([c["p_not_worse"] for c in judged])
        for c, p, r in zip(judged, adjusted, rejected):
            c["p_adjusted"], c["not_worse"] = p, r
            c["goal"] = r and c["time_ratio"] >= SPEED_UP
    return out


def report(plan, layout, docs):
    """The section SECTION of docs/TRAINING-METHODS.md and its figure, from finished jobs."""
    import numpy as np

    from core.files import replace_markdown_section
    rows = collect(plan, layout)
    lines = ["Every method with train.py's defaults on the `%s` recipe (%d epochs), %d seeds; accuracy (%%) on "
             "the first %d test images, mean over seeds; training time in minutes per seed on the machine "
             "that ran it; `python -m experiments.methods --report-only` writes this section." % (
                 plan.preset, plan.epochs, len(plan.seeds), plan.images), "",
             "| net | method | seeds | clean | untargeted PGD-%d | AutoAttack | training min | passes per step | "
             "guard fired | R152-Denoise h on 128 GPUs (projected) |" % plan.long_iter,
             "|---|---|---|---|---|---|---|---|---|---|"]
    points = []
    for net in NETS:
        for m in METHODS:
            seeds = rows.get(row_name(net, m.name))
            if not seeds:
                continue

            def mean_acc(key):
                x = _stack(seeds, key)
                return "-" if x is None else "%.1f" % (100 * x.mean())
            minutes = [v["seconds"] / 60 for v in seeds.values() if v["seconds"]]
            fired = sum(1 for v in seeds.values() if v["collapses"])
            # a seed that went on with the fallback recorded the fallback's passes: take another's
            own = [v["passes"] for v in seeds.values() if not v["collapses"] and v["passes"]]
            passes = own[0] if own else None
            lines.append("| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s |" % (
                net, m.label, len(seeds), mean_acc("clean"), mean_acc("pgd100"), mean_acc("autoattack"),
                "%.1f" % np.mean(minutes) if minutes else "-", passes,
                "%d of %d seeds" % (fired, len(seeds)) if fired else "no",
                "%.0f" % imagenet_hours(passes) if passes else "-"))
            aa = _stack(seeds, "autoattack")
            if aa is not None and minutes:
                points.append((net, m.label, np.mean(minutes), 100 * aa.mean()))
    lines += ["", "The last column scales the paper's %.0f hours for R152-Denoise (targeted PGD-30: %.0f forward-pass "
              "units per step) by the method's passes per step; a projection, not a measurement." % (
                  PAPER_HOURS, PAPER_PASSES)]
    claims = judge(rows, plan)
    skipped = [c for c in claims if "skipped" in c]
    claims = [c for c in claims if "skipped" not in c]
    if skipped:
        lines += ["", "Not judged yet: %s." % "; ".join("%s, %s (%s)" % (c["net"], c["method"], c["skipped"])
                                                      for c in skipped)]
    if claims:
        lines += ["", "Against PGD-7 targeted on the same net (paired over seeds and images; one-sided test of "
                  "\"AutoAttack accuracy no more than %g point below PGD-7's\", Holm-corrected over the %d "
                  "comparisons; goal: that and %gx less training time):" % (100 * MARGIN, len(claims), SPEED_UP), ""]
        for c in claims:
            d = c["difference"]
            lines.append("- %s, %s: AutoAttack %+.1f points [%+.1f, %+.1f], %.1fx less time; not worse by %g point: "
                         "%s (adjusted p = %.3g)%s" % (
                             c["net"], c["method"], 100 * d.estimate, 100 * d.low, 100 * d.high, c["time_ratio"],
                             100 * MARGIN, "shown" if c["not_worse"] else "not shown with %d seeds" % d.seeds,
                             c["p_adjusted"], "; **reaches the goal**" if c["goal"] else ""))
    figure = os.path.join(docs, "figures", "methods-autoattack-vs-time.png")
    if points:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        os.makedirs(os.path.dirname(figure), exist_ok=True)
        fig, ax = plt.subplots(figsize=(6, 4))
        for net, marker in zip(NETS, "os"):
            mine = [p for p in points if p[0] == net]
            ax.scatter([p[2] for p in mine], [p[3] for p in mine], marker=marker, label=net)
            for p in mine:
                ax.annotate(p[1].split(" (")[0], (p[2], p[3]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("training minutes per seed")
        ax.set_ylabel("AutoAttack accuracy (%%), first %d test images" % plan.images)
        ax.legend()
        fig.tight_layout()
        fig.savefig(figure, dpi=110)
        plt.close(fig)
        lines += ["", "![AutoAttack accuracy against training time](figures/%s)" % os.path.basename(figure)]
    replace_markdown_section(os.path.join(docs, "TRAINING-METHODS.md"), SECTION, "\n".join(lines))
    return rows, claims


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--plan", choices=sorted(PLANS), default="full")
    p.add_argument("--out", default=os.path.join(REPO, "results", "methods"))
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--list", action="store_true", help="list the jobs and exit")
    p.add_argument("--commit", action="store_true", help="commit --out and the page after every job")
    p.add_argument("--docs", default=os.path.join(REPO, "docs"), help="where TRAINING-METHODS.md is")
    p.add_argument("--report-only", action="store_true", help="only write the page's section from finished jobs")
    args = p.parse_args(argv)
    from experiments.runner import Layout, run_all
    layout = Layout(args.out)
    planner = MethodsPlanner(PLANS[args.plan], layout, args.data)
    if args.report_only:
        report(PLANS[args.plan], layout, args.docs)
        return 0
    if args.list:
        for j in planner.jobs():
            print("%-8s %s" % ("done" if os.path.exists(j.done_file) else "to run", j.name))
        return 0
    os.makedirs(args.out, exist_ok=True)
    from core.files import atomic_write
    atomic_write(os.path.join(args.out, ".gitignore"), lambda f: f.write(GITIGNORE), mode="w")

    def after(job, result):
        report(PLANS[args.plan], layout, args.docs)
        if args.commit:
            from experiments.__main__ import commit_paths
            commit_paths([args.out, os.path.join(args.docs, "TRAINING-METHODS.md"),
                          os.path.join(args.docs, "figures")], "methods: %s %s" % (job.name, result))
    status = run_all(lambda: (planner.jobs(), {"epochs": PLANS[args.plan].epochs}), layout, None, (),
                     after_job=after)
    if status["failed"]:
        print("methods: %d job(s) failed: %s" % (len(status["failed"]), ", ".join(status["failed"])), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
