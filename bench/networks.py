"""The networks family: what is measured (nets, batches, forward / attack / training steps and
their ablations) and the numbers derived from those rows (work per step, % of matmul, the
adversarial step against its parts, loop overhead, denoising overhead, the ablations' speed-ups,
low precision, the Keras reference).
"""
from bench.measure import adjusted, find


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
