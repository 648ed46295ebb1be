"""Resuming a training run from its own log directory: which checkpoint, at which epoch,
and the checks that every rank resumes the same run with the same batch."""
import json
import os

import tensorflow as tf
from tensorpack.tfutils.sessinit import SaverRestore
from tensorpack.utils import logger

from core.dist import rank_and_size, sum_now
from model import checkpoint
from model.checkpoint import CheckpointError, compare, format_mismatch, is_model_variable, model_variables


class RunFinished(Exception):
    """Started again on a finished run: nothing to do (its final weights stay as they are)."""


# what a run leaves in its log directory (besides TensorBoard events and the log)
RUN_FILES = ("model-final.npz", "metrics.jsonl", "run.json", "stats.json", "arch.json", checkpoint.STATE_FILE)


def earlier_run(logdir):
    """The files of an earlier run in ``logdir`` (its record, final weights, state file)."""
    return [n for n in RUN_FILES if os.path.exists(os.path.join(logdir, n))]


def archive_earlier_run(logdir):
    """``--restart``: move every file of the earlier run into ``<logdir>/previous-<UTC time>/``
    (nothing is deleted); -> that directory, or None when there was nothing."""
    import datetime
    import shutil
    names = [n for n in os.listdir(logdir) if n in RUN_FILES or n.startswith(("model-", "events.out", "graph-"))
             and not os.path.isdir(os.path.join(logdir, n))]
    if not names:
        return None
    target = os.path.join(logdir, "previous-" + datetime.datetime.utcnow().strftime("%Y%m%dT%H%M%S"))
    os.makedirs(target)
    for n in names:
        shutil.move(os.path.join(logdir, n), os.path.join(target, n))
    return target


def find_resume_point(logdir, steps_per_epoch, is_chief=True, restart=False):
    """(checkpoint prefix, starting epoch) of the newest complete checkpoint in ``logdir``.

    The epoch comes from the checkpoint's own global step, so a run killed between writing
    the checkpoint and the epoch's statistics resumes consistently. A damaged checkpoint
    (short files after a machine crash) is skipped for an older one; the chief removes
    what an interrupted write left behind and points the ``checkpoint`` state file at the
    one chosen. Every rank makes the same choice from the same files (a shared log
    directory; ``check_ranks_agree_on_resume`` refuses anything else).

    A log directory that holds an earlier run (its state file, final weights or metrics) but
    no checkpoint to resume from is refused: training it again from scratch would write a
    second epoch 1 into its metrics and replace its final weights. ``restart``: the chief moves
    the earlier run's files aside first (``archive_earlier_run``) and training starts anew."""
    if not os.path.isdir(logdir):
        return None, 1
    if restart:
        if is_chief:
            moved = archive_earlier_run(logdir)
            if moved:
                logger.info("--restart: the earlier run's files are now in %s" % moved)
        sum_now([0.0])                      # every rank sees the directory after the move
        return None, 1
    if is_chief:
        checkpoint.remove_partial_checkpoint_files(logdir, log=logger.warn)
    prefix = checkpoint.latest_valid_checkpoint(logdir, log=logger.warn)
    if prefix is None:
        earlier = earlier_run(logdir)
        if earlier:
            raise CheckpointError(
                "--logdir %s holds an earlier run (%s) but no checkpoint to resume it from: pass --restart to train "
                "again from scratch (its files move to %s/previous-<time>/), or another --logdir" % (
                    logdir, ", ".join(earlier), logdir))
        return None, 1
    if is_chief and os.path.normpath(tf.train.latest_checkpoint(logdir) or "") != os.path.normpath(prefix):
        checkpoint.point_state_file_at(logdir, prefix)
    step = int(tf.train.load_checkpoint(prefix).get_tensor("global_step"))
    return prefix, step // steps_per_epoch + 1


def check_ranks_agree_on_resume(starting_epoch, logdir):
    """Every rank chooses its resume point from its own view of ``logdir``. Without a shared
    file system the chief would resume while the others start again, and the ranks would
    then disagree on the number of epochs and hang in their per-epoch allreduces; so all
    compare their choice first (one allreduce: n * sum(e^2) == sum(e)^2 iff all are equal)
    and stop together with one line."""
    _, size = rank_and_size()
    if size < 2:
        return
    total, squares = sum_now([starting_epoch, starting_epoch ** 2])
    if size * squares != total ** 2:
        raise checkpoint.CheckpointError(
            "the ranks see different checkpoints in --logdir %s (starting epochs average %.2f, this rank %d): "
            "give every rank the same shared log directory" % (logdir, total / size, starting_epoch))


def check_same_batch_on_resume(plan, workers):
    """A run resumes at epoch ``global_step // steps_per_epoch + 1`` with the learning rate
    of that step (Goyal et al.'s schedule is per image seen): a different total batch or
    epoch length, say after relaunching on fewer machines, would silently shift both. The
    recorded run.json must agree."""
    path = os.path.join(plan.logdir, "run.json")
    if not os.path.exists(path):
        return
    with open(path) as f:
        before = json.load(f)
    was = (before.get("workers"), before.get("batch_per_worker"), before.get("steps_per_epoch"))
    if None in was:
        return
    now = (workers, plan.batch_per_worker, plan.steps_per_epoch)
    if was[0] * was[1] != now[0] * now[1] or was[2] != now[2]:
        raise checkpoint.CheckpointError(
            "--logdir %s was trained with a total batch of %d (%d workers x %d) and %d steps per epoch, this run "
            "has %d (%d x %d) and %d: resume with the same total batch (--total-batch %d) and epoch length, or "
            "use a new --logdir" % (plan.logdir, was[0] * was[1], was[0], was[1], was[2], now[0] * now[1], now[0],
                                    now[1], now[2], was[0] * was[1]))


class ResumeRestore(SaverRestore):
    """tensorpack's SaverRestore for resuming a run from its own checkpoint, made strict:
    a checkpoint whose model variables do not fit the graph (a log directory reused with
    other --arch/--denoise flags) fails with the list instead of restoring a part."""

    def _setup_graph(self):
        reader = tf.train.load_checkpoint(self.path)
        shapes = {k: v for k, v in reader.get_variable_to_shape_map().items() if is_model_variable(k)}
        missing, unexpected, mismatched = compare(shapes, model_variables())
        if missing or unexpected or mismatched:
            raise CheckpointError(format_mismatch(
                self.path, missing, unexpected, mismatched,
                fix="it was written by a run with other flags: resume with that run's flags, or pass another "
                    "--logdir"))
        super()._setup_graph()
