"""Tensorpack callbacks of a training run: distributed evaluation, the non-finite loss
guard, the JSON-lines metrics log, and the ``.npz`` export of the final weights."""
import json
import math
import os

import numpy as np
import tensorflow as tf
from tensorpack.callbacks import Callback, Inferencer
from tensorpack.callbacks.monitor import MonitorBase
from tensorpack.utils import logger

from attacks import METRICS

from . import checkpoint
from .dist import SumAcrossRanks


def binomial_ci95(rate, n):
    """Half-width of the normal-approximation 95% confidence interval of a rate."""
    if n <= 0:
        return float("nan")
    return 1.96 * math.sqrt(max(rate * (1.0 - rate), 0.0) / n)


class DistributedClassificationStats(Inferencer):
    """Sums the per-image metrics (attacks.metrics) over this rank's shard of the data,
    then over all ranks with Horovod, so every rank reports the figures of the whole set.
    Reports ``<prefix>/top1_error`` etc. and ``<prefix>/num_images``."""

    def __init__(self, prefix, metrics=METRICS):
        self.prefix = prefix
        self.metrics = list(metrics)

    def _setup_graph(self):
        self._reduce = SumAcrossRanks(len(self.metrics) + 1, name="sum_" + self.prefix.replace("/", "_"))

    def _get_fetches(self):
        return self.metrics

    def _before_inference(self):
        self._sums = np.zeros(len(self.metrics) + 1, dtype=np.float64)

    def _on_fetches(self, outputs):
        for i, values in enumerate(outputs):
            self._sums[i] += float(np.sum(values))
        self._sums[-1] += len(outputs[0])

    def _after_inference(self):
        totals = self._reduce(self.trainer.sess, self._sums)
        n = int(totals[-1])
        out = {"%s/num_images" % self.prefix: n}
        for i, name in enumerate(self.metrics):
            out["%s/%s" % (self.prefix, name)] = totals[i] / max(n, 1)
        return out


class TrainingDiverged(RuntimeError):
    pass


class StopOnNonFiniteLoss(Callback):
    """Table 1 reports that removing the residual connection makes training diverge: a
    NaN or infinite loss stops the run at once, naming the step and the last good
    checkpoint (which the stop leaves intact)."""
    _chief_only = False

    def __init__(self, tensor_name="cost:0", checkpoint_dir=None):
        self.tensor_name = tensor_name
        self.checkpoint_dir = checkpoint_dir

    def _setup_graph(self):
        self._loss = self.graph.get_tensor_by_name(self.tensor_name)

    def _before_run(self, _):
        return tf.compat.v1.train.SessionRunArgs(fetches=self._loss)

    def _after_run(self, _, run_values):
        value = run_values.results
        if not np.isfinite(value):
            last = tf.train.latest_checkpoint(self.checkpoint_dir) if self.checkpoint_dir else None
            raise TrainingDiverged("the training loss became %s at step %d; last good checkpoint: %s. Lower the "
                                   "learning rate or check the architecture (Table 1: no residual diverges)" % (
                                       value, self.global_step + 1, last or "none written yet"))


class JSONLinesWriter(MonitorBase):
    """One JSON line of every scalar per epoch in ``metrics.jsonl`` (append-only, so a
    resumed run continues the same file)."""

    def __init__(self, path):
        self.path = path
        self._stats = {}

    def process_scalar(self, name, val):
        self._stats[name] = float(val)

    def _trigger_epoch(self):
        if not self._stats:
            return
        record = dict(self._stats, epoch_num=self.epoch_num, global_step=self.global_step)
        with open(self.path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self._stats = {}


class ExportNpz(Callback):
    """Writes the model weights in the released checkpoints' ``.npz`` format (with the
    architecture recorded) after training, atomically; loadable by eval.py."""

    def __init__(self, path, arch_dict, every_epoch=False):
        self.path = path
        self.arch_dict = arch_dict
        self.every_epoch = every_epoch

    def _export(self):
        params = checkpoint.session_params(self.trainer.sess, self.graph)
        checkpoint.save_npz(self.path, params, self.arch_dict)
        logger.info("Exported %d variables to %s" % (len(params), self.path))

    def _trigger_epoch(self):
        if self.every_epoch:
            self._export()

    def _after_train(self):
        self._export()
