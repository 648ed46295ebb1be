"""Tensorpack callbacks of a training run: distributed evaluation, the non-finite loss
guard, the JSON-lines metrics log, and the ``.npz`` export of the final weights."""
import json
import os

import numpy as np
import tensorflow as tf
from tensorpack.callbacks import Callback, Inferencer, ModelSaver
from tensorpack.callbacks.monitor import MonitorBase
from tensorpack.utils import logger

from attacks import METRICS

from core.dist import SumAcrossRanks, horovod, rank_and_size
from model import checkpoint

from . import faults


class DistributedClassificationStats(Inferencer):
    """Sums the per-image metrics (attacks.metrics) over this rank's shard of the data,
    then over all ranks with Horovod, so every rank reports the figures of the whole set.
    Reports ``<prefix>/top1_error`` etc. and ``<prefix>/num_images``."""

    def __init__(self, prefix, metrics=METRICS):
        # (the per-image rates of attacks/metrics.py, and how many images had non-finite logits)
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
    architecture recorded) after training, atomically; loadable by eval.py.

    Only a run that reached its last epoch exports: tensorpack calls ``_after_train`` also
    when training fails, and a diverged (NaN) or interrupted run must not leave its weights
    behind as the final model (nor replace an earlier one)."""

    def __init__(self, path, arch_dict, every_epoch=False, dataset=None, training=None):
        self.path = path
        self.arch_dict = arch_dict
        self.dataset = dataset
        self.training = training
        self.every_epoch = every_epoch
        self._finished = False

    def _export(self):
        params = checkpoint.session_params(self.trainer.sess, self.graph)
        checkpoint.save_npz(self.path, params, self.arch_dict, self.dataset, self.training)
        logger.info("Exported %d variables to %s" % (len(params), self.path))

    def _before_train(self):
        # a finished run started again trains nothing and exports its checkpoint's weights
        self._finished = self.trainer.loop.starting_epoch > self.trainer.loop.max_epoch

    def _trigger_epoch(self):
        if self.epoch_num >= self.trainer.loop.max_epoch:
            self._finished = True
        if self.every_epoch:
            self._export()

    def _after_train(self):
        if self._finished:
            self._export()
        else:
            logger.warn("Training stopped before its last epoch: %s not written" % self.path)


class CheckpointSaver(ModelSaver):
    """tensorpack's ModelSaver (the checkpoints a run resumes from), with a failed save
    stopping the run. ModelSaver logs a failed save and trains on without checkpoints
    (a full disk's ResourceExhaustedError is among the errors it swallows), and an
    OutOfRangeError from the write (EFBIG, "File too large") reaches the trainer, which
    takes it for the end of the input and stops as if training had finished. Here any
    failure removes the write's partial files and raises CheckpointWriteError naming the
    step, the reason and the last good checkpoint, which the failed write leaves intact
    (TensorFlow writes to temporary files and renames them: model/checkpoint.py)."""

    def _setup_graph(self):
        super()._setup_graph()
        variables = set()
        for key in self.var_collections:
            variables.update(tf.compat.v1.get_collection(key))
        self._nbytes = sum(int(np.prod(v.shape.as_list())) * v.dtype.base_dtype.size for v in variables)

    def _before_train(self):
        """The graph file, once; a failed write removes what it left (``graph-*.meta.tmp*``)
        and stops the run before its first step, with one line."""
        try:
            with faults.during_graph_write():
                super()._before_train()
        except (OSError, tf.errors.OpError) as e:
            for name in os.listdir(self.checkpoint_dir):
                if name.startswith("graph-") and ".meta" in name and name != "graph-":
                    path = os.path.join(self.checkpoint_dir, name)
                    if ".tmp" in name or os.path.getsize(path) == 0:
                        os.unlink(path)
            last = checkpoint.latest_valid_checkpoint(self.checkpoint_dir)
            raise checkpoint.CheckpointWriteError(
                "could not write the graph file in %s (%s) before the first step; %s: free disk space (or fix the "
                "directory) and run the same command to %s" % (
                    self.checkpoint_dir, _write_error_reason(e, self.checkpoint_dir),
                    "the last good checkpoint, %s, is intact" % last if last else "no checkpoint was written yet",
                    "resume" if last else "start")) from None

    def _trigger(self):
        step = self.global_step
        try:
            with faults.during_save(step, self._nbytes):
                self.saver.save(tf.compat.v1.get_default_session(), self.path,
                                global_step=tf.compat.v1.train.get_global_step(), write_meta_graph=False)
        except (OSError, tf.errors.OpError) as e:
            checkpoint.remove_partial_checkpoint_files(self.checkpoint_dir, log=logger.warn)
            last = checkpoint.latest_valid_checkpoint(self.checkpoint_dir)
            raise checkpoint.CheckpointWriteError(
                "could not write the checkpoint of step %d in %s (%s); the last good checkpoint, %s, is intact: "
                "free disk space (or fix the directory) and run the same command to resume" % (
                    step, self.checkpoint_dir, _write_error_reason(e, self.checkpoint_dir),
                    last or "none (no checkpoint written yet)")) from None
        logger.info("Model saved to %s." % tf.train.latest_checkpoint(self.checkpoint_dir))


def _write_error_reason(error, directory):
    """The OS's words for a failed write ("No space left on device", "File too large")."""
    if isinstance(error, OSError):
        return error.strerror or str(error)
    lines = [x.strip() for x in getattr(error, "message", str(error)).splitlines() if x.strip()]
    for line in lines:
        if directory in line and "; " in line:
            return line.rsplit("; ", 1)[-1]
    return "%s: %s" % (type(error).__name__, lines[0] if lines else "")


class RanksDiverged(RuntimeError):
    pass


class RankWeightsCheck(Callback):
    """Sec. 5 trains with synchronized SGD: after Horovod's initial broadcast and with
    averaged gradients, every rank must hold the same weights, yet only the chief writes
    checkpoints. At the end of every epoch each rank takes, per trainable variable, an
    exact checksum (the integer sum of its float32 bit patterns, independent of summation
    order) and the float64 sum of its values; Horovod reduces both to their maximum and
    minimum over the ranks. Recorded in the metrics: ``ranks/variables_differing`` (0 when
    the ranks agree bit for bit) and ``ranks/weight_spread`` (the largest max - min of a
    variable's sum, relative to its sum of absolute values). Any difference is warned
    about; a relative spread above ``tolerance`` stops the run (RanksDiverged). With one
    process it builds and records nothing."""
    _chief_only = False

    def __init__(self, tolerance=1e-3):
        self.tolerance = tolerance

    def _setup_graph(self):
        _, self._size = rank_and_size()
        if self._size < 2:
            return
        hvd = horovod()
        variables = tf.compat.v1.trainable_variables()
        self._names = [v.op.name for v in variables]
        self._exact = np.array([v.dtype.base_dtype == tf.float32 for v in variables], dtype=bool)
        with tf.name_scope("rank_weights_check"):
            bits = tf.stack([tf.reduce_sum(tf.cast(tf.bitcast(tf.identity(v), tf.int32), tf.int64))
                             if v.dtype.base_dtype == tf.float32 else tf.constant(0, tf.int64)
                             for v in variables])
            sums = tf.stack([tf.reduce_sum(tf.cast(v, tf.float64)) for v in variables])
            abs_sums = tf.stack([tf.reduce_sum(tf.abs(tf.cast(v, tf.float64))) for v in variables])
            self._fetches = [hvd.allreduce(bits, op=hvd.Max, name="bits_max"),
                             hvd.allreduce(bits, op=hvd.Min, name="bits_min"),
                             hvd.allreduce(sums, op=hvd.Max, name="sums_max"),
                             hvd.allreduce(sums, op=hvd.Min, name="sums_min"), abs_sums]

    def measure(self, sess):
        """-> (names of the variables that differ between ranks, the largest relative spread,
        the variable that has it). A collective: every rank must call it."""
        bits_max, bits_min, sums_max, sums_min, abs_sums = sess.run(self._fetches)
        # float32 variables by their exact checksum (float64 sums of identical values could
        # still differ between machines of different kinds), others by their sums
        differing = np.flatnonzero(np.where(self._exact, bits_max != bits_min, sums_max != sums_min))
        relative = (sums_max - sums_min) / np.maximum(abs_sums, np.finfo(np.float64).tiny)
        worst = int(np.argmax(relative)) if len(relative) else 0
        return [self._names[i] for i in differing], float(relative[worst]) if len(relative) else 0.0, \
            self._names[worst] if self._names else None

    def judge(self, differing, spread, worst, when):
        """Warn about any difference; RanksDiverged above the tolerance."""
        if not differing:
            return
        message = ("%s the weights of %d of %d variables differ between the %d ranks (largest relative "
                   "difference %.3g, in %s)" % (when, len(differing), len(self._names), self._size, spread, worst))
        if spread > self.tolerance:
            raise RanksDiverged(message + ": the ranks no longer train one model; check that every rank runs the "
                                          "same code and flags, then resume from the last checkpoint")
        logger.warn(message)

    def _trigger_epoch(self):
        if self._size < 2:
            return
        differing, spread, worst = self.measure(self.trainer.sess)
        self.trainer.monitors.put_scalar("ranks/variables_differing", len(differing))
        self.trainer.monitors.put_scalar("ranks/weight_spread", spread)
        self.judge(differing, spread, worst, "after epoch %d" % self.epoch_num)


class SkippedImagesStats(Callback):
    """How many image files the input pipelines of this run skipped so far (unreadable,
    truncated, corrupt: data/images.py), summed over ranks, as ``data/skipped_images`` in
    the metrics of every epoch. Counts the files decoded in the training processes
    themselves (evaluation, and training with one loader worker); with several loader
    workers each worker process warns once per skipped file in the log. ``skipped``: the data
    source's counter (data/images.py's SkippedFiles)."""
    _chief_only = False

    def __init__(self, skipped):
        self.skipped = skipped

    def _setup_graph(self):
        self._reduce = SumAcrossRanks(1, name="sum_skipped_images")

    def _trigger_epoch(self):
        total = self._reduce(self.trainer.sess, [self.skipped.num_files])[0]
        self.trainer.monitors.put_scalar("data/skipped_images", int(total))


class FaultInjection(Callback):
    """The ``stall-after-step`` fault of training/faults.py (added only when FDENOISE_FAULT is set)."""
    _chief_only = False

    def _setup_graph(self):
        self._rank = rank_and_size()[0]

    def _trigger_step(self):
        if faults.planned("stall-after-step", self.global_step, self._rank):
            faults.stall(self.global_step, self._rank)


class ThroughputStats(Callback):
    """The training method's cost per SGD step in forward-pass units (model/methods.py) and the
    images per second it trains on, every epoch, to TensorBoard and metrics.jsonl
    (``method/passes_per_step``, ``method/images_per_second``)."""

    def __init__(self, total_batch, method):
        self.total_batch, self.method = int(total_batch), method
        self._start = None

    def _before_epoch(self):
        import time
        self._start = time.perf_counter()

    def _trigger_epoch(self):
        import time
        if self._start is None:
            return
        seconds = time.perf_counter() - self._start
        steps = self.trainer.steps_per_epoch
        self.trainer.monitors.put_scalar("method/passes_per_step", float(self.method.passes_per_step()))
        self.trainer.monitors.put_scalar("method/images_per_second", steps * self.total_batch / max(seconds, 1e-9))


class EpochBroadcast(Callback):
    """Under horovodrun, at each epoch's end: rank 0's global variables to every rank
    (tensorpack's HorovodTrainer broadcast, which make_trainer moves here from the start of the
    epoch's callbacks). After RankWeightsCheck, so that the check sees each rank's own weights,
    and after GatherFreePerturbation, so that no rank's perturbation rows are overwritten; before
    the guard and the evaluations, so that every rank evaluates with the chief's batch-norm
    statistics (which each rank's own batches updated)."""
    _chief_only = False

    def _trigger_epoch(self):
        if getattr(self.trainer, "_broadcast_op", None) is not None:
            self.trainer.broadcast(None)


class GatherFreePerturbation(Callback):
    """Free training under horovodrun: each rank updates only its own rows of the
    perturbation variable (model/methods.py); at each epoch's end, before the checkpoint, every
    rank's rows are gathered into every rank's copy, so the chief's checkpoint holds them all."""
    _chief_only = False

    def _setup_graph(self):
        from model.methods import FREE_PERTURBATION
        hvd = horovod()
        rank, size = rank_and_size()
        delta = [v for v in tf.compat.v1.global_variables() if v.op.name.endswith(FREE_PERTURBATION)][0]
        rows = delta.shape.as_list()[0] // size
        mine = delta[rank * rows:(rank + 1) * rows]
        self._op = tf.compat.v1.assign(delta, hvd.allgather(mine, name="gather_free_perturbation"))

    def _trigger_epoch(self):
        self.trainer.sess.run(self._op)
