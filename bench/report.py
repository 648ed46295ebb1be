"""The table on screen and docs/PERFORMANCE.md from the results of ``bench.run``.

``write_markdown`` regenerates the file and keeps every ``## `` section it does not
generate itself (e.g. a hand-written one), after its own."""
import os
import re

TITLE = "# Performance"
GENERATED = ("Targets", "Conventions", "Networks", "Keras reference", "Adversarial training step and its parts",
             "While-loop vs unrolled attack", "Frozen-BN gradient (ablation)", "Median filter gradient (ablation)",
             "Fused denoising ops (ablation)", "Denoising overhead",
             "Dot-product non-local order",
             "Memory-bounded Gaussian non-local", "Input pipeline", "Horovod allreduce and scaling",
             "Mixed-precision and XLA attack steps", "Where the time goes", "Misses and what bounds them")
RETIRED = ("bf16 attack steps",)     # sections no longer generated: dropped, not kept
COUNTED = ("Conv2D", "MatMul", "BatchMatMul", "DepthwiseConv")


def _f(x, fmt="%.2f", none="-"):
    return none if x is None else fmt % x


def _pct(x):
    return "-" if x is None else "%.1f%%" % (100 * x)


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------
def net_table(res):
    rows = []
    for r in res["nets"]:
        if "error" in r:
            rows.append([r["label"], r["batch"], r["what"], "failed: " + r["error"].splitlines()[-1][:80]] + [""] * 9)
            continue
        what = r["what"] + (" (K=%d)" % r["attack_iter"] if r["attack_iter"] else "")
        rows.append([r["label"], r["batch"], what, _f(r["seconds_per_step"], "%.3f"),
                     _f(r["seconds_per_step"] * r.get("matmul_scale", 1.0), "%.3f"), _f(r["images_per_second"]),
                     _f(r.get("gflops"), "%.1f"), _pct(r.get("fraction_of_matmul")),
                     _pct(r.get("fraction_of_matmul_cpu_time")), _f(r["peak_rss_mb"], "%.0f"),
                     _f(r["step_mb"], "%.0f"), _f(r.get("cpu_per_wall")) + (" †" if r.get("contended") else ""),
                     _f(r.get("build_seconds"), "%.1f")])
    return _table(["net", "batch", "measurement", "s/step", "s/step (adj.)", "img/s (attack: steps x img/s)",
                   "GFLOP/s", "% matmul",
                   "% matmul (CPU s)", "peak RSS MB", "step MB", "cpu/wall", "graph build s"], rows)


def targets_table(res):
    rows = []
    for t in res["targets"]:
        if t["status"] == "not measured":
            rows.append([t["target"], "-", "-", "not measured", t["detail"]])
        else:
            rows.append([t["target"], "%.3f" % t["measured"], "%.3g" % t["threshold"],
                         "**%s**" % t["status"] if t["status"] == "miss" else t["status"],
                         t["detail"] + ("; measured/threshold %.2f" % t["by"])])
    return _table(["target", "measured", "threshold", "status", "detail"], rows)


def screen(res):
    out = ["Matmul reference: %s GFLOP/s (start %s, end %s)" % (
        _f(res["reference"]["gflops"], "%.1f"), _f(res["reference"]["matmul_start"].get("gflops"), "%.1f"),
        _f(res["reference"]["matmul_end"].get("gflops"), "%.1f"))]
    out.append(net_table(res))
    out.append("")
    out.append(targets_table(res))
    if res["errors"]:
        out.append("%d measurement(s) failed; see the JSON" % len(res["errors"]))
    return "\n".join(out)


