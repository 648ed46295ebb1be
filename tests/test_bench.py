"""The benchmark runs on a tiny configuration and writes its JSON (no time is asserted)."""
import json

import pytest

from helpers import PYTHON, run


@pytest.mark.once
def test_bench_run_tiny_writes_json_and_markdown(tmp_path):
    """`python -m bench.run --tiny` (tiny nets, one process): every section in the JSON, the
    Markdown report regenerated with a section it does not generate kept."""
    md = tmp_path / "PERFORMANCE.md"
    md.write_text("# Old title\n\nold text\n\n## Networks\n\nold table\n\n"
                  "## bf16 attack steps\n\nretired section\n\n"
                  "## Mixed precision and XLA for the attack\n\nkept text\n")
    run([PYTHON, "-m", "bench.run", "--tiny", "--json-out", tmp_path / "bench.json", "--markdown", md], timeout=300)
    res = json.loads((tmp_path / "bench.json").read_text())
    for key in ("meta", "conventions", "reference", "complexity", "nets", "keras", "adv_step_ratio", "loop_overhead",
                "denoise_overhead", "bn_gradient_ablation", "median_gradient_ablation", "fused_ops_ablation",
                "dot_order", "pipeline",
                "query_block", "horovod",
                "mixed_precision", "targets", "errors"):
        assert key in res, key
    assert res["errors"] == []
    assert {"date", "commit", "command", "machine"} <= set(res["meta"])
    assert res["reference"]["gflops"] > 0
    whats = {(r["label"], r["what"]) for r in res["nets"]}
    assert {("S14-w4", w) for w in ("forward", "attack", "unrolled", "train_clean", "train_adv")} <= whats
    for r in res["nets"]:
        assert r["seconds"] > 0 and r["images_per_second"] > 0 and r["gflops"] > 0 and r["peak_rss_mb"] > 0
        assert 0 < r["fraction_of_matmul"]
    assert res["adv_step_ratio"][0]["ratio"] > 0
    assert res["loop_overhead"][0]["label"] == "S14-w4"
    assert res["bn_gradient_ablation"][0]["label"] == "S14-w4" and res["bn_gradient_ablation"][0]["speedup"] > 0
    median = res["median_gradient_ablation"]
    assert len(median) == 1 and median[0]["label"] == "S14-w4-median" and median[0]["speedup"] > 0
    fused = res["fused_ops_ablation"]
    assert len(fused) == 1 and fused[0]["label"] == "S14-w4-median" and fused[0]["speedup"] > 0
    assert res["denoise_overhead"] and all(d["flop_ratio"] > 1 for d in res["denoise_overhead"])
    blocks = [b for v in res["dot_order"].values() for b in v]
    assert blocks and all(b["cheaper"] for b in blocks)
    full, blocked = res["query_block"]
    assert full["query_block"] == 0 and blocked["query_block"] > 0
    assert blocked["max_rel_diff_y"] < 1e-5 and blocked["max_rel_diff_grad"] < 1e-4
    assert res["pipeline"]["images_per_second"] > 0
    assert res["horovod"] == {"skipped": True}
    # every precision/XLA variant next to the fp32 attack of the same net
    from bench.networks import LOW_PRECISION_ATTACKS
    variants = {(r["precision"], r["xla"]) for r in res["mixed_precision"]["rows"] if r["speedup"] > 0}
    assert variants == {(v.split("-")[0], v.endswith("-xla")) for v in LOW_PRECISION_ATTACKS}
    assert res["mixed_precision"]["status"] == "measured"
    assert {t["status"] for t in res["targets"]} <= {"pass", "miss", "not measured"}
    text = md.read_text()
    assert text.startswith("# Performance\n") and "old table" not in text and "Old title" not in text
    assert "## Targets" in text and "## Networks" in text and "S14-w4" in text
    assert text.count("## Fused denoising ops (ablation)") == 1 and text.count("## Median filter gradient") == 1
    assert text.count("## Mixed precision and XLA for the attack") == 1 and "kept text" in text
    assert "## Mixed-precision and XLA attack steps" in text and "retired section" not in text
    # Two runs merged: each row from the run where its own matmul reference was fastest.
    other = json.loads((tmp_path / "bench.json").read_text())
    row = next(r for r in other["nets"] if r["what"] == "forward")
    row["matmul_gflops_local"] *= 2
    row["seconds"] *= 3
    (tmp_path / "other.json").write_text(json.dumps(other))
    run([PYTHON, "-m", "bench.run", "--from-json", tmp_path / "bench.json", tmp_path / "other.json", "--json-out",
         tmp_path / "merged.json", "--markdown", md, "--recount-flops"], timeout=300)
    merged = json.loads((tmp_path / "merged.json").read_text())
    assert merged["meta"]["flops_recounted_at"]
    assert merged["complexity"]["S14-w4-nonlocal"]["batch_matmul_macs"] > 0
    assert merged["complexity"]["S14-w4"]["batch_matmul_macs"] == 0
    picked = next(r for r in merged["nets"] if (r["label"], r["batch"], r["what"]) ==
                  (row["label"], row["batch"], row["what"]))
    assert picked["seconds"] == row["seconds"] and len(merged["meta"]["merged_from"]) == 2
    assert sum(r["seconds"] == row["seconds"] for r in merged["nets"]) == 1     # the others from the first run
    assert "Merged from 2 runs" in md.read_text()


