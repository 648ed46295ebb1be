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


METHODS = (
    Method("pgd7-targeted", "PGD-7, targeted (the paper's recipe)", ("--method", "pgd", "--attack-iter", "7"), False),
    Method("pgd7", "PGD-7, untargeted", ("--method", "pgd", "--attack-iter", "7", "--untargeted"), False),
    Method("fgsm-rs", "FGSM from a random start (Wong et al. 2020)", ("--method", "fgsm-rs"), True),
    Method("n-fgsm", "N-FGSM (de Jorge et al. 2022)", ("--method", "n-fgsm"), True),
    Method("free", "free training (Shafahi et al. 2019)", ("--method", "free"), True),
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
                res = load_json(self.layout.eval_file(row_name("baseline", m.name), seed, "autoattack"))
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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--plan", choices=sorted(PLANS), default="full")
    p.add_argument("--out", default=os.path.join(REPO, "results", "methods"))
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--list", action="store_true", help="list the jobs and exit")
    p.add_argument("--commit", action="store_true", help="commit --out after every job")
    args = p.parse_args(argv)
    from experiments.runner import Layout, run_all
    layout = Layout(args.out)
    planner = MethodsPlanner(PLANS[args.plan], layout, args.data)
    if args.list:
        for j in planner.jobs():
            print("%-8s %s" % ("done" if os.path.exists(j.done_file) else "to run", j.name))
        return 0
    os.makedirs(args.out, exist_ok=True)

    def after(job, result):
        if args.commit:
            from experiments.__main__ import commit_paths
            commit_paths([args.out], "methods: %s %s" % (job.name, result))
    status = run_all(lambda: (planner.jobs(), {"epochs": PLANS[args.plan].epochs}), layout, None, (),
                     after_job=after)
    if status["failed"]:
        print("methods: %d job(s) failed: %s" % (len(status["failed"]), ", ".join(status["failed"])), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