# ----------------------------------------------------------------------------------------
def _sections(res):
    s = {}
    s["Targets"] = (targets_table(res) +
                    "\n\nEach ratio is against a reference measured in the same run (see Conventions).")
    s["Conventions"] = res["conventions"].rstrip()
    if res["meta"].get("one_process"):
        s["Conventions"] += ("\n- **This run measured everything in one process** (`--one-process`/`--tiny`): peak "
                             "memory is cumulative, not per measurement.")
    ref = res["reference"]
    s["Networks"] = (
        "Machine reference: float32 %dx%d matmul, %s GFLOP/s at the start and %s GFLOP/s at the end of the run; every "
        "row below is divided by the matmul measured in its own process (in the JSON as `matmul_gflops_local`).\n\n"
        % (ref["matmul_start"].get("n", 0), ref["matmul_start"].get("n", 0),
           _f(ref["matmul_start"].get("gflops"), "%.1f"), _f(ref["matmul_end"].get("gflops"), "%.1f")) + net_table(res))
    rows = [[k["batch"], _f(k.get("images_per_second_adjusted")), _f(k.get("r50_images_per_second")),
             _f(k.get("r50_over_keras"), "%.2fx"), _pct(k.get("fraction_of_matmul")),
             _pct(k.get("r50_fraction_of_matmul")), _f(k.get("peak_rss_mb"), "%.0f")] for k in res["keras"]]
    macs = next((k["macs"] for k in res["keras"] if k.get("macs")), None)
    ours = res["complexity"].get("R50", {}).get("macs")
    s["Keras reference"] = ("`tf.keras.applications.ResNet50(weights=None)`, inference (`training=False`), graph mode, "
                            "NHWC, same session settings. Keras' ResNet50 is ResNet v1 (stride 2 in the first 1x1 "
                            "conv of a stage); ours, like the released checkpoints, strides in the 3x3 conv%s.\n\n" % (
                                " (%.2f vs %.2f GMACs per image)" % (macs / 1e9, ours / 1e9) if macs and ours else "") +
                            _table(["batch", "Keras img/s (adj.)", "our R50 img/s (adj.)", "ours / Keras",
                                    "Keras % matmul", "our R50 % matmul", "Keras peak RSS MB"], rows)
                            if rows else "not measured in this run")
    rows = [[a["label"], a["batch"], a["attack_iter"], "%.3f" % a["seconds"],
             "%.3f" % a["k_attack_steps_plus_clean_seconds"], "%.2f" % a["ratio"]] for a in res["adv_step_ratio"]]
    s["Adversarial training step and its parts"] = _table(
        ["net", "batch", "k", "PGD-k + SGD s", "k attack steps + clean SGD s", "ratio"], rows)
    rows = [[lo["label"], lo["batch"], lo["attack_iter"], "%.3f" % lo["while_loop_seconds"],
             "%.3f" % lo["unrolled_seconds"], "%+.1f%%" % (100 * lo["overhead"]),
             "%.0f / %.0f" % (lo["while_loop_step_mb"], lo["unrolled_step_mb"])]
            for lo in res["loop_overhead"]]
    s["While-loop vs unrolled attack"] = _table(
        ["net", "batch", "K", "tf.while_loop s", "unrolled s", "overhead", "step MB loop / unrolled"], rows)
    rows = _ablation_rows(res.get("bn_gradient_ablation", []))
    s["Frozen-BN gradient (ablation)"] = _ablation_section(
        "The attack's BN layers are frozen (inference mode). `nets/denoise_block.py` gives them the gradient "
        "dx = dy x gamma / sqrt(var + eps) (one multiply) instead of TensorFlow's FusedBatchNormGradV3, which also "
        "computes the gamma/beta gradients and, by consuming the BN op's extra outputs, keeps the forward conv + BN "
        "from fusing into one oneDNN kernel. Same gradient (tests/test_nets.py); the rows below measure the same "
        "attack with TensorFlow's gradient in the same run. Speed-up = TensorFlow's / ours, in wall time and in CPU "
        "seconds of the process (less sensitive to other load).", "ours", "TF BN gradient", rows)
    s["Median filter gradient (ablation)"] = _ablation_section(
        "The 3x3 median of `nets/denoise_ops.py` is a separable network of 18 min/max ops (sorted columns, then "
        "the median of their extremes). Its gradient goes straight to the window element equal to the median (9 "
        "comparisons) instead of back through the 18 min/max ops, whose gradients are a select pair each. Same "
        "gradient where the median is unique (tests/test_denoise_ops.py); the rows below measure the same attack "
        "backpropagating through the "
        "network, in the same run. Speed-up = network's / ours, in wall time and in CPU seconds.", "ours",
        "network gradient", _ablation_rows(res.get("median_gradient_ablation", [])))
    s["Fused denoising ops (ablation)"] = _ablation_section(
        "The element-wise work of the median, bilateral and Gaussian non-local ops runs as XLA loops (`jit_scope`: "
        "one pass over memory instead of one per op) and the Gaussian op's gradient is written out (its softmax "
        "gradient needs sum_j dW_ij W_ij = sum_c dY_ic Y_ic, an N x C sum instead of an N x N product and sum): "
        "`nets/gradients.py`, `xla` and `nonlocal_grad`. The same values and gradients as TensorFlow's own ops "
        "(tests/test_denoise_ops.py), which exported graphs keep; the rows below measure the same step built with "
        "TensorFlow's ops, in the same run. Speed-up = TensorFlow's ops / fused.", "fused", "TensorFlow ops",
        _ablation_rows(res.get("fused_ops_ablation", [])))
    rows = [[d["denoised"], d["baseline"], d["what"], d["batch"], "%.3f" % d["time_ratio"], "%.3f" % d["flop_ratio"],
             _pct(d["time_share"]), _pct(d["flop_share"]), _f(d["share_ratio"])] for d in res["denoise_overhead"]]
    s["Denoising overhead"] = _table(["with", "without", "measurement", "batch", "time ratio", "FLOP ratio",
                                      "time share", "FLOP share", "time share / FLOP share"], rows)
    s["Dot-product non-local order"] = _dot_order(res)
    s["Memory-bounded Gaussian non-local"] = _query_block(res)
    s["Input pipeline"] = _pipeline(res)
    s["Horovod allreduce and scaling"] = _horovod(res)
    s["Mixed-precision and XLA attack steps"] = _low_precision(res)
    s["Where the time goes"] = _profiles(res)
    s["Misses and what bounds them"] = _misses(res)
    return s


