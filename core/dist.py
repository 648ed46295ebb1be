"""Horovod, the distributed engine (never our own): who we are, and sums and gathers across
ranks. With no ``horovodrun`` every function is the identity of a world of one, and Horovod
is not even initialised."""
import os

import numpy as np
import tensorflow as tf


def under_horovodrun():
    """True when this process was started by ``horovodrun`` (Gloo) or ``mpirun``."""
    keys = ("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")
    return any(k in os.environ for k in keys)


def horovod():
    """The initialised ``horovod.tensorflow`` module (``hvd.init()`` once; in a plain
    ``python`` process Horovod 0.28 makes a world of one, so the same code runs everywhere).
    Horovod keeps whether it is initialised itself, so this module holds no state."""
    import horovod.tensorflow as hvd
    if not hvd.is_initialized():
        hvd.init()
    return hvd


def rank_and_size():
    """(rank, size): Horovod's when launched by horovodrun (or already initialised), else
    (0, 1) without touching it."""
    if not under_horovodrun():
        import sys
        hvd = sys.modules.get("horovod.tensorflow")
        if hvd is None or not hvd.is_initialized():
            return 0, 1
    hvd = horovod()
    return hvd.rank(), hvd.size()


class SumAcrossRanks:
    """Sums a float64 vector over all Horovod ranks with one allreduce op, built once in
    the current graph (before it is finalised) and run in any session of that graph.
    With one rank it is the identity and builds nothing."""

    def __init__(self, length, name="sum_across_ranks"):
        self.length = length
        _, size = rank_and_size()
        self._op = None
        if size > 1:
            hvd = horovod()
            self._input = tf.compat.v1.placeholder(tf.float64, [length], name=name + "_in")
            self._op = hvd.allreduce(self._input, op=hvd.Sum, name=name)

    def __call__(self, sess, values):
        values = np.asarray(values, dtype=np.float64)
        if self._op is None:
            return values
        return sess.run(self._op, feed_dict={self._input: values})


def sum_now(values):
    """Sum a float64 vector over all ranks outside any training graph (a throwaway graph
    and session; every rank must call it). The identity with one rank."""
    values = np.asarray(values, dtype=np.float64)
    if rank_and_size()[1] < 2:
        return values
    graph = tf.Graph()
    with graph.as_default():
        reduce = SumAcrossRanks(len(values), name="sum_now")
        with tf.compat.v1.Session(graph=graph) as sess:
            return reduce(sess, values)


def gather_strided_rows(rows):
    """Every rank's int32 rows [n_r, k] -> all images' rows in their global order, on every
    rank. Ranks read strided shards (data/sharding.py: rank r holds images r, r + size, ...),
    so row j of rank r is image r + j * size. Horovod's allgather, in a throwaway graph;
    every rank must call it. The identity with one rank."""
    rows = np.asarray(rows, dtype=np.int32)
    _, size = rank_and_size()
    if size < 2:
        return rows
    hvd = horovod()
    graph = tf.Graph()
    with graph.as_default():
        local = tf.compat.v1.placeholder(tf.int32, [None, rows.shape[1]], name="gather_in")
        gathered = hvd.allgather(local, name="gather_rows")
        counts = hvd.allgather(tf.shape(local)[:1], name="gather_counts")
        with tf.compat.v1.Session(graph=graph) as sess:
            everything, counts = sess.run([gathered, counts], feed_dict={local: rows})
    index = np.concatenate([r + size * np.arange(n) for r, n in enumerate(counts)])
    out = np.empty_like(everything)
    out[index] = everything
    return out
