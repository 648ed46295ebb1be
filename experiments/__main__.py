"""Runs the reproduction suite, resumably, and writes docs/RESULTS.md with its figures.

    python -m experiments                          # the full suite (about 12 hours on 2 cores)
    python -m experiments --commit                 # ... committing its results after every job
    python -m experiments --budget tiny --out /tmp/r --docs /tmp/r/docs   # a smoke run
    python -m experiments --report-only            # regenerate the page from finished jobs
    python -m experiments --list                   # the jobs and which are finished

Started again, it skips finished jobs (an interrupted training run resumes from its last
checkpoint). Exit status 1 if a job failed (its log is named), 2 for bad options, else 0.
"""
import argparse
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def parse(argv):
    from experiments.suite import BUDGETS
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--budget", choices=sorted(BUDGETS), default="full")
    # In the repository, committed: a CPU run of the suite spans many sessions, and the finished
    # jobs (first-seed models, evaluations, logs) are what lets anyone regenerate the page or continue it.
    p.add_argument("--out", default=DEFAULT_OUT,
                   help="models, evaluations, logs (the default is committed with the page it made)")
    p.add_argument("--docs", default=None,
                   help="where RESULTS.md and figures/ go (default: the repository's docs/ for the default --out, "
                        "else <out>/docs, so that another --out never replaces the committed page)")
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--variants", default=None, help="comma-separated subset of the suite's rows")
    p.add_argument("--report-only", action="store_true", help="only regenerate RESULTS.md from finished jobs")
    p.add_argument("--list", action="store_true", help="list the jobs and exit")
    p.add_argument("--commit", action="store_true",
                   help="after every job, write the page and commit --out and the page to the git repository "
                        "holding them (only those paths), so that a run spanning sessions keeps what it did")
    return p.parse_args(argv)


DEFAULT_OUT = os.path.join(REPO, "results", "repro")


def check_paths(args):
    """--out and --docs before any work: directories (or to be made), writable; a report or a
    listing needs an --out that holds a run. -> None or a one-line error."""
    for flag, path in (("--out", args.out), ("--docs", args.docs)):
        if os.path.exists(path) and not os.path.isdir(path):
            return "%s %s is a file: pass a directory" % (flag, path)
        parent = path
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent):
            return "%s %s goes through %s, which is a file: pass a directory" % (flag, path, parent)
        if not args.list and (not args.report_only or flag == "--docs"):
            from core.files import PathError, probe_writable
            try:
                probe_writable(parent, flag, path)
            except PathError as e:
                return str(e)
    if (args.report_only or args.list) and not os.path.isdir(args.out):
        return "--out %s does not exist: there is no run to %s there (pass the --out of a run, or run the suite " \
               "first)" % (args.out, "report" if args.report_only else "list")
    return None


def git_root(path):
    try:
        return subprocess.check_output(["git", "-C", path, "rev-parse", "--show-toplevel"], text=True,
                                       stderr=subprocess.DEVNULL).strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def commit_paths(paths, message):
    """git add + commit of ``paths`` only (other staged work is left alone); -> True if a commit
    was made, False if nothing changed, None if git failed (another git process holding the
    index): reported and skipped, the next job's commit takes the files along."""
    root = git_root(os.path.dirname(paths[0]))
    if root is None:
        return False
    rel = [os.path.relpath(p, root) for p in paths if os.path.exists(p)]
    add = subprocess.run(["git", "-C", root, "add", "-A", "--"] + rel, capture_output=True, text=True)
    if add.returncode:
        print("[repro] commit skipped: %s" % add.stderr.strip().splitlines()[-1:], flush=True)
        return None
    staged = subprocess.run(["git", "-C", root, "diff", "--cached", "--quiet", "--"] + rel)
    if staged.returncode == 0:
        return False
    done = subprocess.run(["git", "-C", root, "commit", "-q", "-m", message, "--"] + rel, capture_output=True,
                          text=True)
    if done.returncode:
        print("[repro] commit skipped: %s" % (done.stderr.strip() or done.stdout.strip()), flush=True)
        return None
    return True