def _low_precision(res):
    mp = res["mixed_precision"]
    flags = ", ".join(res["meta"]["machine"].get("cpu_flags", [])) or "none detected"
    native = any(f in flags for f in ("avx512_bf16", "amx_bf16"))
    note = ("\n\nCPU flags relevant here: %s; %s." % (
        flags, "bf16 has native instructions on this CPU" if native else
        "no native bf16 arithmetic (avx512_bf16/amx_bf16) on this CPU, so its bf16 kernels convert to and from "
        "float32 internally; the option targets GPUs and bf16-capable CPUs"))
    if not mp.get("rows"):
        return _table(["measurement", "result"], [["PGD attack step in bf16/fp16/XLA", "**not measured**"]]) + note
    rows = []
    for r in mp["rows"]:
        name = [r["label"], r["batch"], r["precision"], "yes" if r.get("xla") else "no"]
        if "error" in r:
            rows.append(name + ["failed: " + r["error"].splitlines()[-1][:80]] + [""] * 3)
        elif "speedup" in r:
            rows.append(name + ["%.4f" % r["seconds_per_step"], "%.4f" % r["fp32_seconds_per_step"],
                                "%.2fx" % r["speedup"], "%.0f / %.0f" % (r["peak_rss_mb"], r["fp32_peak_rss_mb"])])
    return ("PGD attack steps with `--attack-precision` and `--attack-xla` (attacks/precision.py; weights stay "
            "float32; XLA compiles each iteration with `jit_scope` under the default session config), against the "
            "plain fp32 attack step of the same net and batch in this run. The robustness cost is measured in "
            "\"Mixed precision and XLA for the attack\" below.\n\n" +
            _table(["net", "batch", "precision", "XLA", "s/step", "fp32 s/step", "speed-up",
                    "peak RSS MB (this / fp32)"], rows) + note)


