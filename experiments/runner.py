"""Runs the suite of experiments/suite.py as a list of jobs, each a subprocess of train.py or
eval.py (or experiments.features) with one output file that marks it done. Started again, the
runner skips finished jobs and retries failed ones; a training run interrupted midway resumes
from its last checkpoint (train.py does that).

The plan comes in two phases: the schedule runs first (experiments/schedule.py); once every
candidate has its validation result, the schedule is chosen and recorded, and the sources,
transfer sets and rows are planned with it. Rows run in the suite's order, each with all its
seeds; before a row starts, the budget rule keeps or cuts it (``decide_row``), once, and
rows.json records the decision."""
import json
import os
import shlex
import subprocess
import sys
import time

from core.files import repo_relative

from .schedule import decide, lr_decay_epochs
from .suite import AUDIT_TRANSFER, SCHEDULE_SEED, SOURCES, TRANSFER

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Job:
    """One subprocess. ``done_file`` exists once it finished; ``diverged_ok`` lets train.py's
    exit code 3 (NaN/inf loss, Table 1's "unable to train") count as a finished result.
    ``any_model`` marks a job over several models that runs without those that diverged.
    ``derived_from``: models that some input was computed from (the transfer sets' sources,
    for a black-box evaluation): if one diverged, that input never comes. ``row``: the suite
    row the job belongs to (None: schedule, sources, transfer sets, features).

    A training job whose model file is gone (only the first seed's models are committed with
    the results) still counts as done while every job that reads the model is done: its
    ``trained.json`` marker says it finished. If one is not, the model is trained again, and the
    results computed from the old one rerun with it (their inputs' hashes differ)."""

    def __init__(self, name, argv, done_file, log_file, diverged_ok=False, needs=(), any_model=False,
                 derived_from=(), row=None, trains=False):
        self.name, self.argv, self.done_file, self.log_file = name, argv, done_file, log_file
        self.diverged_ok, self.needs, self.any_model = diverged_ok, tuple(needs), any_model
        self.derived_from, self.row, self.trains = tuple(derived_from), row, trains
        self.readers = []          # jobs that need this job's output (set by plan_jobs)

    @property
    def done(self):
        """Its output exists and was computed from the inputs there now: a model trained again
        (or a transfer set crafted again) makes the results computed from the old one stale,
        and they rerun. The runner records the inputs' content hashes beside each output
        (``inputs_file``), so a copy of the directory that resets file times stays finished."""
        if not os.path.exists(self.done_file):
            return self.trains and os.path.exists(trained_file(self.done_file)) and \
                all(r.done or r.diverged for r in self.readers)
        recorded = load_json(inputs_file(self.done_file))
        if recorded is None:
            return not self.needs
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


def trained_file(model_file):
    """The marker a finished training writes beside its model (kept when the model is not)."""
    return os.path.join(os.path.dirname(model_file), "trained.json")


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


# What the results' commits leave out: checkpoints, event files, and the models of every seed
# but the first (the sources' are kept: the transfer sets can be crafted again from them).
GITIGNORE = """# written by experiments/runner.py: what a commit of the suite's results leaves out
models/*/seed*/*
!models/*/seed*/*.json
!models/*/seed*/*.jsonl
!models/*/seed*/log.log
!models/*/seed1/model-final.npz
!models/source-*/seed*/model-final.npz
schedule/*/*
!schedule/*/*.json
!schedule/*/*.jsonl
!schedule/*/log.log
*.partial
"""


class Layout:
    """Where everything of a suite run lives under ``out``."""

    def __init__(self, out):
        self.out = out

    def schedule_dir(self, epochs):
        return os.path.join(self.out, "schedule", "e%d" % epochs)

    def schedule_eval_file(self, epochs):
        return os.path.join(self.out, "schedule", "e%d-validation.json" % epochs)

    def schedule_file(self):
        return os.path.join(self.out, "schedule", "schedule.json")

    def model_dir(self, name, seed):
        return os.path.join(self.out, "models", name, "seed%d" % seed)

    def model_file(self, name, seed):
        return os.path.join(self.model_dir(name, seed), "model-final.npz")

    def eval_file(self, name, seed, kind):
        """kind: targeted | untargeted | long | black-box | autoattack | audit."""
        return os.path.join(self.out, "eval", name, "seed%d" % seed, kind + ".json")

    @staticmethod
    def per_image_file(result_file):
        """Every image's results beside a result (eval.py --per-image), for paired comparisons."""
        return result_file[:-len(".json")] + ".per-image.npz"

    def transfer_file(self, source, attack):
        """A transfer set: one .npz of uint8 images (images/<attack><iterations>) with labels."""
        return os.path.join(self.out, "transfer", source.name, attack.name + ".npz")

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

    def rows_file(self):
        """{'kept': [row, ...], 'cut': {row: why}}: the budget rule's decisions, in order."""
        return os.path.join(self.out, "rows.json")

    def write_gitignore(self):
        os.makedirs(self.out, exist_ok=True)
        path = os.path.join(self.out, ".gitignore")
        if not os.path.exists(path) or open(path).read() != GITIGNORE:
            with open(path, "w") as f:
                f.write(GITIGNORE)


