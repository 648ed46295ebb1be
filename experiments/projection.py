"""What the reproduction suite would cost today, every row at every seed, projected from a
finished run's timings and this checkout's training steps.

    python -m experiments.projection --timings results/repro/timings.json --markdown docs/PERFORMANCE.md

The rule is the budget rule's (``runner.decide_row``): a row costs the baseline row's measured
time (all its seeds and evaluations, from ``--timings``) times the row's relative cost; here the
relative cost is measured again, as the seconds of one adversarial training step of the row's
net (clean step for Table 3's rows) over the baseline's, each in a process of its own
(``python -m bench.workers net``), instead of ``suite.Variant.cost`` (the first run's). The
jobs outside the rows (schedule, sources, transfer sets, features) count as measured. The
suite's recipe (batch 128, PGD-3) is the measured step's.
"""
import argparse
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

SECTION = "The reproduction suite's cost, projected"
RESULT_TAG = "BENCH_RESULT "


def variant_spec(variant, preset, width=None):
    """The ArchSpec a suite row trains (train.py's flags read as train.py reads them)."""
    from config.flags import add_arch_flags, arch_from_args
    p = argparse.ArgumentParser()
    add_arch_flags(p)
    args = p.parse_args(list(variant.arch_flags) + (["--width", str(width)] if width else []))
    return arch_from_args(args, preset)


def measure_step(spec, clean, batch, attack_iter, repeats, timeout=1800):
    """Seconds of one SGD step (PGD-``attack_iter`` adversarial, or clean) of ``spec``."""
    params = {"spec": spec.to_dict(), "batch": batch, "what": "train_clean" if clean else "train_adv",
              "attack_iter": attack_iter, "repeats": repeats, "warmup": 1}
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run([sys.executable, "-m", "bench.workers", "net", json.dumps(params)], cwd=REPO, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout).stdout
    for line in reversed(out.splitlines()):
        if RESULT_TAG in line:
            return json.loads(line.split(RESULT_TAG, 1)[1])["seconds"]
    raise RuntimeError("the step measurement failed:\n%s" % "\n".join(out.splitlines()[-10:]))


def project(timings, variants, step_seconds, seeds, measured_seeds):
    """-> dict: per row the old and new relative cost and the projected hours, and totals.
    ``timings``: job name -> seconds of a finished run, whose job names start with the
    row's job kind and end with ``<row>/seed<N>`` (runner.py); ``step_seconds``: row -> seconds
    of its step now; ``seeds``: seeds to project for; ``measured_seeds``: the run's seeds."""
    first = variants[0].name

    def row_of(job):
        parts = job.split("/")
        return parts[-2] if len(parts) >= 3 and parts[-1].startswith("seed") else None

    names = {v.name for v in variants}
    baseline = sum(t for job, t in timings.items() if row_of(job) == first)
    outside = sum(t for job, t in timings.items() if row_of(job) not in names)
    rows, total = [], outside
    for v in variants:
        new = step_seconds[v.name] / step_seconds[first]
        seconds = baseline * new * len(seeds) / measured_seeds
        measured = sum(t for job, t in timings.items() if row_of(job) == v.name)
        rows.append({"row": v.name, "label": v.label, "old_cost": v.cost / variants[0].cost, "new_cost": new,
                     "step_seconds": step_seconds[v.name], "projected_hours": seconds / 3600,
                     "measured_hours": measured / 3600 if measured else None})
        total += seconds
    return {"rows": rows, "outside_rows_hours": outside / 3600, "baseline_row_hours": baseline / 3600,
            "total_hours": total / 3600, "seeds": len(seeds)}


def markdown(result, command, machine, commit, goal):
    lines = ["Command: `%s`. Machine: %s. Code: commit %s." % (command, machine, commit), "",
             "Each row: the baseline row's measured %.1f h (%d seeds, training and evaluations, from the timings of "
             "the published run) times the row's cost relative to the baseline, measured now as the seconds of one "
             "training step of its net (batch 128, PGD-3; clean for Table 3's rows), each in its own process; the "
             "jobs outside the rows (schedule, sources, transfer sets, features): %.1f h as measured." % (
                 result["baseline_row_hours"], result["seeds"], result["outside_rows_hours"]), "",
             "| row | relative cost, first run | relative cost, now | step s | projected h | measured h (first run) |",
             "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append("| %s | %.1f | %.1f | %.3f | %.1f | %s |" % (
            r["row"], r["old_cost"], r["new_cost"], r["step_seconds"], r["projected_hours"],
            "%.1f" % r["measured_hours"] if r["measured_hours"] else "cut"))
    verdict = "within" if result["total_hours"] <= goal else "over"
    lines += ["", "All %d rows at %d seeds: **%.1f machine hours**, %s the %g-hour goal." % (
        len(result["rows"]), result["seeds"], result["total_hours"], verdict, goal)]
    return "\n".join(lines)


def main(argv=None):
    from experiments.suite import BUDGETS, select_variants
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--timings", default=os.path.join(REPO, "results", "repro", "timings.json"),
                   help="the timings.json of a finished suite run")
    p.add_argument("--budget", choices=sorted(BUDGETS), default="full")
    p.add_argument("--variants", default=None, help="comma-separated rows (default: all; the first is the reference)")
    p.add_argument("--width", type=int, default=None, help="measure the nets at this width (tests: small and fast)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json-out")
    p.add_argument("--markdown", help="write (or replace) the section \"%s\" of this page" % SECTION)
    args = p.parse_args(argv)
    budget = BUDGETS[args.budget]
    from core.files import check_outputs
    try:
        check_outputs([("--json-out", args.json_out), ("--markdown", args.markdown)], [("--timings", args.timings)])
        variants = select_variants(args.variants.split(",") if args.variants else None)
        with open(args.timings) as f:
            timings = json.load(f)
    except (ValueError, OSError) as e:       # PathError is a ValueError
        print("projection: %s" % e, file=sys.stderr)
        return 2
    from config.presets import PRESETS
    from core.provenance import git_commit, machine_label
    preset = PRESETS[budget.preset]
    steps = {}
    for v in variants:
        steps[v.name] = measure_step(variant_spec(v, preset, args.width), v.clean_training, args.batch,
                                     preset.train_attack_iter, args.repeats)
        print("[projection] %-22s %.4f s per step" % (v.name, steps[v.name]), flush=True)
    measured = {int(job.rsplit("seed", 1)[1]) for job in timings
                if job.startswith("train/%s/seed" % variants[0].name)}
    if not measured:
        print("projection: %s has no training job of the %s row" % (args.timings, variants[0].name), file=sys.stderr)
        return 2
    result = project(timings, variants, steps, budget.seeds, len(measured))
    command = "python -m experiments.projection " + " ".join(argv if argv is not None else sys.argv[1:])
    body = markdown(result, command, machine_label(), git_commit() or "unknown", budget.hours)
    print(body)
    if args.json_out:
        from core.files import atomic_write
        atomic_write(args.json_out, lambda f: json.dump(dict(result, command=command), f, indent=1), mode="w")
    if args.markdown:
        from core.files import replace_markdown_section
        replace_markdown_section(args.markdown, SECTION, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