def _ablation_section(intro, ours, theirs, rows):
    """An ablation's paragraph and its table: our build against the ablation's, same run."""
    return intro + "\n\n" + _table(["net", "batch", "measurement", "%s s" % ours, "%s s" % theirs, "speed-up",
                                     "speed-up (CPU s)"], rows)


def _ablation_rows(ablation):
    return [[a["label"], a["batch"], a["what"], "%.3f" % a["seconds"],
             "%.3f" % a.get("ablation_seconds", a.get("tf_bn_grad_seconds", float("nan"))),
             "%.2fx" % a["speedup"], _f(a.get("cpu_speedup"), "%.2fx")] for a in ablation]


def _dot_order(res):
    if not res["dot_order"]:
        return "No dot-product non-local net in this run."
    out = []
    for label, blocks in res["dot_order"].items():
        by_shape = {}
        for b in blocks:
            key = (b["positions"], b["channels"])
            e = by_shape.setdefault(key, dict(b, count=0, all_cheaper=True))
            e["count"] += 1
            e["all_cheaper"] = e["all_cheaper"] and b["cheaper"]
        rows = [[label, e["count"], e["positions"], e["channels"], "{:,}".format(e["built_macs"]),
                 "{:,}".format(e["positions_first_macs"]), "{:,}".format(e["channels_first_macs"]),
                 "yes" if e["all_cheaper"] else "**no**"] for e in by_shape.values()]
        out.append(_table(["net", "blocks", "positions N", "channels C", "MACs as built", "(Q K^T) V", "Q (K^T V)",
                           "cheaper order"], rows))
    return ("Multiply-adds of each block's matrix products as built (from the graph), against the two orders "
            "computed from the block's shape (batch 1).\n\n" + "\n\n".join(out))


def _query_block(res):
    rows = []
    for r in res["query_block"]:
        if "error" in r:
            rows.append([r.get("query_block", "?"), "failed"] + [""] * 6)
            continue
        rows.append([r["query_block"] or "full (N x N)", "%.3f" % r["seconds"], _f(r.get("seconds_vs_full"), "%.2fx"),
                     "%.0f" % r["peak_rss_mb"], "%.0f" % r["step_mb"], _f(r.get("step_mb_vs_full"), "%.2fx"),
                     _f(r.get("max_rel_diff_y"), "%.1e"), _f(r.get("max_rel_diff_grad"), "%.1e")])
    if not rows:
        return "not measured in this run"
    r0 = next(r for r in res["query_block"])
    return ("`nets.denoise_ops.nonlocal_gaussian` alone, forward + gradient w.r.t. its input, on [%s, %d, %d, %s] "
            "(N = %s positions, embedding C/2), `DenoiseSpec(query_block=...)` (`--denoise-query-block`). Differences "
            "are max |blocked - full| / max |full|.\n\n" % (
                r0.get("batch"), r0.get("positions", 0) ** 0.5, r0.get("positions", 0) ** 0.5, r0.get("channels"),
                r0.get("positions")) +
            _table(["query block", "s", "time vs full", "peak RSS MB", "step MB", "step MB vs full", "rel. diff y",
                    "rel. diff grad"], rows))


def _pipeline(res):
    p = res["pipeline"]
    if p.get("skipped"):
        return "not measured in this run"
    if "error" in p:
        return "failed: " + p["error"][-300:]
    return ("%d generated %dx%d JPEGs (photograph-like, quality 90, mean %.0f KB), decoded with "
            "`data.images.read_image_bgr` and augmented with `data.augment.train_augmentors` (random-size crop to %d, "
            "colour jitter, lighting, flip) in one process with %d OpenCV thread(s):\n\n" % (
                p["images"], p.get("width", 0), p.get("height", 0), p["mean_jpeg_kb"], p["image_size"],
                p["cv2_threads"]) +
            _table(["", "images/s per core"], [["decode + augment", "%.1f" % p["images_per_second"]],
                                                ["decode only", "%.1f" % p["decode_only_images_per_second"]]]))