def test_scaling_model():
    from bench.scaling import SCALING_ASSUMPTIONS, ring_allreduce_seconds, scaling, v100_step_seconds
    # 52 h for 110 epochs of ImageNet at 128 x 32 images per step
    assert abs(v100_step_seconds() - 52 * 3600 / (110 * 1281167 / 4096)) < 1e-9
    assert ring_allreduce_seconds(1, 1e9, 1e9, 1e-3, 1) == 0
    # 2(n-1)/n x bytes / bandwidth + 2(n-1) x buffers x latency
    assert abs(ring_allreduce_seconds(4, 8e8, 1e9, 1e-3, 2) - (1.5 * 0.8 + 6 * 2 * 1e-3)) < 1e-12
    sc = scaling({"bytes": 240e6, "fusion_threshold_bytes": 128 * 2 ** 20, "seconds": 0.5}, 100.0)
    assert sc["fused_buffers"] == 2 and [r["workers"] for r in sc["rows"]] == [2, 8, 32, 128]
    eff = [r["efficiency_v100"] for r in sc["rows"]]
    assert all(0 < e < 1 for e in eff) and eff == sorted(eff, reverse=True)
    assert sc["assumptions"] == SCALING_ASSUMPTIONS


def test_members_cost_model_and_ratios():
    """bench.members: APGD evaluations are gradient passes, FAB's alternate gradient and
    prediction, Square's are forward passes; each member's batch is the images it attacked per
    evaluation batch; ratio = measured / modelled seconds."""
    from bench.members import analyse
    aa = {"arch": {"family": "small"}, "white_box": {"autoattack": {
        "num_images": 200, "seconds_wall": 100.0, "robust_accuracy": 0.5, "members": {
            "apgd-ce": {"attacked": 170, "queries_per_attacked_image": 101.0, "seconds": 17.17},
            "apgd-t": {"attacked": 110, "queries_per_attacked_image": 900.0, "seconds": 99.0},
            "fab-t": {"attacked": 108, "queries_per_attacked_image": 1800.0, "seconds": 1e9},
            "square": {"attacked": 108, "queries_per_attacked_image": 5001.0, "seconds": 54.01},
            "none": {"attacked": 0, "queries_per_attacked_image": 0.0, "seconds": 0.0}}}}}
    asked = []

    def measure(arch, batches):
        asked.extend(batches)
        return {b: (0.0001, 0.001) for b in batches}      # forward, forward + gradient, per image
    res = analyse(aa, batch=128, measure=measure)
    assert sorted(asked) == [54, 54, 55, 85]               # 2 evaluation batches of 128 for 200 images
    by = {m["member"]: m for m in res["members"]}
    assert set(by) == {"apgd-ce", "apgd-t", "fab-t", "square"}
    assert by["apgd-ce"]["network_seconds"] == pytest.approx(170 * 101 * 0.001)
    assert by["apgd-ce"]["ratio"] == pytest.approx(1.0) and by["apgd-ce"]["status"] == "pass"
    assert by["apgd-t"]["ratio"] == pytest.approx(99.0 / (110 * 900 * 0.001))
    assert by["fab-t"]["network_seconds"] == pytest.approx(108 * 900 * 0.0011) and by["fab-t"]["status"] == "miss"
    assert by["square"]["network_seconds"] == pytest.approx(108 * 5001 * 0.0001)
    assert res["seconds_per_image"] == pytest.approx(0.5)
    from bench.members import markdown
    page = markdown({"command": "c", "machine": "m", "commit": "x",
                     "models": {"runs/demo/baseline/model-final.npz": res}})
    assert "| baseline | fab-t | 108 | 1800 | 54 |" in page and "| miss |" in page
    assert "baseline: the ensemble 0.50 s per image (200 images, robust accuracy 50.0%)" in page


def test_members_and_projection_refuse_an_output_that_is_an_input(tmp_path):
    """One line and exit 2, before any work: an output that is the checkpoint or the timings read."""
    model = tmp_path / "model-final.npz"
    model.write_bytes(b"weights")
    proc = run([PYTHON, "-m", "bench.members", "--load", model, "--json-out", model], check=False)
    assert proc.returncode == 2 and "is the --load input" in proc.stdout and model.read_bytes() == b"weights"
    timings = tmp_path / "timings.json"
    timings.write_text("{}")
    proc = run([PYTHON, "-m", "experiments.projection", "--timings", timings, "--json-out", timings], check=False)
    assert proc.returncode == 2 and "is the --timings input" in proc.stdout and timings.read_text() == "{}"
