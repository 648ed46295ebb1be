"""The targets of docs/PERFORMANCE.md, each pass or miss with its measured ratio, from the
derived numbers of a run.
"""
from bench.measure import find
from bench.networks import base_label


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