def paths_to_commit(job, jobs, out, docs):
    """What the commit after ``job`` takes: the results and the page always; the figures only
    once the job's row has settled (or for a job of no row). A PNG does not delta-compress, so
    redrawing the white-box figure after every evaluation would add a full copy of it to the
    repository's history each time; the figure on disk is current all the same."""
    paths = [out, os.path.join(docs, "RESULTS.md")]
    if job.row is None or all(j.settled for j in jobs if j.row == job.row):
        paths.append(os.path.join(docs, "figures"))
    return paths


def job_commits(out):
    """The commits of the code that ran the finished jobs (recorded in every result and run)."""
    import glob
    import json
    found = set()
    for path in glob.glob(os.path.join(out, "eval", "*", "*", "*.json")) + \
            glob.glob(os.path.join(out, "models", "*", "*", "run.json")) + \
            glob.glob(os.path.join(out, "schedule", "*.json")) + glob.glob(os.path.join(out, "schedule", "*",
                                                                                          "run.json")):
        if path.endswith(".inputs.json"):
            continue
        try:
            with open(path) as f:
                commit = json.load(f).get("commit")
        except (OSError, ValueError):
            continue
        if commit:
            found.add(commit[:7])
    return sorted(found)


def main(argv=None):
    from core.interrupt import Interrupted, exit_on_signals
    from experiments.runner import DamagedFile
    args = parse(argv)
    if args.docs is None:
        same = os.path.realpath(args.out) == os.path.realpath(DEFAULT_OUT)
        args.docs = os.path.join(REPO, "docs") if same else os.path.join(args.out, "docs")
    bad = check_paths(args)
    if bad:
        print("experiments: error: %s" % bad, file=sys.stderr)
        return 2
    try:
        with exit_on_signals():
            return _main(args, argv)
    except DamagedFile as e:
        print("experiments: error: %s" % e, file=sys.stderr)
        return 2
    except OSError as e:
        # a full disk, a read-only file system: what the finished jobs wrote stays (atomic writes)
        print("experiments: error: %s: %s; the finished jobs' results are kept, fix it and run the same command "
              "again" % (getattr(e, "filename", None) or "writing", e.strerror or e), file=sys.stderr)
        return 2
    except (Interrupted, KeyboardInterrupt) as e:
        print("experiments: %s; the running job was stopped with it and the finished ones are kept: run the same "
              "command again to continue" % (e if isinstance(e, Interrupted) else "interrupted by SIGINT"),
              file=sys.stderr)
        return getattr(e, "status", 130)


