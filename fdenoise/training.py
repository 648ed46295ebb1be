"""The trainer set-up of Sec. 5: tensorpack ``HorovodTrainer`` under horovodrun (gradients
averaged by allreduce, "synchronized SGD"), ``SimpleTrainer`` in a single process; the
same ModelDesc, callbacks and schedule either way."""
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Optional, Tuple

import tensorflow as tf
from tensorpack import HorovodTrainer, SimpleTrainer, TrainConfig, launch_train_with_config
from tensorpack.callbacks import (EnableCallbackIf, EstimatedTimeLeft, InferenceRunner, MergeAllSummaries,
                                  ModelSaver, MovingAverageSummary, ProgressBar, RunUpdateOps, ScalarPrinter,
                                  TFEventWriter)
from tensorpack.callbacks.monitor import JSONWriter
from tensorpack.input_source import QueueInput
from tensorpack.tfutils.sessinit import SaverRestore
from tensorpack.utils import logger

from . import checkpoint
from .callbacks import (DistributedClassificationStats, ExportNpz, JSONLinesWriter, StopOnNonFiniteLoss)
from .compat import under_horovodrun
from .dist import horovod, rank_and_size
from .model import AdvModel
from .schedule import LearningRateSetter, LRSchedule


@dataclass
class EvalPlan:
    """An evaluation during training: ``attacker`` on the eval data every ``every`` epochs
    and in the last ``last`` epochs (Sec. 6 strengths: clean, PGD-10, PGD-100)."""
    name: str
    attacker: object
    every: int = 1
    last: int = 0


@dataclass
class TrainPlan:
    logdir: str
    epochs: int
    steps_per_epoch: int
    batch_per_worker: int
    schedule: LRSchedule
    label_smoothing: float = 0.1
    weight_decay: float = 1e-4
    momentum: float = 0.9
    keep_checkpoints: int = 3
    load: Optional[str] = None
    evals: Tuple[EvalPlan, ...] = field(default_factory=tuple)


def make_trainer():
    if under_horovodrun():
        horovod()
        return HorovodTrainer(average=True)
    return SimpleTrainer()


def find_resume_point(logdir, steps_per_epoch):
    """(checkpoint prefix, starting epoch) of the newest checkpoint in ``logdir``.

    The epoch comes from the checkpoint's own global step, so a run killed between writing
    the checkpoint and the epoch's statistics resumes consistently."""
    prefix = tf.train.latest_checkpoint(logdir) if os.path.isdir(logdir) else None
    if prefix is None:
        return None, 1
    step = int(tf.train.load_checkpoint(prefix).get_tensor("global_step"))
    return prefix, step // steps_per_epoch + 1


def build_config(plan, arch, train_attacker, train_flow, eval_flow_fn, rank):
    """The TrainConfig of a run. ``eval_flow_fn()`` returns this rank's shard of the
    evaluation data (a fresh DataFlow per evaluation)."""
    is_chief = rank == 0
    model = AdvModel(arch, train_attacker=train_attacker,
                     eval_attackers={"eval_" + e.name: e.attacker for e in plan.evals},
                     label_smoothing=plan.label_smoothing, weight_decay=plan.weight_decay,
                     momentum=plan.momentum, initial_lr=plan.schedule(0.0))

    callbacks = [
        LearningRateSetter(plan.schedule, plan.steps_per_epoch),
        StopOnNonFiniteLoss(checkpoint_dir=plan.logdir),
        EstimatedTimeLeft(),
    ]
    if is_chief:
        callbacks += [
            ModelSaver(max_to_keep=plan.keep_checkpoints, checkpoint_dir=plan.logdir),
            ExportNpz(os.path.join(plan.logdir, "model-final.npz"), arch.to_dict()),
        ]
    for ev in plan.evals:
        runner = InferenceRunner(eval_flow_fn(), [DistributedClassificationStats(ev.name)],
                                 tower_name="eval_" + ev.name).set_chief_only(False)

        def due(self, ev=ev):
            return self.epoch_num % ev.every == 0 or self.epoch_num > plan.epochs - ev.last

        callbacks.append(EnableCallbackIf(runner, due))

    monitors = []
    if is_chief:
        monitors = [TFEventWriter(), JSONWriter(), ScalarPrinter(),
                    JSONLinesWriter(os.path.join(plan.logdir, "metrics.jsonl"))]

    session_init = None
    if plan.load:
        params, _ = checkpoint.read_checkpoint(plan.load)
        session_init = checkpoint.StrictRestore(params, plan.load)
    resume_prefix, starting_epoch = find_resume_point(plan.logdir, plan.steps_per_epoch)
    if resume_prefix is not None:
        logger.info("Resuming from %s at epoch %d" % (resume_prefix, starting_epoch))
        session_init = SaverRestore(resume_prefix)

    return TrainConfig(
        model=model, data=QueueInput(train_flow), callbacks=callbacks, monitors=monitors,
        # tensorpack's defaults (moving-average summaries, BN statistic updates, summaries)
        # plus a progress bar on the chief; the BN EMA updates must run on every rank.
        extra_callbacks=[MovingAverageSummary(), MergeAllSummaries(), RunUpdateOps()] + (
            [ProgressBar(["cost", "train_top1_error", "train_attack_success"])] if is_chief else []),
        steps_per_epoch=plan.steps_per_epoch, max_epoch=plan.epochs,
        starting_epoch=starting_epoch, session_init=session_init)


def write_run_info(logdir, arch, plan, extra):
    info = {"arch": arch.to_dict(), "epochs": plan.epochs, "steps_per_epoch": plan.steps_per_epoch,
            "batch_per_worker": plan.batch_per_worker, "schedule": asdict(plan.schedule)}
    info.update(extra)
    checkpoint.atomic_write(os.path.join(logdir, "run.json"),
                            lambda f: f.write(json.dumps(info, indent=2, sort_keys=True, default=str)), mode="w")
    checkpoint.save_arch_json(logdir, arch.to_dict())


def train(plan, arch, train_attacker, train_flow, eval_flow_fn, extra_info=None):
    rank, size = rank_and_size()
    trainer = make_trainer()
    if rank == 0:
        write_run_info(plan.logdir, arch, plan, dict(extra_info or {}, workers=size))
    config = build_config(plan, arch, train_attacker, train_flow, eval_flow_fn, rank)
    launch_train_with_config(config, trainer)