def _horovod(res):
    h = res["horovod"]
    if h.get("skipped"):
        return "not measured in this run"
    if "error" in h:
        return "failed: " + h["error"][-300:]
    sc = h.get("scaling", {})
    a = sc.get("assumptions", {})
    lines = ["Allreduce (average) of one step's gradients of %s: %d tensors, %.1fM floats (%.0f MB), with %d Gloo "
             "ranks on this machine (`horovodrun --gloo`, `bench/hvd_allreduce.py`): **%.3f s** (median of %d; "
             "min %.3f s), i.e. %.2f GB/s through the ring (bytes / time, since 2(n-1)/n = 1 at n = 2)." % (
                 h["arch"], h["tensors"], h["floats"] / 1e6, h["bytes"] / 2 ** 20, h["ranks"], h["seconds"],
                 h["repeats"], h["seconds_min"], sc.get("local_bandwidth_bytes_per_s", 0) / 1e9)]
    if sc:
        lines.append("")
        lines.append("Scaling estimate (a model, not a measurement). Ring allreduce time = 2(n-1)/n x bytes / "
                     "bandwidth + 2(n-1) x %d fused buffer(s) x latency; efficiency = step / (step + allreduce), "
                     "i.e. no overlap of communication with the backward pass (Horovod overlaps some, so this is "
                     "pessimistic). Assumptions: %.0f Gb/s per worker link, %.0f us per message, a flat ring over "
                     "all workers; V100 step = %.0f h x 3600 / (%d epochs x %d images / (%d GPUs x %d images)) = "
                     "**%.2f s** (R152, PGD-%d, the paper's figure); this CPU's step = PGD-%d + SGD step of %s "
                     "at %d images, from the measured attack and clean steps (%s s)." % (
                         sc["fused_buffers"], a["network_gbit_per_s"], a["latency_s_per_message"] * 1e6,
                         a["v100_hours"], a["epochs"], a["imagenet_train_images"], a["v100_gpus"], a["per_gpu_batch"],
                         sc["v100_step_seconds"], a["paper_attack_iter"], a["paper_attack_iter"], h["arch"],
                         a["per_gpu_batch"], _f(sc.get("this_cpu_step_seconds"), "%.0f")))
        lines.append("")
        rows = [[r["workers"], "%.3f" % r["allreduce_seconds_model"],
                 "%.3f" % r["allreduce_seconds_at_local_bandwidth"], _pct(r["efficiency_v100"]),
                 _pct(r.get("efficiency_this_cpu"))] for r in sc["rows"]]
        lines.append(_table(["workers", "allreduce s (model)", "allreduce s at this machine's loopback bandwidth",
                             "efficiency, V100 step", "efficiency, this CPU's step"], rows))
    return "\n".join(lines)


def _profiles(res):
    out = []
    for r in res["nets"]:
        prof = r.get("profile")
        if not prof:
            continue
        counted = sum(x["share"] for x in prof["top"] if any(c in x["op"] for c in COUNTED))
        rows = [[x["op"], "%.1f" % x["ms"], _pct(x["share"])] for x in prof["top"]]
        out.append("%s, batch %d, %s (one traced run, `RunOptions(trace_level=FULL_TRACE)`; op times summed over "
                   "threads, %.0f ms in all): convolutions and matrix products (the FLOPs counted) take %s of op "
                   "time.\n\n%s" % (r["label"], r["batch"], r["what"], prof["total_op_ms"], _pct(counted),
                                    _table(["op", "ms", "share"], rows)))
    return "\n\n".join(out) if out else "no profile in this run"


