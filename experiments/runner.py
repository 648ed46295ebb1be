"""Runs the suite of experiments/suite.py as a list of jobs, each a subprocess of
train.py or eval.py (or experiments.features) with one output file that marks it done.
Started again, the runner skips finished jobs and retries failed ones; a training run
interrupted midway resumes from its last checkpoint (train.py does that)."""
import json
import os
import subprocess
import sys
import time

from .suite import SOURCE, SOURCE_SEED

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Job:
    """One subprocess. ``done_file`` exists once it finished; ``diverged_ok`` lets train.py's
    exit code 3 (NaN/inf loss, Table 1's "unable to train") count as a finished result.
    ``any_model`` marks a job over several models that runs without those that diverged.
    ``derived_from``: models that some input was computed from (the transfer attacks' source
    model, for a black-box evaluation): if one diverged, that input never comes."""

    def __init__(self, name, argv, done_file, log_file, diverged_ok=False, needs=(), any_model=False,
                 derived_from=()):
        self.name, self.argv, self.done_file, self.log_file = name, argv, done_file, log_file
        self.diverged_ok, self.needs, self.any_model = diverged_ok, tuple(needs), any_model
        self.derived_from = tuple(derived_from)

    @property
    def done(self):
        """Its output exists and was computed from the inputs there now: a model trained again
        (or attacks crafted again) makes the results computed from the old one stale, and they
        rerun. The runner records the inputs' content hashes beside each output (``inputs_file``),
        so a copy of the directory that resets file times stays finished; outputs without that
        record (written by an older runner) count as finished if newer than every input."""
        if not os.path.exists(self.done_file):
            return False
        recorded = load_json(inputs_file(self.done_file))
        if recorded is None:
            made = os.path.getmtime(self.done_file)
            return all(os.path.getmtime(p) <= made for p in self.needs if os.path.exists(p))
        return all(recorded.get(name) == digest for name, digest in self._input_fingerprints().items())

    def record_inputs(self):
        """Writes the content hashes of the inputs this output was computed from."""
        write_json(inputs_file(self.done_file), self._input_fingerprints())

    def _input_fingerprints(self):
        """{input path relative to the output's directory (so a copied tree matches): hash}."""
        base = os.path.dirname(self.done_file)
        return {os.path.relpath(p, base): _fingerprint(p) for p in self.needs if os.path.exists(p)}

    @property
    def diverged(self):
        """This training stopped on a NaN/inf loss, or this job needs a model that did: a
        settled outcome (Table 1 reports such models as NaN), not a job left to run."""
        return _diverged(self.done_file) or (not self.any_model and any(map(_diverged, self.needs))) or \
            any(map(_diverged, self.derived_from))

    def missing(self):
        """Inputs not there yet (a diverged model never will be: ``any_model`` jobs skip it)."""
        return [p for p in self.needs if not os.path.exists(p) and not (self.any_model and _diverged(p))]

    @property
    def settled(self):
        return self.done or self.diverged


def inputs_file(done_file):
    return done_file + ".inputs.json"


_FINGERPRINTS = {}


def _fingerprint(path):
    """SHA-1 of a file's content (cached while its size and time are unchanged)."""
    import hashlib
    stat = os.stat(path)
    key = (path, stat.st_size, stat.st_mtime_ns)
    if key not in _FINGERPRINTS:
        digest = hashlib.sha1()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        _FINGERPRINTS[key] = digest.hexdigest()
    return _FINGERPRINTS[key]


def diverged_file(model_dir):
    return os.path.join(model_dir, "diverged.json")


def _diverged(model_file):
    return os.path.exists(diverged_file(os.path.dirname(model_file)))


class Layout:
    """Where everything of a suite run lives under ``out``."""

    def __init__(self, out):
        self.out = out

    def model_dir(self, variant, seed):
        return os.path.join(self.out, "models", variant.name, "seed%d" % seed)

    def model_file(self, variant, seed):
        return os.path.join(self.model_dir(variant, seed), "model-final.npz")

    def white_box_file(self, variant, seed, iters, limit=None):
        """Named after the iterations and the image count, so results of another budget are
        never mistaken for this one's."""
        return os.path.join(self.out, "eval", variant.name, "seed%d" % seed, "white-box-%s-n%s.json" % (
            "-".join(str(i) for i in iters), limit or "all"))

    @staticmethod
    def per_image_file(white_box_file):
        """Every image's results beside a white-box result (eval.py --per-image), for paired
        comparisons on the same images."""
        return white_box_file[:-len(".json")] + ".per-image.npz"

    def black_box_file(self, variant, seed):
        return os.path.join(self.out, "eval", variant.name, "seed%d" % seed, "black-box.json")

    def crafted_dir(self, attack):
        return os.path.join(self.out, "transfer", attack.name)

    def crafted_file(self, attack):
        return os.path.join(self.out, "transfer", attack.name + ".json")

    def features_file(self):
        return os.path.join(self.out, "features", "features.json")

    def log(self, name):
        return os.path.join(self.out, "logs", name.replace("/", "_") + ".log")

    def timings(self):
        return os.path.join(self.out, "timings.json")

    def machines(self):
        """{job: the machine that last ran it (``machine_label``)}."""
        return os.path.join(self.out, "machines.json")

    def budget_file(self):
        return os.path.join(self.out, "budget.json")

    def seeds_on_disk(self, variants):
        """Seeds with a model directory for any of ``variants``."""
        found = set()
        for v in variants:
            d = os.path.join(self.out, "models", v.name)
            found |= {int(n[4:]) for n in (os.listdir(d) if os.path.isdir(d) else ())
                      if n.startswith("seed") and n[4:].isdigit()}
        return found