def check_budget(layout, budget, record=True):
    """Every job under ``--out`` must share one budget: results of a run with other
    candidates, seeds, epsilon or image counts would otherwise be mixed into the tables.
    -> None, or a one-line error. The first run records its budget."""
    import dataclasses
    wanted = json.loads(json.dumps(dataclasses.asdict(budget)))
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


def machine_label():
    """This machine in one line (core.provenance)."""
    from core.provenance import machine_label as label
    return label()


def machines_summary(layout):
    """'<machine>' if one machine ran every recorded job, else '<machine> (N jobs, H h), ...'
    by hours; None before any job recorded its machine."""
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


class Planner:
    """Builds the jobs' command lines for one budget, data directory and interpreter."""

    def __init__(self, budget, layout, data, python=sys.executable):
        self.budget, self.layout, self.data, self.py = budget, layout, data, [python]
        self.common = ["--data", data, "--dataset", "fashion-mnist"]

    def train_argv(self, logdir, epochs, seed, clean, arch_flags):
        b = self.budget
        return self.py + [os.path.join(REPO, "train.py")] + self.common + [
            "--preset", b.preset, "--validation", str(b.validation), "--epochs", str(epochs),
            "--lr-decay-epochs", lr_decay_epochs(epochs, b), "--seed", str(seed), "--logdir", logdir] + \
            (["--attack-iter", "0"] if clean else []) + list(arch_flags)

    def eval_argv(self, model, out, extra, per_image=True, epsilon=None):
        argv = self.py + [os.path.join(REPO, "eval.py"), "--load", model] + self.common + [
            "--seed", "0", "--quiet", "--attack-epsilon", "%g" % (epsilon or self.budget.epsilon)] + list(extra)
        argv += ["--json-out", out]
        if per_image:
            argv += ["--per-image", self.layout.per_image_file(out)]
        return argv

    def schedule_jobs(self):
        jobs = []
        for e in self.budget.candidates:
            d = self.layout.schedule_dir(e)
            train = Job("schedule/e%d" % e, self.train_argv(d, e, SCHEDULE_SEED, False, ()),
                        os.path.join(d, "model-final.npz"), self.layout.log("schedule/e%d" % e), trains=True)
            out = self.layout.schedule_eval_file(e)
            # the criterion (untargeted PGD-10) and clean accuracy, on the held-out images
            ev = Job("schedule/e%d/validation" % e,
                     self.eval_argv(train.done_file, out, ["--validation", str(self.budget.validation),
                                                           "--untargeted", "--attack-iter", "0,10"], per_image=False),
                     out, self.layout.log("schedule/e%d/validation" % e), needs=(train.done_file,))
            jobs += [train, ev]
        return jobs

    def transfer_jobs(self, epochs):
        """Each source trained on the schedule, then every transfer attack crafted on it."""
        jobs = []
        for source in SOURCES:
            model = self.layout.model_file(source.name, source.seed)
            jobs.append(Job("source/%s" % source.name,
                            self.train_argv(os.path.dirname(model), epochs, source.seed, source.clean_training,
                                            source.arch_flags),
                            model, self.layout.log("source/%s" % source.name), trains=True))
            for attack in TRANSFER + (AUDIT_TRANSFER,):
                target = self.layout.transfer_file(source, attack)
                result = target[:-len(".npz")] + ".json"
                argv = self.eval_argv(model, result, ["--limit", str(self.budget.bb_images), "--save-adversarial",
                                                      target] + list(attack.flags), per_image=False,
                                      epsilon=attack.epsilon_factor * self.budget.epsilon)
                jobs.append(Job("craft/%s/%s" % (source.name, attack.name), argv, result,
                                self.layout.log("craft/%s/%s" % (source.name, attack.name)), needs=(model,)))
        return jobs

    def row_jobs(self, variant, epochs):
        b, lay = self.budget, self.layout
        jobs = []
        table2 = [lay.transfer_file(s, a) for s in SOURCES for a in TRANSFER]
        audit_sets = [lay.transfer_file(s, AUDIT_TRANSFER) for s in SOURCES]
        sources = tuple(lay.model_file(s.name, s.seed) for s in SOURCES)
        limit = ["--limit", str(b.test_images)] if b.test_images else []
        for seed in b.seeds:
            model = lay.model_file(variant.name, seed)
            what = "%s/seed%d" % (variant.name, seed)
            jobs.append(Job("train/" + what, self.train_argv(os.path.dirname(model), epochs, seed,
                                                             variant.clean_training, variant.arch_flags),
                            model, lay.log("train/" + what), diverged_ok=True, row=variant.name, trains=True))
            evals = [("targeted", ["--attack-iter", "0,10"] + limit),        # Sec. 6: the paper's protocol
                     ("untargeted", ["--untargeted", "--attack-iter", "10"] + limit)]
            if not variant.clean_training:          # Table 3 is about clean accuracy
                evals += [("long", ["--untargeted", "--attack-iter", str(b.long_iter), "--limit",
                                    str(b.long_images)])]
            for kind, extra in evals:
                out = lay.eval_file(variant.name, seed, kind)
                jobs.append(Job("%s/%s" % (kind, what), self.eval_argv(model, out, extra), out,
                                lay.log("%s/%s" % (kind, what)), needs=(model,), row=variant.name))
            if not variant.clean_training:
                out = lay.eval_file(variant.name, seed, "black-box")
                jobs.append(Job("black-box/" + what, self.eval_argv(model, out, ["--all-or-nothing"] + table2),
                                out, lay.log("black-box/" + what), needs=(model,) + tuple(table2),
                                derived_from=sources, row=variant.name))
        if variant.clean_training:
            return jobs
        # AutoAttack and the audit: the first seed's model (they cost what a seed's training does)
        seed = b.seeds[0]
        model, what = lay.model_file(variant.name, seed), "%s/seed%d" % (variant.name, seed)
        out = lay.eval_file(variant.name, seed, "autoattack")
        jobs.append(Job("autoattack/" + what, self.eval_argv(model, out, [
            "--attack", "autoattack", "--untargeted", "--attack-iter", "0,%d" % b.aa_iter, "--square-queries",
            str(b.aa_queries), "--limit", str(b.aa_images)]), out, lay.log("autoattack/" + what), needs=(model,),
            row=variant.name))
        out = lay.eval_file(variant.name, seed, "audit")
        jobs.append(Job("audit/" + what, self.eval_argv(model, out, [
            "--audit", "--limit", str(b.audit_images), "--audit-iter", str(b.audit_iter), "--audit-queries",
            str(b.audit_queries), "--audit-transfer"] + audit_sets, per_image=False), out, lay.log("audit/" + what),
            needs=(model,) + tuple(audit_sets), derived_from=sources, row=variant.name))
        return jobs

    def features_job(self, variants):
        seed = self.budget.seeds[0]
        cut = load_json(self.layout.rows_file(), {}).get("cut", {})
        # experiments.features measures every first-seed model there is: all are its inputs
        models = [self.layout.model_file(v.name, seed) for v in variants if v.name not in cut]
        return Job("features", self.py + ["-m", "experiments.features", "--out", self.layout.out, "--data", self.data,
                                          "--seed", str(seed), "--images", str(self.budget.feature_images),
                                          "--epsilon", "%g" % self.budget.epsilon],
                   self.layout.features_file(), self.layout.log("features"), needs=tuple(models), any_model=True)


