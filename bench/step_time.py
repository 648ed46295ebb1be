"""Time one adversarial training step (PGD-k attack + SGD update) per architecture.

A first piece of the benchmark suite (issue 8): seconds per step, images per second, and
the achieved multiply-adds per second from the graph-counted FLOPs (nets/complexity.py).
Machines are shared and noisy: compare rows measured in the same run.

    python -m bench.step_time                          # small-image nets, batch 128, PGD-5
    python -m bench.step_time --ops none,nonlocal --json-out step.json
    TF_ENABLE_ONEDNN_OPTS=0 python -m bench.step_time  # without oneDNN (see fdenoise/compat.py)
"""
import argparse
import json
import os
import time

import fdenoise.compat  # noqa: F401  (before TensorFlow: oneDNN switch)
import numpy as np
import tensorflow as tf
from tensorpack.models.registry import disable_layer_logging
from tensorpack.tfutils.tower import TowerContext

from attacks import make_attacker
from fdenoise.model import AdvModel
from nets import ArchSpec, DenoiseSpec
from nets.complexity import complexity


def time_step(spec, batch, attack_iter, repeats):
    g = tf.Graph()
    with g.as_default():
        model = AdvModel(spec, make_attacker("pgd", attack_iter, 25.5, 25.5 / max(attack_iter, 1)))
        s, c = spec.image_size, spec.image_channels
        image = tf.compat.v1.placeholder(tf.uint8, [None, s, s, c])
        label = tf.compat.v1.placeholder(tf.int32, [None])
        with TowerContext("", is_training=True):
            cost = model.build_graph(image, label)
        train_op = model.optimizer().minimize(cost)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            rng = np.random.RandomState(0)
            feed = {image: rng.randint(0, 256, (batch, s, s, c)).astype("uint8"),
                    label: rng.randint(0, spec.num_classes, batch).astype("int32")}
            sess.run(train_op, feed)                       # warm-up
            start = time.perf_counter()
            for _ in range(repeats):
                sess.run(train_op, feed)
            return (time.perf_counter() - start) / repeats


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ops", default="none,nonlocal-dot,nonlocal,mean,median,bilateral")
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--attack-iter", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json-out", default=None)
    args = p.parse_args()
    disable_layer_logging()
    rows = []
    for op in args.ops.split(","):
        spec = ArchSpec("small", 14, num_classes=10, image_size=28, image_channels=1, width=args.width,
                        denoise=DenoiseSpec(None if op == "none" else op))
        _, flops = complexity(spec)
        sec = time_step(spec, args.batch, args.attack_iter, args.repeats)
        # bench.run's CONVENTIONS: an attack step (forward + input gradient) ~ 2 forward
        # passes, the SGD update (forward + input and weight gradients) ~ 3
        gmacs = flops * args.batch * (2 * args.attack_iter + 3) / sec / 1e9
        row = {"arch": spec.name, "batch": args.batch, "attack_iter": args.attack_iter, "seconds_per_step": sec,
               "images_per_second": args.batch / sec, "approx_gmacs_per_second": gmacs,
               "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS")}
        rows.append(row)
        print("%-24s %7.3f s/step  %7.1f img/s  ~%5.1f GMAC/s" % (spec.name, sec, args.batch / sec, gmacs), flush=True)
    if args.json_out:
        from fdenoise.checkpoint import atomic_write
        atomic_write(args.json_out, lambda f: json.dump(rows, f, indent=2), mode="w")


if __name__ == "__main__":
    main()
