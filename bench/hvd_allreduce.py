"""Run under ``horovodrun --gloo -np N``: the allreduce of one step's gradients.

One tensor per trainable variable of a network (``argv[1]``: a JSON file with the list of
their shapes, written by ``bench.run``; R152 there), each allreduced with ``hvd.allreduce(op=Average)`` as
``hvd.DistributedOptimizer`` does (Horovod fuses them into buffers of
``HOROVOD_FUSION_THRESHOLD`` bytes). Rank 0 prints ``BENCH_RESULT {json}``.

    horovodrun --gloo -np 2 -H localhost:2 python -m bench.hvd_allreduce shapes.json [repeats]
"""
import json
import os
import resource
import statistics
import sys
import time

import core.compat  # noqa: F401  (the TF2 workarounds, before TensorFlow loads)
import tensorflow as tf

tfv1 = tf.compat.v1


def main():
    with open(sys.argv[1]) as f:
        shapes = json.load(f)
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    import horovod.tensorflow as hvd
    hvd.init()
    with tf.Graph().as_default():
        grads = [tf.Variable(tf.random.normal(s, seed=hvd.rank() * 1000 + i), trainable=False)
                 for i, s in enumerate(shapes)]
        reduced = [hvd.allreduce(g, op=hvd.Average) for g in grads]
        # fetch a scalar that needs every reduced tensor: fetching a tf.group of the
        # allreduce ops took 0.3 ms for 240 MB here, i.e. it did not wait for the data
        step = tf.add_n([tf.reshape(r, [-1])[0] for r in reduced])
        barrier = hvd.allreduce(tf.constant(0.0), name="barrier")
        with tfv1.Session() as sess:
            sess.run(tfv1.global_variables_initializer())
            sess.run(barrier)
            for _ in range(2):
                sess.run(step)
            times = []
            for _ in range(repeats):
                sess.run(barrier)
                start = time.perf_counter()
                sess.run(step)
                times.append(time.perf_counter() - start)
            # all ranks' times: the step ends when the slowest rank is done
            times = sess.run(hvd.allreduce(tf.constant(times), op=hvd.Max))
    floats = sum(int(tf.TensorShape(s).num_elements()) for s in shapes)
    if hvd.rank() == 0:
        print("BENCH_RESULT " + json.dumps({
            "ranks": hvd.size(), "tensors": len(shapes), "floats": floats, "bytes": 4 * floats,
            "seconds": float(statistics.median(times)), "seconds_min": float(min(times)), "repeats": repeats,
            "fusion_threshold_bytes": int(os.environ.get("HOROVOD_FUSION_THRESHOLD", 128 * 2 ** 20)),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}), flush=True)


if __name__ == "__main__":
    main()
