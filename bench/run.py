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
"""
import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from core.provenance import git_commit, machine_info  # noqa: E402
RESULT_TAG = "BENCH_RESULT "

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


# ----------------------------------------------------------------------------------------
# configurations
def spec(family, depth, op=None, at="groups", **kw):
    d = {"family": family, "depth": depth,
         "denoise": {"op": op, "at": at, "embed": None, "subsample": False, "kernel_size": 3,
                     "use_1x1": True, "residual": True, "query_block": 0}}
    d.update(kw)
    return d


def small(width, op=None, size=28):
    return spec("small", 14, op, num_classes=10, image_size=size, image_channels=1, width=width)


IMAGENET = {
    "R50": spec("resnet", 50),
    "R152": spec("resnet", 152),
    "R152-Denoise": spec("resnet", 152, "nonlocal"),          # 4 Gaussian non-local blocks
    "X101": spec("resnext", 101),
    # the released X101-DenoiseAll: dot product, no embedding, after every residual block
    "X101-DenoiseAll": spec("resnext", 101, "nonlocal-dot", "all"),
}
ALL = ("forward", "attack", "unrolled", "train_clean", "train_adv")


# Attack steps in other precisions and with XLA (attacks/precision.py), measured as
# "attack_<precision>[-xla]" next to the fp32 "attack" row of the same net and batch.
LOW_PRECISION_ATTACKS = ("bf16", "fp16", "fp32-xla", "bf16-xla", "fp16-xla")


def plan_for(mode, low_precision=LOW_PRECISION_ATTACKS):
    """What to measure: nets as (label, spec, batch, [measurements]) and the other sections.
    ``low_precision``: attack variants to measure besides plain fp32 ("bf16", "fp32-xla", ...)."""
    lp = ["attack_" + p for p in low_precision]
    if mode == "tiny":
        median = ("S14-w4-median", small(4, "median"), 2, ["attack"])
        nets = [("S14-w4", small(4), 2, list(ALL) + lp), with_tf_bn_gradient(("S14-w4", small(4), 2, ["attack"])),
                median, with_ablation(median, NETWORK_MEDIAN_SUFFIX), with_ablation(median, UNFUSED_SUFFIX),
                ("S14-w4-nonlocal", small(4, "nonlocal"), 2, ["forward", "attack"]),
                ("S14-w4-nonlocal-dot", small(4, "nonlocal-dot"), 2, ["forward"])]
        return dict(nets=nets, small_k=1, imagenet_k=1, ref_n=256, repeats=1, warmup=1, keras=[],
                    pipeline=dict(count=4, width=100, height=75, image_size=32, repeats=1),
                    query_block=dict(batch=1, size=8, channels=16, blocks=[0, 16]),
                    horovod=None, profile=[], denoise_pairs=[("S14-w4-nonlocal", "S14-w4")],
                    loop_pairs=["S14-w4"])
    small_nets = [("S14-w8", small(8), 128, list(ALL) + lp),
                  ("S14-w8-nonlocal-dot", small(8, "nonlocal-dot"), 128, list(ALL)),
                  ("S14-w8-nonlocal", small(8, "nonlocal"), 128, list(ALL)),
                  # the 3x3 median: the costliest op of the reproduction suite, and its gradient's ablation
                  ("S14-w8-median", small(8, "median"), 128, ["forward", "attack", "train_adv"]),
                  with_ablation(("S14-w8-median", small(8, "median"), 128, ["attack"]), NETWORK_MEDIAN_SUFFIX),
                  ("S14-w8-bilateral", small(8, "bilateral"), 128, ["attack", "train_adv"])]
    # the same ops as TensorFlow's own ops (no XLA, TensorFlow's softmax gradient): what the fused builds gain
    small_nets += [with_ablation((label, small(8, op), 128, ["attack", "train_adv"]), UNFUSED_SUFFIX)
                   for label, op in (("S14-w8-nonlocal", "nonlocal"), ("S14-w8-median", "median"),
                                     ("S14-w8-bilateral", "bilateral"))]
    # width 16: the training-step target's second width
    small_nets += [("S14-w16", small(16), 128, ["attack", "train_clean", "train_adv"]),
                   ("S14-w16-nonlocal", small(16, "nonlocal"), 128, ["attack", "train_adv"]),
                   ("S14-w16-median", small(16, "median"), 128, ["attack", "train_adv"])]
    small_pairs = [("S14-w8-nonlocal-dot", "S14-w8"), ("S14-w8-nonlocal", "S14-w8"), ("S14-w8-median", "S14-w8"),
                   ("S14-w8-bilateral", "S14-w8"), ("S14-w16-nonlocal", "S14-w16"), ("S14-w16-median", "S14-w16")]
    common = dict(small_k=3, imagenet_k=2, ref_n=2048, repeats=2, warmup=1,
                  pipeline=dict(count=64, width=500, height=375, image_size=224, repeats=2),
                  horovod=dict(np=2, arch="R152", repeats=5))
    train = ["forward", "attack", "train_clean", "train_adv"]
    if mode == "quick":
        nets = [("R50", IMAGENET["R50"], 4, list(ALL) + lp),
                with_tf_bn_gradient(("R50", IMAGENET["R50"], 4, ["attack"])),
                small_nets[0], with_tf_bn_gradient(small_nets[0][:3] + (["attack"],))] + small_nets[1:]
        return dict(common, nets=nets, keras=[4], query_block=dict(batch=1, size=56, channels=256, blocks=[0, 392]),
                    profile=[("R50", 4, "attack"), ("S14-w8", 128, "attack")], denoise_pairs=small_pairs,
                    loop_pairs=["R50", "S14-w8"])
    nets = []
    for label in ("R50", "R152", "R152-Denoise", "X101-DenoiseAll"):
        nets.append((label, IMAGENET[label], 1, ["forward", "attack"] if label == "R50" else ["forward"]))
        nets.append((label, IMAGENET[label], 4, train + (["unrolled"] + lp if label == "R50" else [])))
        if label == "R50":
            nets.append(with_tf_bn_gradient((label, IMAGENET[label], 4, ["attack"])))
        if label == "X101-DenoiseAll":
            nets.append(("X101", IMAGENET["X101"], 4, ["forward", "attack"]))
    nets += small_nets[:1] + [with_tf_bn_gradient(small_nets[0][:3] + (["attack"],))] + small_nets[1:]
    return dict(common, nets=nets, keras=[1, 4],
                query_block=dict(batch=4, size=56, channels=256, blocks=[0, 1568, 392]),
                profile=[("R50", 4, "attack"), ("R152-Denoise", 4, "attack"), ("X101-DenoiseAll", 4, "attack"),
                         ("S14-w8", 128, "attack"), ("S14-w8-nonlocal", 128, "attack")],
                denoise_pairs=[("R152-Denoise", "R152"), ("X101-DenoiseAll", "X101")] + small_pairs,
                loop_pairs=["R50", "S14-w8"])


# ----------------------------------------------------------------------------------------
# running the workers
def run_worker(kind, params, timeout, log):
    cmd = [sys.executable, "-m", "bench.workers", kind, json.dumps(params)]
    return _run(cmd, timeout, log, "%s %s" % (kind, _short(params)))


def _short(params):
    keep = {k: v for k, v in params.items() if k in ("label", "batch", "what", "query_block", "n")}
    return " ".join("%s=%s" % kv for kv in keep.items())


def _run(cmd, timeout, log, title):
    start = time.perf_counter()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, timeout=timeout, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
        output, code = proc.stdout, proc.returncode
    except subprocess.TimeoutExpired as e:
        output, code = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""), "timeout"
    wall = time.perf_counter() - start
    for line in reversed(output.splitlines()):
        idx = line.find(RESULT_TAG)
        if idx >= 0:
            result = json.loads(line[idx + len(RESULT_TAG):])
            result["process_seconds"] = wall
            log("  %-58s %6.1f s" % (title, wall))
            for r in result.get("results", [result]):
                _log_result(r, log)
            return result
    tail = "\n".join(output.splitlines()[-15:])
    log("  %-58s FAILED (%s)\n%s" % (title, code, tail))
    return {"error": "exit %s: %s" % (code, tail[-2000:]), "process_seconds": wall}


def _log_result(r, log):
    if "error" in r:
        log("    failed: %s" % r["error"].splitlines()[-1][:200])
    elif "seconds" in r:
        log("    %s%.4f s (min %.4f)%s%s" % ("%s b%s: " % (r["what"], r["batch"]) if "what" in r else "", r["seconds"],
                                            r.get("seconds_min", r["seconds"]),
                                            "  peak %.0f MB" % r["peak_rss_mb"] if "peak_rss_mb" in r else "",
                                            "  matmul %.0f GFLOP/s" % r["matmul_gflops_local"]
                                            if r.get("matmul_gflops_local") else ""))


# ----------------------------------------------------------------------------------------
# derived numbers
def is_attack(what):
    """attack, unrolled, attack_<precision>[-xla] (LOW_PRECISION_ATTACKS): K attack steps."""
    return what in ("attack", "unrolled") or what.startswith("attack_")


def work_factor(what, k):
    """Forward passes of work per image (see CONVENTIONS)."""
    if is_attack(what):
        return 2 * k
    return {"forward": 1, "train_clean": 3, "train_adv": 2 * k + 3}[what]


def net_row(label, spec_d, batch, what, k, res, macs):
    row = {"label": label, "batch": batch, "what": what, "spec": spec_d}
    if "error" in res:
        row["error"] = res["error"]
        return row
    t = res["seconds"]
    steps = k if is_attack(what) else 1
    row.update({k2: res.get(k2) for k2 in ("seconds", "seconds_min", "cpu_per_wall", "build_seconds", "peak_rss_mb",
                                           "rss_before_mb", "matmul_gflops_local", "loadavg_1min_before",
                                           "matmul_gflops_per_cpu_second_local", "matmul_cpu_per_wall_local",
                                           "process_seconds", "profile", "attempts")})
    row["attack_iter"] = k if is_attack(what) or what == "train_adv" else 0
    row["seconds_per_step"] = t / steps
    # forward/train: images per second; attack: attack steps x images per second
    row["images_per_second"] = batch * steps / t
    row["step_mb"] = res["peak_rss_mb"] - res["rss_before_mb"]
    if macs:
        row["gflops"] = work_factor(what, k) * 2.0 * macs * batch / t / 1e9
        if res.get("matmul_gflops_local"):
            row["fraction_of_matmul"] = row["gflops"] / res["matmul_gflops_local"]
        if res.get("matmul_gflops_per_cpu_second_local") and res.get("cpu_per_wall"):
            row["gflops_per_cpu_second"] = row["gflops"] / res["cpu_per_wall"]
            row["fraction_of_matmul_cpu_time"] = (row["gflops_per_cpu_second"] /
                                                  res["matmul_gflops_per_cpu_second_local"])
    return row


def adjusted(row, key="seconds"):
    """``row[key]`` scaled to the run's best matmul speed: seconds x (the matmul GFLOP/s
    measured around this row) / (the best such GFLOP/s of the run). Other processes slow a
    measurement and its own matmul reference alike, so comparing rows measured under
    different load compares adjusted seconds (``derive`` sets ``matmul_scale``)."""
    return row[key] * row.get("matmul_scale", 1.0)


def find(rows, label, batch, what):
    for r in rows:
        if r["label"] == label and r["batch"] == batch and r["what"] == what and "error" not in r:
            return r
    return None


def adv_step_ratios(rows):
    out = []
    for r in rows:
        if r["what"] != "train_adv" or "error" in r:
            continue
        att, clean = find(rows, r["label"], r["batch"], "attack"), find(rows, r["label"], r["batch"], "train_clean")
        if att and clean:
            k = r["attack_iter"]
            predicted = k * adjusted(att, "seconds_per_step") + adjusted(clean)
            out.append({"label": r["label"], "batch": r["batch"], "attack_iter": k, "seconds": adjusted(r),
                        "k_attack_steps_plus_clean_seconds": predicted, "ratio": adjusted(r) / predicted})
    return out


def loop_overheads(rows, labels):
    out = []
    for r in rows:
        if r["what"] != "unrolled" or "error" in r or r["label"] not in labels:
            continue
        loop = find(rows, r["label"], r["batch"], "attack")
        if loop:
            out.append({"label": r["label"], "batch": r["batch"], "attack_iter": r["attack_iter"],
                        "while_loop_seconds": adjusted(loop), "unrolled_seconds": adjusted(r),
                        "overhead": adjusted(loop) / adjusted(r) - 1.0,
                        "while_loop_step_mb": loop["step_mb"], "unrolled_step_mb": r["step_mb"]})
    return out


TF_BN_SUFFIX = " (TF BN grad)"
NETWORK_MEDIAN_SUFFIX = " (network median grad)"
UNFUSED_SUFFIX = " (TF ops, no XLA)"
# label suffix of an ablation row -> the worker parameter that switches it on
ABLATIONS = {TF_BN_SUFFIX: {"bn_gradient": "tensorflow"}, NETWORK_MEDIAN_SUFFIX: {"median_gradient": "network"},
             # the denoising ops as TensorFlow's own ops build them: no XLA loops, the Gaussian
             # op's softmax differentiated by TensorFlow (nets/gradients.py: xla, nonlocal_grad)
             UNFUSED_SUFFIX: {"xla": False, "nonlocal_grad": "tensorflow"}}


def base_label(label):
    """The net an ablation row measures (its label without the ablation's suffix)."""
    for suffix in ABLATIONS:
        if label.endswith(suffix):
            return label[:-len(suffix)]
    return label


def with_tf_bn_gradient(entry):
    """The same measurement with TensorFlow's own gradient for frozen BN (the ablation of
    nets.denoise_block._frozen_batchnorm_grad)."""
    return with_ablation(entry, TF_BN_SUFFIX)


def with_ablation(entry, suffix):
    label, s, batch, whats = entry[:4]
    return (label + suffix, s, batch, whats, dict(ABLATIONS[suffix]))


def gradient_ablation(rows, suffix):
    """Ours against the ablation rows of ``suffix``: same net, batch and measurement, same run."""
    out = []
    for r in rows:
        if not r["label"].endswith(suffix) or "error" in r:
            continue
        ours = find(rows, base_label(r["label"]), r["batch"], r["what"])
        if ours:
            row = {"label": ours["label"], "batch": r["batch"], "what": r["what"], "seconds": adjusted(ours),
                   "ablation_seconds": adjusted(r), "speedup": adjusted(r) / adjusted(ours)}
            if ours.get("cpu_per_wall") and r.get("cpu_per_wall"):
                row["cpu_seconds"] = ours["seconds"] * ours["cpu_per_wall"]
                row["ablation_cpu_seconds"] = r["seconds"] * r["cpu_per_wall"]
                row["cpu_speedup"] = row["ablation_cpu_seconds"] / row["cpu_seconds"]
            out.append(row)
    return out


def denoise_overheads(rows, pairs, archs):
    out = []
    for den, base in pairs:
        if den not in archs or base not in archs:
            continue
        f_share = 1.0 - archs[base]["macs"] / archs[den]["macs"]
        for r in rows:
            if r["label"] != den or "error" in r:
                continue
            b = find(rows, base, r["batch"], r["what"])
            if not b:
                continue
            t_share = 1.0 - adjusted(b) / adjusted(r)
            out.append({"denoised": den, "baseline": base, "batch": r["batch"], "what": r["what"],
                        "time_ratio": adjusted(r) / adjusted(b),
                        "flop_ratio": archs[den]["macs"] / archs[base]["macs"],
                        "time_share": t_share, "flop_share": f_share,
                        "share_ratio": t_share / f_share if f_share > 0 else None})
    return out


def low_precision_rows(rows):
    out = {"rows": []}
    for r in rows:
        if r["what"].startswith("attack_"):
            precision, _, xla = r["what"].split("_", 1)[1].partition("-")
            row = {"label": r["label"], "batch": r["batch"], "precision": precision, "xla": xla == "xla"}
            fp32 = find(rows, r["label"], r["batch"], "attack")
            if "error" in r:
                row["error"] = r["error"]
            elif fp32:
                row.update(seconds_per_step=adjusted(r, "seconds_per_step"),
                           fp32_seconds_per_step=adjusted(fp32, "seconds_per_step"),
                           speedup=adjusted(fp32, "seconds_per_step") / adjusted(r, "seconds_per_step"),
                           peak_rss_mb=r["peak_rss_mb"],
                           fp32_peak_rss_mb=fp32["peak_rss_mb"])
            out["rows"].append(row)
    out["status"] = "measured" if any("speedup" in r for r in out["rows"]) else "not measured: failed"
    return out


def keras_rows(results):
    out = []
    for batch, res in results:
        row = {"batch": batch}
        if "error" in res:
            row["error"] = res["error"]
        else:
            row.update(seconds=res["seconds"], images_per_second=batch / res["seconds"], peak_rss_mb=res["peak_rss_mb"],
                       cpu_per_wall=res.get("cpu_per_wall"), matmul_gflops_local=res.get("matmul_gflops_local"),
                       matmul_cpu_per_wall_local=res.get("matmul_cpu_per_wall_local"), macs=res.get("macs"))
            if res.get("macs") and res.get("matmul_gflops_local"):
                row["gflops"] = 2.0 * res["macs"] * batch / res["seconds"] / 1e9
                row["fraction_of_matmul"] = row["gflops"] / res["matmul_gflops_local"]
        out.append(row)
    return out


def compare_keras(keras, rows):
    for k in keras:
        ours = find(rows, "R50", k["batch"], "forward")
        if ours and "seconds" in k:
            k["r50_images_per_second"] = k["batch"] / adjusted(ours)
            k["images_per_second_adjusted"] = k["batch"] / adjusted(k)
            k["r50_over_keras"] = adjusted(k) / adjusted(ours)
            k["r50_fraction_of_matmul"] = ours.get("fraction_of_matmul")


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


def _row_key(section, r):
    if section == "nets":
        return r["label"], r["batch"], r["what"]
    return r.get("query_block") if section == "query_block" else r.get("batch")


def merge_runs(runs):
    """Several runs of the same plan -> one, each measurement (net row, Keras row, query
    block) taken from the run where its own matmul reference was fastest, i.e. where it
    was least slowed by other load. Every row keeps the reference measured with it, so the
    ratios stay same-process ratios; the first run gives everything else (pipeline,
    Horovod, complexity, the machine's start/end references)."""
    merged = json.loads(json.dumps(runs[0]))
    for section in ("nets", "keras", "query_block"):
        best = {}
        for run in runs:
            for r in run.get(section, []):
                key = _row_key(section, r)
                quality = -1.0 if "error" in r else r.get("matmul_gflops_local") or 0.0
                if key not in best or quality > best[key][0]:
                    best[key] = (quality, r)
        merged[section] = [best[_row_key(section, r)][1] for r in merged[section]]
    merged["meta"]["merged_from"] = [{"command": r["meta"]["command"], "date": r["meta"]["date"],
                                      "commit": r["meta"]["commit"]} for r in runs]
    merged["errors"] = [e for e in merged.get("errors", []) if e["section"] not in ("nets", "keras", "query_block")]
    for section in ("nets", "keras", "query_block"):
        merged["errors"] += [{"section": section, "error": r["error"][:300]} for r in merged[section] if "error" in r]
    return merged


# Horovod scaling model ------------------------------------------------------------------
SCALING_ASSUMPTIONS = {
    "network_gbit_per_s": 25.0,
    "latency_s_per_message": 50e-6,
    # the original's figure (docs/ORIGINAL.md): R152, PGD-30, 52 h on 128 V100s,
    # 110 epochs of 1,281,167 images at 32 images per GPU
    "v100_hours": 52.0, "v100_gpus": 128, "epochs": 110, "imagenet_train_images": 1281167, "per_gpu_batch": 32,
    "paper_attack_iter": 30,
    "overlap": 0.0,
}


def v100_step_seconds(a=SCALING_ASSUMPTIONS):
    steps = a["epochs"] * a["imagenet_train_images"] / (a["v100_gpus"] * a["per_gpu_batch"])
    return a["v100_hours"] * 3600.0 / steps


def ring_allreduce_seconds(n, nbytes, bandwidth_bytes, latency, buffers):
    """Ring allreduce: 2(n-1)/n x bytes over the slowest link, and 2(n-1) messages per fused buffer."""
    if n <= 1:
        return 0.0
    return 2.0 * (n - 1) / n * nbytes / bandwidth_bytes + 2 * (n - 1) * buffers * latency


def scaling(hvd, step_seconds_cpu, a=SCALING_ASSUMPTIONS):
    nbytes = hvd["bytes"]
    buffers = max(1, -(-nbytes // hvd["fusion_threshold_bytes"]))
    bw = a["network_gbit_per_s"] * 1e9 / 8
    local_bw = nbytes / hvd["seconds"]      # n = 2: 2(n-1)/n = 1, so bytes / time
    v100 = v100_step_seconds(a)
    rows = []
    for n in (2, 8, 32, 128):
        t = ring_allreduce_seconds(n, nbytes, bw, a["latency_s_per_message"], buffers)
        t_local = ring_allreduce_seconds(n, nbytes, local_bw, 0.0, buffers)
        row = {"workers": n, "allreduce_seconds_model": t, "allreduce_seconds_at_local_bandwidth": t_local,
               "efficiency_v100": v100 / (v100 + (1 - a["overlap"]) * t)}
        if step_seconds_cpu:
            row["efficiency_this_cpu"] = step_seconds_cpu / (step_seconds_cpu + (1 - a["overlap"]) * t)
        rows.append(row)
    return {"v100_step_seconds": v100, "this_cpu_step_seconds": step_seconds_cpu,
            "local_bandwidth_bytes_per_s": local_bw, "fused_buffers": buffers, "rows": rows, "assumptions": dict(a)}


# targets ----------------------------------------------------------------------------------
def targets(res):
    out = []

    def add(name, measured, threshold, higher_is_better, detail, rows=()):
        """``rows``: the measurements compared (any under other load makes the result doubtful)."""
        busy = [r for r in rows if r and r.get("contended")]
        if measured is None:
            out.append({"target": name, "status": "not measured", "detail": detail})
            return
        ok = measured >= threshold if higher_is_better else measured <= threshold
        out.append({"target": name, "measured": measured, "threshold": threshold, "status": "pass" if ok else "miss",
                    "higher_is_better": higher_is_better, "by": measured / threshold,
                    "detail": detail + ("; measured under other load †" if busy else ""),
                    "under_other_load": bool(busy)})

    def net(label, batch, what):
        return find(res["nets"], label, batch, what)

    for k in res["keras"]:
        if "r50_over_keras" in k:
            add("R50 forward >= Keras ResNet50 (batch %d)" % k["batch"], k["r50_over_keras"], 1.0, True,
                "ours %.2f img/s, Keras %.2f img/s (adjusted)" % (k["r50_images_per_second"],
                                                                  k["images_per_second_adjusted"]),
                [k, net("R50", k["batch"], "forward")])
    for r in res["nets"]:
        if "fraction_of_matmul" not in r or base_label(r["label"]) != r["label"]:
            continue
        if r["label"] == "R50" and r["what"] == "forward":
            add("R50 forward >= 40%% of matmul (batch %d)" % r["batch"], r["fraction_of_matmul"], 0.40, True,
                "%.1f of %.1f GFLOP/s" % (r["gflops"], r["matmul_gflops_local"]), [r])
        if r["what"] == "attack" and r["spec"]["family"] != "small" and r["batch"] == max(
                x["batch"] for x in res["nets"] if x["label"] == r["label"]):
            add("%s PGD attack step >= 30%% of matmul (batch %d)" % (r["label"], r["batch"]), r["fraction_of_matmul"],
                0.30, True, "%.1f of %.1f GFLOP/s" % (r["gflops"], r["matmul_gflops_local"]), [r])
        if r["what"] == "attack" and r["spec"]["family"] == "small" and not r["spec"]["denoise"]["op"]:
            add("%s PGD attack step >= 30%% of matmul (batch %d)" % (r["label"], r["batch"]), r["fraction_of_matmul"],
                0.30, True, "%.1f of %.1f GFLOP/s" % (r["gflops"], r["matmul_gflops_local"]), [r])
        if r["what"] == "train_adv" and r["spec"]["family"] == "small" and r["spec"]["width"] in (8, 16) and \
                r["spec"]["denoise"]["op"] in (None, "nonlocal", "median") and r["batch"] == 128:
            add("%s adversarial training step >= 50%% of matmul (batch %d)" % (r["label"], r["batch"]),
                r["fraction_of_matmul"], 0.50, True, "%.1f of %.1f GFLOP/s" % (r["gflops"], r["matmul_gflops_local"]),
                [r])
    for lo in res["loop_overhead"]:
        add("while-loop <= 10%% over unrolled (%s, batch %d, K=%d)" % (lo["label"], lo["batch"], lo["attack_iter"]),
            1.0 + lo["overhead"], 1.10, False, "%.3f s vs %.3f s" % (lo["while_loop_seconds"], lo["unrolled_seconds"]),
            [net(lo["label"], lo["batch"], "attack"), net(lo["label"], lo["batch"], "unrolled")])
    for d in res["denoise_overhead"]:
        if d["what"] in ("attack", "forward") and d["share_ratio"] is not None:
            add("denoising overhead <= 1.1x its FLOP share (%s vs %s, %s, batch %d)" % (
                d["denoised"], d["baseline"], d["what"], d["batch"]), d["share_ratio"], 1.1, False,
                "time share %.1f%%, FLOP share %.1f%%" % (100 * d["time_share"], 100 * d["flop_share"]),
                [net(d["denoised"], d["batch"], d["what"]), net(d["baseline"], d["batch"], d["what"])])
    orders = [b for blocks in res["dot_order"].values() for b in blocks]
    if orders:
        bad = [b["block"] for b in orders if not b["cheaper"]]
        add("dot-product non-local op in its cheaper order (%d blocks)" % len(orders), float(len(orders) - len(bad)),
            float(len(orders)), True, "not cheaper: %s" % (", ".join(bad) or "none"))
    return out


# ----------------------------------------------------------------------------------------
# other load: a matmul reference below this fraction of the cores (other processes took
# CPU), or below this fraction of the run's best matmul speed
CONTENDED = 0.8


def contended(r, cores=None):
    cpw = r.get("matmul_cpu_per_wall_local")
    return cpw is not None and cpw < CONTENDED * (cores or os.cpu_count() or 1)


class Runner:
    """Runs measurements, each in its own process (default), or queued and run together in
    one process (``--one-process``, for the tests: one TensorFlow start-up instead of one
    per measurement; peak memory is then cumulative). ``retries``: a measurement whose own
    matmul reference shows other processes taking CPU is repeated (after a pause) up to
    that many times, and the least contended result is kept."""

    def __init__(self, one_process, timeout, log, retries=0):
        self.one_process, self.timeout, self.log, self.retries = one_process, timeout, log, retries
        self.queue, self.results = [], {}

    def add(self, key, kind, params):
        if self.one_process:
            self.queue.append((key, kind, params))
            return
        result = run_worker(kind, params, self.timeout, self.log)
        for attempt in range(self.retries):
            if not contended(result):
                break
            self.log("    contended (matmul cpu/wall %.2f): again in 20 s" % result["matmul_cpu_per_wall_local"])
            time.sleep(20)
            again = run_worker(kind, params, self.timeout, self.log)
            if "error" not in again and again.get("matmul_cpu_per_wall_local", 0) > \
                    result.get("matmul_cpu_per_wall_local", 0):
                result = again
            result["attempts"] = attempt + 2
        self.results[key] = result

    def flush(self):
        if not self.queue:
            return
        out = _run([sys.executable, "-m", "bench.workers", "many",
                    json.dumps({"jobs": [[kind, params] for _, kind, params in self.queue]})],
                   self.timeout * len(self.queue), self.log, "%d measurements in one process" % len(self.queue))
        results = out.get("results") or [{"error": out.get("error", "no result")}] * len(self.queue)
        for (key, _, _), r in zip(self.queue, results):
            self.results[key] = r
        self.queue = []

    def get(self, key):
        return self.results.get(key, {"error": "not run"})


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


def _compare_query_blocks(rows, outs):
    import numpy as np
    if 0 not in outs:
        return
    full = np.load(outs[0])
    for r in rows:
        qb = r.get("query_block")
        if qb in outs and qb != 0:
            other = np.load(outs[qb])
            for key in ("y", "grad"):
                diff = float(np.max(np.abs(other[key] - full[key])))
                scale = float(np.max(np.abs(full[key])))
                r["max_abs_diff_%s" % key] = diff
                r["max_rel_diff_%s" % key] = diff / scale if scale else diff
        for key in ("step_mb",):
            base = next((x for x in rows if x.get("query_block") == 0 and key in x), None)
            if base and key in r:
                r["%s_vs_full" % key] = r[key] / base[key] if base[key] else None


def cpu_step_estimate(rows, arch):
    """Seconds of one step of the paper's recipe (PGD-30, 32 images) on this CPU, from the
    measured attack step and clean SGD step of ``arch`` at the largest batch measured."""
    att = [r for r in rows if r["label"] == arch and r["what"] == "attack" and "error" not in r]
    clean = [r for r in rows if r["label"] == arch and r["what"] == "train_clean" and "error" not in r]
    if not att or not clean:
        return None
    a, c = max(att, key=lambda r: r["batch"]), max(clean, key=lambda r: r["batch"])
    k = SCALING_ASSUMPTIONS["paper_attack_iter"]
    per_image = k * adjusted(a, "seconds_per_step") / a["batch"] + adjusted(c) / c["batch"]
    return per_image * SCALING_ASSUMPTIONS["per_gpu_batch"]


def run_horovod(hv, shapes, timeout, log):
    if not shapes:
        return {"error": "no variable shapes (the complexity worker failed)"}
    horovodrun = os.path.join(os.path.dirname(sys.executable), "horovodrun")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "shapes.json")
        with open(path, "w") as f:
            json.dump(shapes, f)
        cmd = [horovodrun, "--gloo", "-np", str(hv["np"]), "-H", "localhost:%d" % hv["np"], sys.executable, "-m",
               "bench.hvd_allreduce", path, str(hv["repeats"])]
        out = _run(cmd, timeout, log, "horovodrun -np %d bench.hvd_allreduce" % hv["np"])
    out["arch"] = hv["arch"]
    return out


if __name__ == "__main__":
    sys.exit(main())