def _misses(res):
    missed = [t for t in res["targets"] if t["status"] == "miss"]
    if not missed:
        return "No target missed in this run."
    lines = []
    prof = {(r["label"], r["batch"], r["what"]): r["profile"] for r in res["nets"] if r.get("profile")}
    for t in missed:
        if t["higher_is_better"]:
            how = "reaches %.0f%% of the target (short by %.0f%%)" % (100 * t["by"], 100 * (1 - t["by"]))
        else:
            how = "%.2fx the limit" % t["by"]
        lines.append("- %s: measured %.3f against %.3g: %s.%s" % (
            t["target"], t["measured"], t["threshold"], how,
            " **Doubtful:** a compared measurement ran under other load (†); re-measure at a quiet moment."
            if t.get("under_other_load") else ""))
        if "Keras" in t["target"]:
            kmacs = next((k["macs"] for k in res["keras"] if k.get("macs")), None)
            ours = res["complexity"].get("R50", {}).get("macs")
            if kmacs and ours:
                lines.append("  Keras' ResNet50 (v1) does %.2f GMACs per image, ours %.2f (%.0f%% more: the stride "
                             "in the 3x3 conv of the released checkpoints); compare the %% matmul columns of the Keras "
                             "section for the work rate." % (kmacs / 1e9, ours / 1e9, 100 * (ours / kmacs - 1)))
        if "denoising overhead" in t["target"]:
            label = t["target"].split("(", 1)[1].split(" vs ", 1)[0]
            p = next((q for (lb, _, what), q in prof.items() if lb == label and what == "attack"), None)
            bmm = sum(x["share"] for x in p["top"] if "BatchMatMul" in x["op"]) if p else 0
            arch = res["complexity"].get(label, {})
            bmm_flops = arch["batch_matmul_macs"] / arch["macs"] if arch.get("batch_matmul_macs") else None
            op = next((r["spec"]["denoise"]["op"] for r in res["nets"] if r["label"] == label and r.get("spec")), None)
            if op == "median":
                lines.append("  The median (Eq. 3) is comparisons, not multiply-adds: per output element 18 "
                             "min/max over shifted copies of the map, none of them FLOPs by "
                             "the convention above. The FLOP share is only the blocks' 1x1 convolutions, so this "
                             "target cannot hold for the median whatever its speed; its gradient's share is in the "
                             "section \"Median filter gradient (ablation)\".")
            elif bmm and bmm_flops:
                uncounted = 1 - sum(x["share"] for x in p["top"] if any(c in x["op"] for c in COUNTED))
                lines.append("  What bounds it, from the profile of the %s attack below: the non-local products "
                             "(BatchMatMul) take %s of the time for %s of the FLOPs, i.e. %.2fx the time per FLOP of "
                             "the net as a whole; element-wise and memory-bound ops take %s.%s" % (
                                 label, _pct(bmm), _pct(bmm_flops), bmm / bmm_flops, _pct(uncounted),
                                 " oneDNN's batched product is the slow part." if bmm / bmm_flops > 1.05 else ""))
            elif bmm:
                lines.append("  The non-local products (BatchMatMul) take %s of the %s attack's time (profile below); "
                             "this JSON has no per-op FLOP count to compare that with (`--recount-flops`)." % (
                                 _pct(bmm), label))
            else:
                lines.append("  FLOPs count only the matrix products; the denoising ops' element-wise work (softmax "
                             "and its gradient for the Gaussian op, reshapes, the block's residual add and BN) is time "
                             "without FLOPs, so a denoised net's time share can exceed its FLOP share.")
    if prof:
        lines.append("")
        for (label, batch, what), p in prof.items():
            conv = [x for x in p["top"] if any(c in x["op"] for c in COUNTED)]
            other = [x for x in p["top"] if not any(c in x["op"] for c in COUNTED)]
            lines.append("- Profile of %s batch %d %s: %s in convolution/matrix kernels (%s); the largest uncounted "
                         "(element-wise/memory-bound) ops: %s." % (
                             label, batch, what, _pct(sum(x["share"] for x in conv)),
                             ", ".join("%s %s" % (x["op"], _pct(x["share"])) for x in conv[:3]),
                             ", ".join("%s %s" % (x["op"], _pct(x["share"])) for x in other[:4])))
    return "\n".join(lines)