def plan_jobs(variants, budget, layout, data, python=sys.executable):
    """(jobs, schedule): every job of the suite in the order they run. Before the schedule is
    chosen only the schedule's jobs can be planned; ``schedule`` (experiments/schedule.decide)
    says which."""
    planner = Planner(budget, layout, data, python)
    jobs = planner.schedule_jobs()
    schedule = decide(layout, budget)
    if schedule["epochs"] is not None:
        jobs += planner.transfer_jobs(schedule["epochs"])
        for v in variants:
            jobs += planner.row_jobs(v, schedule["epochs"])
        jobs.append(planner.features_job(variants))
    by_output = {j.done_file: j for j in jobs}
    for j in jobs:
        for p in j.needs:
            if p in by_output:
                by_output[p].readers.append(j)
    return jobs, schedule


def decide_row(row, jobs, layout, budget, variants):
    """'kept' or 'cut' for ``row``, decided once (rows.json) when the row is about to start.
    The first row is always kept; a later one is cut if the time spent so far plus its
    projection would pass ``budget.hours``. The projection is the first row's measured time
    (all its seeds and evaluations) scaled by the rows' relative cost (suite.Variant.cost)."""
    record = load_json(layout.rows_file(), {"kept": [], "cut": {}})
    if row in record["kept"]:
        return "kept", None
    if row in record["cut"]:
        return "cut", record["cut"][row]
    costs = {v.name: v.cost for v in variants}
    first = variants[0].name
    timings = load_json(layout.timings(), {})
    spent = sum(timings.values())
    if row == first:
        decision, why = "kept", None
    else:
        measured = sum(timings.get(j.name, 0.0) for j in jobs if j.row == first)
        projected = measured * costs[row] / costs[first]
        if spent + projected > budget.hours * 3600:
            decision = "cut"
            why = ("projected %.1f h (%.1f x the %s row's %.1f h) after %.1f h spent: past the %g-hour budget" % (
                projected / 3600, costs[row] / costs[first], first, measured / 3600, spent / 3600, budget.hours))
        else:
            decision, why = "kept", None
    if decision == "kept":
        record["kept"].append(row)
    else:
        record["cut"][row] = why
    write_json(layout.rows_file(), record)
    return decision, why