def _main(args, argv):
    from core.provenance import git_commit
    from data.fashion_mnist import is_fashion_mnist_dir
    from experiments.page import write_page
    from experiments.runner import (Layout, check_budget, load_json, machine_label, machines_summary, plan_jobs,
                                    run_all)
    from experiments.suite import BUDGETS, select_variants

    try:
        variants = select_variants([v for v in (args.variants or "").split(",") if v])
    except ValueError as e:
        print("experiments: error: %s" % e, file=sys.stderr)
        return 2
    budget = BUDGETS[args.budget]
    if not args.report_only and not args.list and not is_fashion_mnist_dir(args.data):
        print("experiments: error: %s has no Fashion-MNIST IDX files: install dataset-fashion-mnist "
              "(scripts/setup.sh does) or pass --data DIR" % args.data, file=sys.stderr)
        return 2
    out, docs = os.path.abspath(args.out), os.path.abspath(args.docs)
    layout = Layout(out)
    mismatch = check_budget(layout, budget, record=not (args.report_only or args.list))
    if mismatch:
        print("experiments: error: %s" % mismatch, file=sys.stderr)
        return 2

    def plan():
        return plan_jobs(variants, budget, layout, args.data)

    if args.list:
        jobs, schedule = plan()
        cut = load_json(layout.rows_file(), {}).get("cut", {})
        for j in jobs:
            state = "done" if j.done else "diverged" if j.diverged else "cut" if j.row in cut else "todo"
            print("%-8s %s" % (state, j.name))
        if schedule["epochs"] is None:
            print("(the rest is planned once the schedule runs have finished)")
        return 0

    from core.files import repo_relative
    given = list(argv if argv is not None else sys.argv[1:])
    for k, a in enumerate(given[:-1]):          # repository-relative: the page is committed
        if a in ("--out", "--docs"):
            given[k + 1] = repo_relative(given[k + 1])
    argv_shown = " ".join(["python -m experiments"] + given)

    def page():
        jobs, schedule = plan()
        cut = load_json(layout.rows_file(), {}).get("cut", {})
        live = [j for j in jobs if j.row not in cut]
        finished = sum(1 for j in live if j.settled)
        complete = schedule["epochs"] is not None and finished == len(live)
        timings = load_json(layout.timings(), {})
        wall = sum(timings.values())
        commits = job_commits(out)
        meta = {"command": argv_shown.replace(" --report-only", "").replace(" --commit", ""),
                "commit": "jobs run by commit(s) %s, page by `%s`" % (
                    ", ".join("`%s`" % c for c in commits) or "–", git_commit()),
                "machine": machines_summary(layout) or machine_label(),
                "wall": "%.1f CPU-machine hours" % (wall / 3600), "date": time.strftime("%Y-%m-%d"),
                "progress": ("**Complete:** all %d jobs finished%s." % (
                    len(live), "; rows cut by the budget: %s" % ", ".join(cut) if cut else "") if complete else
                    "**In progress:** %d of %d planned jobs finished%s; missing numbers show '–'. Rerun the "
                    "command to continue." % (finished, len(live), "" if schedule["epochs"] is not None else
                                              " (the rows are planned once the schedule is chosen)")),
                "why_changed": WHY_CHANGED}
        return write_page(out, budget, variants, docs, meta), complete

    status = {"failed": []}
    if not args.report_only:
        layout.write_gitignore()

        failures = []

        def after_job(job, result):
            if args.commit:
                page()
                done = commit_paths(paths_to_commit(job, plan()[0], out, docs),
                                    "Reproduction suite: %s %s" % (job.name, result))
                failures[:] = failures + [job.name] if done is None else []
                if len(failures) >= 3:
                    print("[repro] WARNING: the last %d commits failed (%s): the results stay in %s but are not "
                          "committed; fix the repository (a stale .git/index.lock?)" % (
                              len(failures), ", ".join(failures), out), flush=True)

        status = run_all(plan, layout, budget, variants, progress=lambda m: print(m, flush=True),
                         after_job=after_job)
    (judged, residual), complete = page()
    if args.commit:
        commit_paths([out, os.path.join(docs, "RESULTS.md"), os.path.join(docs, "figures")],
                     "Reproduction suite: page%s" % (" (complete)" if complete else ""))
    for j in judged:
        print("[repro] %-16s %-60s %s" % (j.claim.where, j.claim.text[:60], j.verdict))
    print("[repro] %-16s %-60s %s" % ("Table 1", "removing the residual connection", residual[1]))
    print("[repro] wrote %s" % os.path.join(docs, "RESULTS.md"))
    if status["failed"]:
        print("experiments: error: %d job(s) failed: %s; see their logs under %s/logs" % (
            len(status["failed"]), ", ".join(status["failed"]), out), file=sys.stderr)
        return 1
    return 0


# Why the first run's verdicts do not carry over (docs/archive): said once, on the page.
WHY_CHANGED = ("their verdicts do not carry over: their models were far from converged (0.85 of an epoch), "
               "their non-local embeddings started from another initialisation than the original's, their black-box "
               "source shared the baseline's recipe, and their significance borrowed a pooled variance without a "
               "correction for multiplicity.")


if __name__ == "__main__":
    sys.exit(main())