def check_budget(layout, budget, record=True):
    """Every job under ``--out`` must share one budget (the seeds aside): results of a run with
    other steps, epsilon or image counts would otherwise be mixed into the tables. -> None,
    or a one-line error. The first run records its budget."""
    import dataclasses
    unrecorded = {f.name for f in dataclasses.fields(budget) if not f.metadata.get("recorded", True)}
    wanted = {k: v for k, v in json.loads(json.dumps(dataclasses.asdict(budget))).items()
              if k != "seeds" and k not in unrecorded}
    recorded = load_json(layout.budget_file())
    if recorded is None:
        if record:
            os.makedirs(layout.out, exist_ok=True)
            write_json(layout.budget_file(), wanted)
        return None
    changed = sorted(k for k in set(wanted) | set(recorded) if wanted.get(k) != recorded.get(k))
    if changed:
        return ("%s holds results of another budget (%s: %s there, %s now); pass a new --out, or the "
                "options of that run" % (layout.out, ", ".join(changed),
                                         ", ".join(str(recorded.get(k)) for k in changed),
                                         ", ".join(str(wanted.get(k)) for k in changed)))
    return None


def white_box_groups(budget):
    """White-box evaluations grouped by image count: one eval.py run per group, so clean and
    PGD-10 on the whole test set share one pass over the data."""
    groups = {}
    for iters, limit in budget.white_box:
        groups.setdefault(limit, []).append(iters)
    return [(limit, sorted(iters)) for limit, iters in groups.items()]


def matched_groups(budget):
    """The shorter attacks again, on the subset a longer attack runs on: (limit, iterations)
    per subset. A longer attack on the first 500 images is only comparable with a shorter
    one on the same 500 (the first images are not a random draw of difficulty), so Fig. 6's
    "accuracy falls as iterations grow" and the robustness curves use these pairs."""
    groups = []
    for limit, iters in white_box_groups(budget):
        if limit is None:
            continue
        shorter = sorted({i for i, _ in budget.white_box if i < max(iters)} - set(iters))
        if shorter:
            groups.append((limit, shorter))
    return groups


def machine_label():
    """This machine in one line (core.provenance)."""
    from core.provenance import machine_label as label
    return label()


def machines_summary(layout):
    """'<machine>' if one machine ran every recorded job, else '<machine> (N jobs, H h), ...'
    by hours; None before any job recorded its machine (an older runner's directory)."""
    machines, timings = load_json(layout.machines(), {}), load_json(layout.timings(), {})
    if not machines:
        return None
    hours, jobs = {}, {}
    for name, label in machines.items():
        hours[label] = hours.get(label, 0.0) + timings.get(name, 0.0) / 3600
        jobs[label] = jobs.get(label, 0) + 1
    if len(hours) == 1:
        return next(iter(hours))
    return ", ".join("%s (%d job%s, %.1f h)" % (label, jobs[label], "s"[:jobs[label] != 1], hours[label])
                     for label in sorted(hours, key=hours.get, reverse=True))