class DamagedFile(Exception):
    """A result or record under --out that exists but does not parse (truncated, overwritten):
    using it as missing would rerun or drop its job silently, and with exit 0 a table would move
    (one line naming the file and the fix)."""

    def __init__(self, path, error):
        super().__init__("%s does not parse (%s): restore it (git checkout -- %s, if it is committed) or delete it to "
                         "run its job again" % (path, str(error).splitlines()[0][:120], path))


def load_json(path, default=None):
    """The JSON in ``path``, or ``default`` if there is no such file; DamagedFile if it is there
    and does not parse (every file here is written atomically: a damaged one was damaged
    from outside)."""
    if not os.path.exists(path):
        return default
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError as e:
        raise DamagedFile(path, e)
    except OSError as e:
        raise DamagedFile(path, e)


def write_json(path, obj):
    """Writes ``obj`` as JSON atomically (a crash leaves the old file or none, never half)."""
    from core.files import atomic_write
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=1, sort_keys=True)), mode="w")


def _call(argv, log, env):
    """subprocess.call that takes its child along: a signal that ends this process (SIGINT,
    SIGTERM: core.interrupt.Interrupted) is passed on to the child, which is waited for (its
    files are written atomically; train.py exits at a step boundary), so no job is left running
    as an orphan that goes on writing into --out."""
    import signal
    from core.interrupt import Interrupted
    child = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    try:
        return child.wait()
    except (Interrupted, KeyboardInterrupt) as e:
        child.send_signal(getattr(e, "signum", signal.SIGINT))
        try:
            child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        raise


def run_job(job, layout, env=None):
    """-> 'done' | 'diverged' | 'failed'; the subprocess's output goes to ``job.log_file``."""
    os.makedirs(os.path.dirname(job.log_file), exist_ok=True)
    os.makedirs(os.path.dirname(job.done_file), exist_ok=True)
    start = time.time()
    with open(job.log_file, "a") as log:
        log.write("\n$ %s\n" % shown_command(job.argv))
        log.flush()
        code = _call(job.argv, log, env)
    if job.trains and code == 2 and "pass --restart" in _tail(job.log_file):
        # killed before its first checkpoint: train.py refuses the directory (it holds the
        # run's first files); --restart moves them aside (nothing is deleted) and starts anew
        with open(job.log_file, "a") as log:
            log.write("\n$ %s --restart\n" % shown_command(job.argv))
            log.flush()
            code = _call(list(job.argv) + ["--restart"], log, env)
    elapsed = time.time() - start
    compact_log(job.log_file)
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
        if job.trains:
            write_json(trained_file(job.done_file), {"model_sha1": _fingerprint(job.done_file),
                                                     "seconds": round(elapsed, 1)})
        return "done"
    if code == 3 and job.diverged_ok:
        write_json(diverged_file(os.path.dirname(job.done_file)), {"diverged": True, "message": _tail(job.log_file)})
        return "diverged"
    return "failed"


