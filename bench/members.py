"""AutoAttack's members against the network evaluations they make: how much of each member's
time is the network and how much is the attack's own work.

    python -m bench.members --load runs/demo/baseline/model-final.npz --limit 200 --json-out members.json

One ``eval.py --attack autoattack`` run gives every member's seconds, images attacked and
network evaluations per attacked image; then, in this process after it, the seconds of one
forward pass and of one forward pass with the input gradient of the same network, per image,
at each member's batch (the images it attacked per evaluation batch). A member's cost model:

- APGD-CE, APGD-T: every evaluation is a forward pass with its input gradient;
- FAB-T: per iteration a gradient and a prediction (attacks/fab.py ``queries_per_run``);
- Square: every evaluation is a forward pass.

Ratio = measured seconds / (images attacked x the modelled seconds per image): 1.0 means the
member is all network; the target is at most 1.25.
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

TARGET = 1.25
SECTION = "AutoAttack's members against their network evaluations"


def run_autoattack(load, limit, batch, epsilon, version):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "aa.json")
        argv = [sys.executable, os.path.join(REPO, "eval.py"), "--load", load, "--quiet", "--seed", "0",
                "--attack", "autoattack", "--untargeted", "--attack-iter", "0,100", "--aa-version", version,
                "--norm", "linf", "--attack-epsilon", "%g" % epsilon, "--limit", str(limit), "--batch", str(batch),
                "--json-out", out]
        proc = subprocess.run(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            raise RuntimeError("eval.py failed (%d):\n%s" % (proc.returncode, "\n".join(proc.stdout.splitlines()[-8:])))
        with open(out) as f:
            return json.load(f)


def per_image_seconds(arch_dict, batches, repeats=5):
    """{batch: (forward s, forward + input gradient s)} per image, the network of ``arch_dict``
    (random weights: the time of a pass does not depend on them)."""
    import core.compat  # noqa: F401
    import numpy as np
    import tensorflow as tf
    from tensorpack.models.registry import disable_layer_logging
    from tensorpack.tfutils.tower import TowerContext

    from model import network
    from nets import ArchSpec
    disable_layer_logging()
    tfv1 = tf.compat.v1
    arch = ArchSpec.from_dict(arch_dict).validate()
    out = {}
    for b in sorted(set(batches)):
        with tf.Graph().as_default():
            rng = np.random.RandomState(0)
            x = tf.constant(rng.uniform(-1, 1, (b, arch.image_size, arch.image_size, arch.image_channels))
                            .astype("float32"))
            with TowerContext("", is_training=False):
                logits = network(arch)(x)
            grad = tf.gradients(tf.reduce_sum(logits * tf.constant(rng.randn(b, arch.num_classes)
                                                                   .astype("float32"))), x)[0]
            with tfv1.Session() as sess:
                sess.run(tfv1.global_variables_initializer())
                timings = []
                for fetch in (logits.op, grad.op):
                    sess.run(fetch)
                    times = []
                    for _ in range(repeats):
                        start = time.perf_counter()
                        sess.run(fetch)
                        times.append(time.perf_counter() - start)
                    timings.append(statistics.median(times) / b)
        out[b] = tuple(timings)
    return out


def modelled_seconds(member, queries, forward, gradient):
    """Seconds per attacked image if the member were its network evaluations only."""
    if member.startswith("apgd"):
        return queries * gradient
    if member.startswith("fab"):
        return queries / 2.0 * (gradient + forward)
    if member == "square":
        return queries * forward
    raise ValueError("no cost model for member %r" % member)


def analyse(aa, batch, measure=per_image_seconds):
    row = aa["white_box"]["autoattack"]
    batches_run = math.ceil(row["num_images"] / float(batch))
    member_batch = {m: max(1, int(round(v["attacked"] / float(batches_run)))) for m, v in row["members"].items()
                    if v["attacked"]}
    per_image = measure(aa["arch"], member_batch.values())
    members = []
    for m, v in row["members"].items():
        if not v["attacked"]:
            continue
        fwd, grad = per_image[member_batch[m]]
        model = v["attacked"] * modelled_seconds(m, v["queries_per_attacked_image"], fwd, grad)
        members.append({"member": m, "attacked": v["attacked"], "queries_per_attacked_image":
                        v["queries_per_attacked_image"], "batch": member_batch[m], "seconds": v["seconds"],
                        "forward_seconds_per_image": fwd, "gradient_seconds_per_image": grad,
                        "network_seconds": model, "ratio": v["seconds"] / model,
                        "status": "pass" if v["seconds"] / model <= TARGET else "miss"})
    return {"images": row["num_images"], "seconds_wall": row.get("seconds_wall"),
            "seconds_per_image": row.get("seconds_wall", 0) / row["num_images"],
            "robust_accuracy": row["robust_accuracy"], "members": members, "target": TARGET}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--load", required=True, nargs="+", help="checkpoints (model-final.npz)")
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--epsilon", type=float, default=25.5)
    p.add_argument("--aa-version", default="standard")
    p.add_argument("--json-out")
    p.add_argument("--markdown", help="write (or replace) the section \"%s\" of this page" % SECTION)
    args = p.parse_args(argv)
    from core.files import PathError, check_outputs
    try:
        check_outputs([("--json-out", args.json_out), ("--markdown", args.markdown)], [("--load", args.load)])
    except PathError as e:
        print("bench.members: %s" % e, file=sys.stderr)
        return 2
    for path in args.load:
        if not os.path.exists(path):
            print("bench.members: %s does not exist: train it first (bash scripts/demo.sh)" % path, file=sys.stderr)
            return 2
    from core.provenance import git_commit, machine_label
    result = {"command": "python -m bench.members " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": machine_label(), "commit": git_commit(), "models": {}}
    for path in args.load:
        res = analyse(run_autoattack(path, args.limit, args.batch, args.epsilon, args.aa_version), args.batch)
        result["models"][path] = res
        print("%s: %d images, %.2f s per image" % (path, res["images"], res["seconds_per_image"]))
        for m in res["members"]:
            print("  %-8s attacked %4d  %7.0f evaluations/image  %7.1f s  network %7.1f s  ratio %.2f  %s" % (
                m["member"], m["attacked"], m["queries_per_attacked_image"], m["seconds"], m["network_seconds"],
                m["ratio"], m["status"]))
    if args.json_out:
        from core.files import atomic_write
        atomic_write(args.json_out, lambda f: json.dump(result, f, indent=1), mode="w")
    if args.markdown:
        from core.files import replace_markdown_section
        replace_markdown_section(args.markdown, SECTION, markdown(result))
    return 0


def markdown(result):
    lines = ["Command: `%s`. Machine: %s. Code: commit %s." % (result["command"], result["machine"], result["commit"]),
             "", "Each member's seconds against images attacked x its network evaluations per image x the seconds "
             "of one evaluation at the member's batch (APGD: forward + input gradient; FAB-T: half gradients, half "
             "predictions; Square: forward), measured by bench.members after the attack (which eval.py runs in "
             "a process of its own). Target: at most %.2fx." % TARGET, "",
             "| model | member | images attacked | evaluations per image | batch | seconds | network seconds | ratio "
             "| status |", "|---|---|---|---|---|---|---|---|---|"]
    for path, res in result["models"].items():
        name = os.path.basename(os.path.dirname(path)) or path
        for m in res["members"]:
            lines.append("| %s | %s | %d | %.0f | %d | %.1f | %.1f | %.2f | %s |" % (
                name, m["member"], m["attacked"], m["queries_per_attacked_image"], m["batch"], m["seconds"],
                m["network_seconds"], m["ratio"], m["status"]))
    lines.append("")
    for path, res in result["models"].items():
        lines.append("- %s: the ensemble %.2f s per image (%d images, robust accuracy %.1f%%)" % (
            os.path.basename(os.path.dirname(path)) or path, res["seconds_per_image"], res["images"],
            100 * res["robust_accuracy"]))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
