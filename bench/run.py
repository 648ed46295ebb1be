"""The benchmark suite: one command, a table on screen, JSON, and docs/PERFORMANCE.md.

    python -m bench.run --json-out bench.json --markdown docs/PERFORMANCE.md      # full (~20-25 min, 2 cores)
    python -m bench.run --quick --json-out bench.json                              # R50 + small nets (~6 min)
    python -m bench.run --tiny --json-out bench.json                               # smoke test (< 1 min)
    python -m bench.run --from-json bench.json --markdown docs/PERFORMANCE.md      # the report again, no measuring
    python -m bench.run --from-json a.json b.json --markdown docs/PERFORMANCE.md   # the least contended of 2 runs

Every measurement runs in its own process (``bench.workers``), so its peak memory is its
own, and measures float32 matmul throughput just before and after itself: the machines are
shared and noisy, so results are quoted as ratios to references measured at the same time
(the matmul reference, the Keras ResNet50, the baseline without denoising, the unrolled
loop). Conventions are written in the report (``CONVENTIONS``).

The families, one module each on the shared measuring core (``bench.measure``):
``bench.networks`` (the nets' steps and ablations), ``bench.scaling`` (Horovod's allreduce and
its projection), ``bench.targets`` (pass or miss); beside them ``bench.attacks`` (APGD against
PGD and IBM ART), ``bench.members`` (AutoAttack's members against their network evaluations);
``bench.report`` writes the page.
"""
import argparse
import datetime
import json
import os
import sys
import tempfile
import time


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from bench.measure import (CONTENDED, Runner, adjusted, contended, merge_runs, run_worker)  # noqa: E402
from bench.networks import (IMAGENET, NETWORK_MEDIAN_SUFFIX, TF_BN_SUFFIX, UNFUSED_SUFFIX,  # noqa: E402
                            _compare_query_blocks, adv_step_ratios, base_label, compare_keras, denoise_overheads,
                            gradient_ablation, keras_rows, loop_overheads, low_precision_rows, net_row, plan_for)
from bench.scaling import cpu_step_estimate, run_horovod, scaling  # noqa: E402
from bench.targets import targets  # noqa: E402
from core.provenance import git_commit, machine_info  # noqa: E402

CONVENTIONS = """\
- FLOPs = 2 x multiply-adds (MACs). MACs are counted from the graph at batch 1 by
  `nets/complexity.py` (convolutions, grouped ones included, matrix and batched matrix
  products, so the non-local N x N products count as built); element-wise work (BN, ReLU,
  softmax, pooling, median, adds) is not counted.
- Work per image, in forward passes F = 2 x MACs: forward F; one attack step 2F (forward +
  the gradient w.r.t. the input; the attack asks for no weight gradients and TensorFlow
  builds none); one SGD step 3F (forward + input gradients + weight gradients, backward =
  2x forward); adversarial training with PGD-k (2k + 3)F.
- Achieved GFLOP/s = that work x batch / measured seconds; "% matmul" divides it by the
  float32 matmul GFLOP/s (n x n times n x n, graph mode, default session threads, like the
  nets) measured in the same process just before and after the measurement.
- Seconds are the median of the repeats after a warm-up run; every measurement is a fresh
  process. Peak RSS = `getrusage(RUSAGE_SELF).ru_maxrss` of that process (TensorFlow
  runtime, graph, weights, activations); "step MB" = peak minus the RSS just before the
  first step (weights initialised), i.e. what the steps themselves added.
- "attack step" = a targeted PGD-K run in the `tf.while_loop` of `attacks/base.py` divided
  by K; the unrolled variant builds the same K steps (the same attacker verbs) as K copies
  in the graph. Adv. step ratio = (PGD-k + SGD step) / (k attack steps + one clean SGD step).
- Denoising overhead: time share = 1 - t(without) / t(with); FLOP share = 1 - F(without) /
  F(with); the target is time share <= 1.1 x FLOP share.
- Comparisons between rows (our R50 vs Keras, loop vs unrolled, adv. step vs its parts,
  with vs without denoising, the BN-gradient ablation, bf16 vs fp32, query blocks) use
  adjusted seconds: seconds x (the matmul GFLOP/s measured around that row) / (the best
  such GFLOP/s of the run), since other processes slow a measurement and its own matmul
  alike. "s/step (adj.)" in the tables; raw seconds are kept too.
- cpu/wall: CPU seconds of the measuring process per wall second. About the core count
  when it had the cores to itself; markedly less means it waited or the machine was shared
  (the 1-minute load average before each measurement is in the JSON). "% matmul (CPU s)"
  divides GFLOP per CPU-second of the process by the matmul's GFLOP per CPU-second: less
  sensitive to other processes taking turns on the cores, but blind to idle cores (a net
  that keeps one core busy out of two looks as good as one that keeps both busy), so the
  targets use the wall-clock "% matmul".
"""