def shown_command(argv):
    """A job's command as the first line of its log shows it: ``python`` for the interpreter,
    each absolute path relative to the repository holding it (the logs are committed with the
    results; a reader reruns the line from the root of their own clone). Paths outside any
    repository (the dataset's) stay as they are."""
    shown = []
    for k, arg in enumerate(argv):
        if k == 0 and os.path.basename(arg).startswith("python"):
            shown.append("python")
        elif os.path.isabs(arg):
            shown.append(repo_relative(arg))
        else:
            shown.append(arg)
    return " ".join(shlex.quote(a) for a in shown)


def compact_log(log_file):
    """Keeps of each line what a terminal shows: the text after its last carriage return. A
    training's progress bar redraws itself hundreds of times per epoch; the logs are committed
    with the results, and the redraws would dominate the repository's size."""
    with open(log_file, "rb") as f:
        data = f.read()
    if b"\r" not in data:
        return
    lines = [line.rstrip(b"\r").rsplit(b"\r", 1)[-1] for line in data.split(b"\n")]
    with open(log_file, "wb") as f:
        f.write(b"\n".join(lines))


def _tail(log_file):
    """The last non-empty line of a job's log."""
    with open(log_file) as f:
        lines = f.read().strip().splitlines()
    return lines[-1] if lines else ""


def mark_trained(jobs):
    """A training killed after its export but before the runner wrote ``trained.json`` has a
    finished model and no marker: write it, so the model counts once its file is not kept."""
    for job in jobs:
        if job.trains and os.path.exists(job.done_file) and not os.path.exists(trained_file(job.done_file)):
            write_json(trained_file(job.done_file), {"model_sha1": _fingerprint(job.done_file), "seconds": None})


TRIES = 2   # a job that fails (a transient fault: memory, a killed process) is tried twice


def run_all(plan, layout, budget, variants, progress=print, env=None, after_job=None):
    """Runs every unfinished job whose inputs exist. ``plan``: a function returning
    ``plan_jobs``' (jobs, schedule); it is called again after each pass, so that the jobs the
    chosen schedule (or a row cut by ``decide_row``) makes possible run in the same invocation.
    A failed job is tried again once in the same invocation (then by the next). Rows run as
    ``decide_row`` says. ``after_job(job, result)`` is called after each job (the suite commits
    its results there). -> {'done', 'diverged', 'failed', 'blocked': [job names], 'cut': [rows]}."""
    status = {"done": [], "diverged": [], "failed": [], "blocked": [], "cut": []}
    start = time.time()
    attempts = {}
    first_pass = True
    while True:
        jobs, schedule = plan()
        mark_trained(jobs)
        pending = [j for j in jobs if attempts.get(j.name, 0) < TRIES and not j.settled]
        if first_pass:
            progress("[repro] %d of %d planned jobs already finished; %d to run%s" % (
                len(jobs) - len(pending), len(jobs), len(pending),
                "" if schedule["epochs"] is not None else " (more once the schedule is chosen)"))
            first_pass = False
        ran_any = False
        for k, job in enumerate(pending, 1):
            if job.settled:
                continue
            if job.row is not None:
                decision, why = decide_row(job.row, jobs, layout, budget, variants)
                if decision == "cut":
                    attempts[job.name] = TRIES
                    if job.row not in status["cut"]:
                        status["cut"].append(job.row)
                        progress("[repro] row %s cut: %s" % (job.row, why))
                    continue
            missing = job.missing()
            if missing:
                if job.name not in status["blocked"]:
                    status["blocked"].append(job.name)
                progress("[repro] %s: not yet, needs %s" % (job.name, os.path.relpath(missing[0], layout.out)))
                continue
            attempts[job.name] = attempts.get(job.name, 0) + 1
            if job.name in status["blocked"]:
                status["blocked"].remove(job.name)
            ran_any = True
            progress("[repro] (%d/%d) %s ... (%.0f min so far; log %s)" % (
                k, len(pending), job.name, (time.time() - start) / 60, os.path.relpath(job.log_file, layout.out)))
            result = run_job(job, layout, env=env)
            if job.name in status["failed"]:
                status["failed"].remove(job.name)
            status[result].append(job.name)
            if result != "done":
                progress("[repro] %s: %s (see %s)" % (job.name, result, job.log_file))
            if after_job:
                after_job(job, result)
        if not ran_any:
            return status
        previous = schedule["epochs"]
        _, schedule = plan()
        if previous is None and schedule["epochs"] is not None:
            progress("[repro] schedule chosen: %d epoch(s) (validation accuracy under untargeted PGD-10: %s)" % (
                schedule["epochs"], ", ".join("%d: %.1f%%" % (e, 100 * a)
                                              for e, a in sorted(schedule["curve"].items()))))
