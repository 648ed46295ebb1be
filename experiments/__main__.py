"""Runs the reproduction suite, resumably, and writes docs/RESULTS.md with its figures.

    python -m experiments                          # the full suite (3 seeds; 5.8 hours measured on 2 AVX-512 cores)
    python -m experiments --budget tiny --out /tmp/r --docs /tmp/r/docs   # a smoke run
    python -m experiments --report-only            # regenerate the page from finished jobs
    python -m experiments --list                   # the jobs and which are finished
    python -m experiments --backfill-per-image     # per-image results for an older runner's evaluations

Started again, it skips finished jobs (an interrupted training run resumes from its last
checkpoint). Exit status 1 if a job failed (its log is named), 0 otherwise.
"""
import argparse
import os
import re
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def main(argv=None):
    from experiments.suite import BUDGETS, select_variants
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--budget", choices=sorted(BUDGETS), default="full")
    # In the repository, committed: a CPU run of the suite spans many sessions, and the finished
    # jobs (models, evaluations, logs) are what lets anyone regenerate the page or continue it.
    p.add_argument("--out", default=os.path.join(REPO, "results", "repro"),
                   help="models, evaluations, logs (the default is committed with the page it made)")
    p.add_argument("--docs", default=os.path.join(REPO, "docs"), help="where RESULTS.md and figures/ go")
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--variants", default=None, help="comma-separated subset of the suite's variants")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default: the budget's)")
    p.add_argument("--report-only", action="store_true", help="only regenerate RESULTS.md from finished jobs")
    p.add_argument("--list", action="store_true", help="list the jobs and exit")
    p.add_argument("--backfill-per-image", nargs="?", const="*", default=None, metavar="GLOB",
                   help="rerun finished white-box evaluations that kept no per-image results (an older runner's) "
                        "to add them, where the rerun reproduces the recorded results, then write the page; "
                        "GLOB limits it to the matching job names, e.g. 'white-box/*/seed1/*-n100'")
    p.add_argument("--jobs-commit", default=None,
                   help="with --report-only: the commit(s) of the code that ran the jobs, when another checkout ran "
                        "them (default: this checkout's commit)")
    args = p.parse_args(argv)

    import dataclasses

    from data.fashion_mnist import is_fashion_mnist_dir
    from experiments.report import write_report
    from core.provenance import git_commit
    from experiments.runner import (Layout, backfill_per_image, check_budget, load_json, machine_label,
                                    machines_summary, plan_jobs, run_all)

    try:
        variants = select_variants([v for v in (args.variants or "").split(",") if v])
    except ValueError as e:
        print("experiments: error: %s" % e, file=sys.stderr)
        return 2
    budget = BUDGETS[args.budget]
    if args.seeds:
        budget = dataclasses.replace(budget, seeds=tuple(int(s) for s in args.seeds.split(",")))
    if not args.report_only and not is_fashion_mnist_dir(args.data):
        print("experiments: error: %s has no Fashion-MNIST IDX files: install dataset-fashion-mnist "
              "(scripts/setup.sh does) or pass --data DIR" % args.data, file=sys.stderr)
        return 2
    out = os.path.abspath(args.out)
    layout = Layout(out)
    mismatch = check_budget(layout, budget, record=not (args.report_only or args.list or
                                                         args.backfill_per_image is not None))
    if mismatch:
        print("experiments: error: %s" % mismatch, file=sys.stderr)
        return 2
    jobs = plan_jobs(variants, budget, layout, args.data)
    if args.list:
        for j in jobs:
            print("%-8s %s" % ("done" if j.done else "diverged" if j.diverged else "todo", j.name))
        return 0
    status = {"failed": [], "blocked": []}
    if args.backfill_per_image is not None:
        import fnmatch
        filled = backfill_per_image([j for j in jobs if fnmatch.fnmatchcase(j.name, args.backfill_per_image)],
                                    layout, progress=lambda m: print(m, flush=True))
        print("[repro] backfill: %d kept, %d differed, %d failed" % (
            len(filled["kept"]), len(filled["differed"]), len(filled["failed"])), flush=True)
        status["failed"] = ["backfill/" + name for name in filled["failed"]]
    elif not args.report_only:
        status = run_all(jobs, layout, progress=lambda m: print(m, flush=True))
    finished = sum(1 for j in jobs if j.settled)
    not_run = sum(1 for j in jobs if j.diverged and not j.done and not j.diverged_ok)
    timings = load_json(layout.timings(), {})
    wall = sum(timings.values())
    argv_shown = " ".join(["python -m experiments"] + (argv if argv is not None else sys.argv[1:]))
    progress = ("**Complete:** all %d jobs finished%s." % (
        len(jobs), " (%d of them need a model whose training diverged, and did not run)" % not_run if not_run else "")
        if finished == len(jobs) else
                "**In progress:** %d of %d jobs finished; missing rows show '–'. Rerun the command to "
                "continue." % (finished, len(jobs)))
    commit = git_commit()
    meta = {"command": re.sub(r" --report-only| --jobs-commit \S+", "", argv_shown),
            "commit": "jobs run by commit `%s`, page by commit `%s`" % (args.jobs_commit, commit)
            if args.jobs_commit else "commit `%s`" % commit,
            # the machines that ran the jobs (recorded per job), else this one
            "machine": machines_summary(layout) or machine_label(),
            "wall": "%.1f CPU-machine hours (%.0f s)" % (wall / 3600, wall),
            "date": time.strftime("%Y-%m-%d")}
    # The page reads every seed on disk: `--seeds 2` continues a suite, it does not hide seed 1.
    seeds = sorted(set(budget.seeds) | layout.seeds_on_disk(variants))
    found = write_report(out, dataclasses.replace(budget, seeds=tuple(seeds)), os.path.abspath(args.docs), meta,
                         progress)
    print("[repro] %s" % progress.replace("**", ""))
    for claim, where, evidence, verdict in found:
        print("[repro] %-10s %-70s %s" % (where, claim[:70], verdict))
    print("[repro] wrote %s" % os.path.join(args.docs, "RESULTS.md"))
    if status["failed"]:
        print("experiments: error: %d job(s) failed: %s; see their logs under %s/logs" % (
            len(status["failed"]), ", ".join(status["failed"]), out), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