def derive(res):
    """Everything computed from the measurements (also for ``--from-json``)."""
    plan = res["meta"].get("plan") or plan_for(res["meta"]["mode"])
    rows = res["nets"]
    measured = rows + res["keras"] + res["query_block"]
    best = max([r["matmul_gflops_local"] for r in measured if r.get("matmul_gflops_local")] +
               [r["gflops"] for r in (res["reference"]["matmul_start"], res["reference"]["matmul_end"])
                if "gflops" in r] or [0.0])
    res["reference"]["best_gflops"] = best or None
    cores = res["meta"]["machine"].get("cores")
    for r in measured:
        r["contended"] = contended(r, cores)
        if r.get("matmul_gflops_local") and best:
            r["matmul_scale"] = r["matmul_gflops_local"] / best
            r["seconds_adjusted"] = adjusted(r)
            # a matmul reference far below the run's best also means other load, even when
            # the process got its CPU share (a neighbour's memory traffic, frequency)
            r["contended"] = r["contended"] or r["matmul_scale"] < CONTENDED
    compare_keras(res["keras"], rows)
    full = next((q for q in res["query_block"] if q.get("query_block") == 0 and "seconds" in q), None)
    for q in res["query_block"]:
        if full and "seconds" in q:
            q["seconds_vs_full"] = adjusted(q) / adjusted(full)
    res["adv_step_ratio"] = adv_step_ratios(rows)
    res["loop_overhead"] = loop_overheads(rows, plan["loop_pairs"])
    res["denoise_overhead"] = denoise_overheads(rows, [tuple(p) for p in plan["denoise_pairs"]], res["complexity"])
    res["bn_gradient_ablation"] = gradient_ablation(rows, TF_BN_SUFFIX)
    res["median_gradient_ablation"] = gradient_ablation(rows, NETWORK_MEDIAN_SUFFIX)
    res["fused_ops_ablation"] = gradient_ablation(rows, UNFUSED_SUFFIX)
    res["mixed_precision"] = low_precision_rows(rows)
    if res["horovod"].get("bytes"):
        res["horovod"]["scaling"] = scaling(res["horovod"], cpu_step_estimate(rows, res["horovod"]["arch"]))
    res["targets"] = targets(res)
    return res


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="R50 and the small nets only (~6 min)")
    size.add_argument("--tiny", action="store_true", help="tiny nets, 1 repeat, --one-process (smoke test, < 1 min)")
    p.add_argument("--json-out", help="write all results here")
    p.add_argument("--markdown", help="regenerate this Markdown report (docs/PERFORMANCE.md); sections it does not "
                                      "generate are kept")
    p.add_argument("--repeats", type=int, help="timed runs per measurement (default 2; tiny 1)")
    p.add_argument("--skip", default="", help="comma list of sections to skip: nets,keras,pipeline,horovod,query_block")
    p.add_argument("--one-process", action="store_true",
                   help="all measurements in one worker process (faster start; peak memory no longer separable)")
    p.add_argument("--timeout", type=float, default=1200, help="seconds per measurement process")
    p.add_argument("--retries", type=int, default=0,
                   help="repeat a measurement up to this many times when its matmul reference shows other processes "
                        "taking CPU; the least contended result is kept (default 0)")
    p.add_argument("--recount-flops", action="store_true",
                   help="with --from-json: count the nets' FLOPs again with this checkout's nets/complexity.py "
                        "(analytic, "
                        "no timing), e.g. for the per-op split that older JSON lacks")
    p.add_argument("--from-json", nargs="+", metavar="JSON",
                   help="measure nothing: print the table and write --markdown (and --json-out) from earlier JSON; "
                        "given several runs, each measurement is taken from the run where it was least contended")
    args = p.parse_args(argv)
    if args.from_json:
        from bench import report
        runs = []
        for path in args.from_json:
            with open(path) as f:
                runs.append(json.load(f))
        res = merge_runs(runs) if len(runs) > 1 else runs[0]
        if args.recount_flops:
            specs = {base_label(r["label"]): r["spec"] for r in res["nets"]}
            cx = run_worker("complexity", {"specs": specs, "shapes_for": None}, args.timeout, print)
            if "error" in cx:
                print("bench.run: error: recounting FLOPs failed: %s" % cx["error"].splitlines()[-1], file=sys.stderr)
                return 1
            res["complexity"], res["dot_order"] = cx["archs"], cx["dot_order"]
            res["meta"]["flops_recounted_at"] = git_commit()
        res = derive(res)
        res["meta"]["rendered_with"] = "python -m bench.run " + " ".join(argv if argv is not None else sys.argv[1:])
        print(report.screen(res))
        if args.json_out:
            from core.files import atomic_write
            atomic_write(args.json_out, lambda f: json.dump(res, f, indent=1), mode="w")
            print("wrote %s" % args.json_out)
        if args.markdown:
            report.write_markdown(res, args.markdown)
            print("wrote %s" % args.markdown)
        return 0
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    plan = plan_for(mode)
    if args.repeats:
        plan["repeats"] = args.repeats
    skip = set(filter(None, args.skip.split(",")))
    started = time.time()
    command = "python -m bench.run " + " ".join(argv if argv is not None else sys.argv[1:])

    def log(msg):
        print(msg, flush=True)

    log("bench.run (%s): %s" % (mode, command))
    res = {"meta": {"mode": mode, "command": command, "commit": git_commit(),
                    "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                    "machine": machine_info(), "loadavg_start": os.getloadavg(),
                    "one_process": bool(args.one_process or args.tiny),
                    "plan": {"loop_pairs": plan["loop_pairs"], "denoise_pairs": plan["denoise_pairs"]}},
           "conventions": CONVENTIONS, "errors": []}
    common = {"ref_n": plan["ref_n"], "repeats": plan["repeats"], "warmup": plan["warmup"]}
    runner = Runner(args.one_process or args.tiny, args.timeout, log, args.retries)
    tmp = tempfile.TemporaryDirectory()

    runner.add("matmul_start", "matmul", {"n": plan["ref_n"], "repeats": 5})
    specs = {label: s for label, s, _, _, *_ in plan["nets"] if base_label(label) == label}
    hv = plan["horovod"] if "horovod" not in skip else None
    runner.add("complexity", "complexity", {"specs": specs, "shapes_for": IMAGENET[hv["arch"]] if hv else None})
    net_jobs = []
    if "nets" not in skip:
        profile = {tuple(x) for x in plan["profile"]}
        for label, s, batch, whats, *extra in plan["nets"]:
            k = plan["small_k"] if s["family"] == "small" else plan["imagenet_k"]
            for what in whats:
                params = dict(common, label=label, spec=s, batch=batch, what=what, attack_iter=k, **(extra or [{}])[0])
                if what.startswith("attack_") and s["family"] != "small":
                    params["attack_iter"] = 1      # the low-precision steps are slow on CPUs: one is enough
                if (label, batch, what) in profile:
                    params["profile"] = 10
                net_jobs.append((label, s, batch, what, params["attack_iter"]))
                runner.add(("net", label, batch, what), "net", params)
            if label == "R50" and "keras" not in skip:   # the reference next to what it is compared with
                for kb in plan["keras"]:
                    if kb == batch:
                        runner.add(("keras", kb), "keras", dict(common, batch=kb))
    if "pipeline" not in skip:
        runner.add("pipeline", "pipeline", plan["pipeline"])
    qb_paths = {}
    if "query_block" not in skip:
        q = plan["query_block"]
        for qb in q["blocks"]:
            qb_paths[qb] = os.path.join(tmp.name, "qb%d.npz" % qb)
            runner.add(("query_block", qb), "query_block",
                       dict(common, batch=q["batch"], size=q["size"], channels=q["channels"], query_block=qb,
                            save=qb_paths[qb], repeats=max(2, plan["repeats"])))
    runner.flush()

    cx = runner.get("complexity")
    archs = cx.get("archs", {})
    res["complexity"] = archs
    res["dot_order"] = cx.get("dot_order", {})
    rows = [net_row(label, s, batch, what, k, runner.get(("net", label, batch, what)),
                    archs.get(base_label(label), {}).get("macs"))
            for label, s, batch, what, k in net_jobs]
    res["nets"] = rows
    res["keras"] = keras_rows([(b, runner.get(("keras", b))) for b in plan["keras"] if ("keras", b) in runner.results])
    res["pipeline"] = runner.get("pipeline") if "pipeline" not in skip else {"skipped": True}
    res["query_block"] = []
    for qb in qb_paths:
        r = runner.get(("query_block", qb))
        if "error" not in r:
            r["step_mb"] = r["peak_rss_mb"] - r["rss_before_mb"]
            r["gflops_forward_and_input_grad"] = 2 * 2.0 * r["forward_macs"] / r["seconds"] / 1e9
        res["query_block"].append(r)
    _compare_query_blocks(res["query_block"], {qb: p for qb, p in qb_paths.items() if os.path.exists(p)})
    tmp.cleanup()

    res["horovod"] = {"skipped": True}
    if hv:
        log("horovod allreduce (%d Gloo ranks, %s gradients)" % (hv["np"], hv["arch"]))
        res["horovod"] = run_horovod(hv, cx.get("shapes"), args.timeout, log)

    runner.add("matmul_end", "matmul", {"n": plan["ref_n"], "repeats": 5})
    runner.flush()
    ref_start, ref_end = runner.get("matmul_start"), runner.get("matmul_end")
    ref = [r["gflops"] for r in (ref_start, ref_end) if "gflops" in r]
    res["reference"] = {"matmul_start": ref_start, "matmul_end": ref_end,
                        "gflops": sum(ref) / len(ref) if ref else None}
    derive(res)
    res["meta"]["loadavg_end"] = os.getloadavg()
    res["meta"]["total_seconds"] = time.time() - started
    for section in ("nets", "keras", "query_block"):
        for r in res[section]:
            if "error" in r:
                res["errors"].append({"section": section, "error": r["error"][:300]})
    for section in ("pipeline", "horovod", "complexity"):
        r = cx if section == "complexity" else res[section]
        if "error" in r:
            res["errors"].append({"section": section, "error": r["error"][:300]})

    from bench import report
    log("")
    log(report.screen(res))
    if args.json_out:
        from core.files import atomic_write
        atomic_write(args.json_out, lambda f: json.dump(res, f, indent=1), mode="w")
        log("wrote %s" % args.json_out)
    if args.markdown:
        report.write_markdown(res, args.markdown)
        log("wrote %s" % args.markdown)
    if res["errors"]:
        log("bench.run: %d measurement(s) failed (JSON \"errors\"; their output is above)" % len(res["errors"]))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