def plan_jobs(variants, budget, layout, data, python=sys.executable):
    """Every job of the suite, in the order they run: the black-box source and its transfer
    attacks first (cheap, and every model's black-box evaluation needs them), then per seed
    and variant: training, white-box evaluations, black-box evaluation. The feature figures
    use some of the first seed's models only, so they run right after the last of those: a
    suite stopped before the end already has its figures."""
    py = [python]
    common = ["--data", data, "--dataset", "fashion-mnist"]

    def train_job(variant, seed):
        d = layout.model_dir(variant, seed)
        # the budget's preset, its one pass cut into ``checkpoints`` epochs (the schedule is per step)
        argv = py + [os.path.join(REPO, "train.py")] + common + [
            "--preset", budget.preset,
            "--epochs", str(budget.checkpoints), "--steps-per-epoch", str(budget.steps // budget.checkpoints),
            "--lr-decay-epochs", "%g" % (budget.lr_decay_at * budget.checkpoints),
            "--seed", str(seed), "--logdir", d] + (["--attack-iter", "0"] if variant.clean_training else []) + \
            list(variant.arch_flags)
        return Job("train/%s/seed%d" % (variant.name, seed), argv, layout.model_file(variant, seed),
                   layout.log("train/%s/seed%d" % (variant.name, seed)), diverged_ok=True)

    def eval_argv(model, extra):
        return py + [os.path.join(REPO, "eval.py"), "--load", model] + common + [
            "--seed", "0", "--quiet", "--attack-epsilon", "%g" % budget.epsilon] + list(extra)

    jobs = []
    source = train_job(SOURCE, SOURCE_SEED)
    jobs.append(source)
    attacks = budget.transfer_attacks()
    for attack in attacks:
        argv = eval_argv(source.done_file, ["--limit", str(budget.black_box_images),
                                            "--save-adversarial", layout.crafted_dir(attack)]) + list(attack.flags)
        argv += ["--json-out", layout.crafted_file(attack)]
        jobs.append(Job("craft/%s" % attack.name, argv, layout.crafted_file(attack),
                        layout.log("craft/%s" % attack.name), needs=(source.done_file,)))
    # eval.py --save-adversarial writes <dir>/<attack><iterations>/*.png, one attacker per craft.
    attack_dirs = [os.path.join(layout.crafted_dir(a), _flag(a.flags, "--attack") + _flag(a.flags, "--attack-iter"))
                   for a in attacks]
    labels = os.path.join(layout.crafted_dir(attacks[0]), "labels.txt")

    feature_models = [v for v in variants if {"fig7", "table3"} & set(v.groups)]

    def features_job(seed):
        return Job("features", py + ["-m", "experiments.features", "--out", layout.out, "--data", data,
                                     "--seed", str(seed), "--images", str(budget.feature_images),
                                     "--epsilon", "%g" % budget.epsilon],
                   layout.features_file(), layout.log("features"),
                   needs=tuple(layout.model_file(v, seed) for v in feature_models), any_model=True)

    for seed in budget.seeds:
        for variant in variants:
            train = train_job(variant, seed)
            jobs.append(train)
            model = train.done_file
            evaluated = []
            for limit, iters in white_box_groups(budget):
                if variant.clean_training:
                    iters = [i for i in iters if i <= 10]      # Table 3 is about clean accuracy
                if iters:
                    evaluated.append((limit, iters))
            subsets = {limit for limit, _ in evaluated}
            evaluated += [(limit, iters) for limit, iters in matched_groups(budget) if limit in subsets]
            for limit, iters in evaluated:
                out = layout.white_box_file(variant, seed, iters, limit)
                extra = ["--attack-iter", ",".join(map(str, iters)), "--json-out", out,
                         "--per-image", layout.per_image_file(out)]
                if limit:
                    extra += ["--limit", str(limit)]
                # named like its file: the same attacks on another subset are another job
                what = "%s/seed%d/%s-n%s" % (variant.name, seed, "-".join(map(str, iters)), limit or "all")
                jobs.append(Job("white-box/" + what, eval_argv(model, extra), out, layout.log("wb/" + what),
                                needs=(model,)))
            out = layout.black_box_file(variant, seed)
            jobs.append(Job("black-box/%s/seed%d" % (variant.name, seed),
                            eval_argv(model, ["--all-or-nothing"] + attack_dirs + [
                                "--labels", labels, "--json-out", out, "--per-image", layout.per_image_file(out)]),
                            out, layout.log("bb/%s/seed%d" % (variant.name, seed)),
                            needs=(model,) + tuple(layout.crafted_file(a) for a in attacks),
                            derived_from=(source.done_file,)))
            if seed == budget.seeds[0] and feature_models and variant == feature_models[-1]:
                jobs.append(features_job(seed))
    return jobs


def _flag(argv, name):
    return argv[list(argv).index(name) + 1]


def load_json(path, default=None):
    """The JSON in ``path``, or ``default`` if it is missing or unreadable (a job's output)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def write_json(path, obj):
    """Writes ``obj`` as JSON atomically (a crash leaves the old file or none, never half)."""
    from core.files import atomic_write
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=1, sort_keys=True)), mode="w")


def run_job(job, layout, env=None):
    """-> 'done' | 'diverged' | 'failed'; the subprocess's output goes to ``job.log_file``."""
    os.makedirs(os.path.dirname(job.log_file), exist_ok=True)
    os.makedirs(os.path.dirname(job.done_file), exist_ok=True)
    if "--save-adversarial" in job.argv:
        # eval.py writes a set whole into a new directory: a rerun replaces the stale one
        import shutil
        stale = _flag(job.argv, "--save-adversarial")
        if os.path.isdir(stale):
            shutil.rmtree(stale)
    start = time.time()
    with open(job.log_file, "a") as log:
        log.write("\n$ %s\n" % " ".join(job.argv))
        log.flush()
        code = subprocess.call(job.argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    elapsed = time.time() - start
    timings = load_json(layout.timings(), {})
    timings[job.name] = timings.get(job.name, 0.0) + elapsed
    write_json(layout.timings(), timings)
    # A CPU run of the suite can span machines (it resumes wherever its directory is): the page
    # says which machine ran how much, since the timings mean nothing without it.
    machines = load_json(layout.machines(), {})
    machines[job.name] = machine_label()
    write_json(layout.machines(), machines)
    if code == 0 and os.path.exists(job.done_file) and os.path.getmtime(job.done_file) >= start - 1:
        if job.needs:
            job.record_inputs()
        return "done"
    if code == 3 and job.diverged_ok:
        tail = open(job.log_file).read().strip().splitlines()[-1:]
        write_json(diverged_file(os.path.dirname(job.done_file)),
                   {"diverged": True, "message": tail[0] if tail else ""})
        return "diverged"
    return "failed"


def backfill_per_image(jobs, layout, progress=print, env=None):
    """Per-image results for finished white-box evaluations that have none (run by an older
    runner, before eval.py --per-image): each evaluation runs again, as planned, into a
    temporary JSON beside a temporary per-image file; the per-image file is kept only if the
    rerun's results equal the recorded ones (the evaluation is deterministic; anything else
    would pair the images of another evaluation). The recorded result is never touched.
    Time goes to timings.json as "backfill/<job>". -> {'kept': [...], 'differed': [...],
    'failed': [...]}."""
    todo = [j for j in jobs if j.name.startswith("white-box/") and "--per-image" in j.argv and j.done
            and not os.path.exists(_flag(j.argv, "--per-image"))]
    status = {"kept": [], "differed": [], "failed": []}
    progress("[repro] backfill: %d finished white-box evaluation(s) without per-image results" % len(todo))
    for k, job in enumerate(todo, 1):
        target = _flag(job.argv, "--per-image")
        argv = list(job.argv)
        argv[argv.index("--json-out") + 1] = job.done_file + ".backfill.json"
        argv[argv.index("--per-image") + 1] = target + ".backfill.npz"
        rerun = Job("backfill/" + job.name, argv, job.done_file + ".backfill.json", job.log_file)
        progress("[repro] backfill (%d/%d) %s" % (k, len(todo), job.name))
        try:
            if run_job(rerun, layout, env=env) != "done":
                status["failed"].append(job.name)
                continue
            recorded, again = (load_json(job.done_file) or {}).get("white_box"), \
                (load_json(rerun.done_file) or {}).get("white_box")
            same = recorded and again and set(recorded) == set(again) and all(
                recorded[n]["num_images"] == again[n]["num_images"] and
                all(recorded[n][m] == again[n][m] for m in ("top1_error", "top5_error", "attack_success"))
                for n in recorded)
            if same:
                os.replace(target + ".backfill.npz", target)
                status["kept"].append(job.name)
            else:
                status["differed"].append(job.name)
                progress("[repro] backfill: %s gave other results than recorded; per-image file not kept" % job.name)
        finally:
            for leftover in (rerun.done_file, target + ".backfill.npz"):
                if os.path.exists(leftover):
                    os.remove(leftover)
    return status


def run_all(jobs, layout, progress=print, env=None):
    """Runs every unfinished job whose inputs exist. -> {'done': [...], 'failed': [...], ...}."""
    status = {"done": [], "skipped": [], "diverged": [], "failed": [], "blocked": []}
    todo = [j for j in jobs if not j.settled]
    progress("[repro] %d of %d jobs already finished; %d to run" % (len(jobs) - len(todo), len(jobs), len(todo)))
    start = time.time()
    # Settled is decided again at each job, in the plan's order: a model trained (or diverged)
    # earlier in this run makes the results computed from its old version stale (or moot).
    k = 0
    for job in jobs:
        if job.settled:
            continue
        k += 1
        missing = job.missing()
        if missing:
            status["blocked"].append(job.name)
            progress("[repro] (%d/%d) %s: skipped, needs %s" % (k, len(todo), job.name, missing[0]))
            continue
        progress("[repro] (%d/%d) %s ... (%.0f min so far; log %s)" % (
            k, len(todo), job.name, (time.time() - start) / 60, os.path.relpath(job.log_file, REPO)))
        result = run_job(job, layout, env=env)
        status[result].append(job.name)
        if result != "done":
            progress("[repro] %s: %s (see %s)" % (job.name, result, job.log_file))
    return status
