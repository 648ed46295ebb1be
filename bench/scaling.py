"""The Horovod family: the measured allreduce of a net's gradients under ``horovodrun``, and
the model that projects it to many workers (ring allreduce, the paper's V100 step).
"""
import json
import os
import sys
import tempfile

from bench.measure import _run, adjusted

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