def write_markdown(res, path):
    kept = []
    if os.path.exists(path):
        with open(path) as f:
            text = f.read()
        for m in re.finditer(r"^## (.+?)\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M):
            if m.group(1).strip() not in GENERATED + RETIRED:
                kept.append("## " + m.group(1).strip() + "\n" + m.group(2).rstrip() + "\n")
    meta = res["meta"]
    mach = meta["machine"]
    head = [TITLE, "",
            "Generated by `bench.run`; regenerate with `.venv/bin/python -m bench.run --json-out bench.json "
            "--markdown docs/PERFORMANCE.md`. The machines are shared and noisy: compare ratios within one run, not "
            "absolute numbers across runs.", "",
            "- Command: `%s` (%s mode, %.1f min)" % (meta["command"], meta["mode"], meta.get("total_seconds", 0) / 60),
            "- Date: %s; commit %s%s" % (meta["date"], meta["commit"], "; this report rendered from its JSON with `%s`"
                                           % meta["rendered_with"] if meta.get("rendered_with") else ""),
            "- Machine: %s, %s cores, %.0f GB; %s; TensorFlow %s (oneDNN %s), tensorpack %s, Horovod %s, Python %s" % (
                mach.get("cpu", "?"), mach.get("cores"), mach.get("memory_gb", 0), ", ".join(mach.get("cpu_flags", [])),
                mach.get("tensorflow-cpu") or mach.get("tensorflow", "?"), mach.get("TF_ENABLE_ONEDNN_OPTS"),
                mach.get("tensorpack", "?"), mach.get("horovod", "?"), mach.get("python")),
            "- Load average (1 min) at start / end: %.2f / %.2f" % (meta["loadavg_start"][0],
                                                                    meta.get("loadavg_end", [0])[0])]
    if meta.get("merged_from"):
        head.append("- Merged from %d runs (%s): each measurement that several of them made comes from the run in "
                    "which its own matmul reference was fastest, i.e. least slowed by other load (rows only the first "
                    "run made, from it); pipeline, Horovod and the machine reference come from the first" % (
                        len(meta["merged_from"]),
                        "; ".join("`%s`, %s, commit %s" % (m["command"], m["date"], m["commit"])
                                  for m in meta["merged_from"])))
    if meta.get("flops_recounted_at"):
        head.append("- FLOPs (analytic) recounted with `--recount-flops` at commit %s" % meta["flops_recounted_at"])
    measured = [r for r in res["nets"] + res["keras"] + res["query_block"] if "matmul_cpu_per_wall_local" in r]
    busy = [r for r in measured if r.get("contended")]
    if measured:
        head.append("- Other load: %d of %d measurements ran while other processes took CPU time (their own matmul "
                    "reference reached cpu/wall < 0.8 x %s cores, or a matmul speed below 0.8 of the run's best; "
                    "marked † in the cpu/wall column). %s" % (
                        len(busy), len(measured), mach.get("cores"),
                        "Comparisons between rows use adjusted seconds (Conventions), which correct for that only "
                        "approximately: regenerate at a quiet moment." if busy else ""))
    if res["errors"]:
        head.append("- **%d measurement(s) failed** (see the JSON `errors`)" % len(res["errors"]))
    body = ["\n".join(head)]
    for title, content in _sections(res).items():
        body.append("## %s\n\n%s\n" % (title, content))
    body += kept
    text = "\n\n".join(b.rstrip("\n") for b in body) + "\n"
    from core.files import atomic_write     # the hand-written sections are kept only here
    atomic_write(path, lambda f: f.write(text), mode="w")
