"""The trainer set-up of Sec. 5: tensorpack ``HorovodTrainer`` under horovodrun (gradients
averaged by allreduce, "synchronized SGD"), ``SimpleTrainer`` in a single process; the
same ModelDesc, callbacks and schedule either way."""
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Optional, Tuple

from tensorpack import HorovodTrainer, SimpleTrainer, TrainConfig, launch_train_with_config
from tensorpack.callbacks import (CallbackFactory, EnableCallbackIf, EstimatedTimeLeft, InferenceRunner,
                                  MergeAllSummaries, MovingAverageSummary, ProgressBar, RunUpdateOps, ScalarPrinter,
                                  TFEventWriter)
from tensorpack.callbacks.monitor import JSONWriter
from tensorpack.dataflow import ProxyDataFlow
from tensorpack.input_source import QueueInput
from tensorpack.utils import logger

from core.dist import horovod, rank_and_size, sum_now, under_horovodrun
from core.files import atomic_write
from model import AdvModel, checkpoint
from model.methods import FreeTraining

from . import faults
from .callbacks import (CheckpointSaver, DistributedClassificationStats, EpochBroadcast, ExportNpz, FaultInjection,
                        GatherFreePerturbation, JSONLinesWriter, RankWeightsCheck, SkippedImagesStats,
                        StopOnNonFiniteLoss, ThroughputStats)
from .guard import GUARD_TOWER, CollapseGuard, GuardTrigger
from .resume import (ResumeRestore, RunFinished, check_ranks_agree_on_resume, check_same_batch_on_resume,
                     find_resume_point)
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
class GuardPlan:
    """The catastrophic-overfitting guard (training/guard.py): ``attacker`` (untargeted
    PGD-10) on the first ``images`` evaluation images every ``every`` steps (0: at epoch ends
    only) and at each epoch's end; a fall of more than ``margin`` points is a collapse."""
    attacker: object
    every: int
    images: int
    margin: float


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
    eval_batch: int = 50
    eval_limit: Optional[int] = None
    seed: Optional[int] = None
    loader_workers: Optional[int] = None
    restart: bool = False            # train from scratch, moving an earlier run's files aside
    method: object = None            # model/methods.py; None: PGD with the train attacker (Sec. 5)
    guard: Optional[GuardPlan] = None
    training_record: Optional[dict] = None   # the method's record, kept in model-final.npz


class RepeatEach(ProxyDataFlow):
    """Every datapoint (a minibatch) of ``ds`` ``times`` times in a row: free training's
    replays (Shafahi et al. 2019, Algorithm 1)."""

    def __init__(self, ds, times):
        super().__init__(ds)
        self.times = int(times)

    def __len__(self):
        return len(self.ds) * self.times

    def __iter__(self):
        for dp in self.ds:
            for _ in range(self.times):
                yield dp


def make_trainer():
    if under_horovodrun():
        horovod()
        trainer = HorovodTrainer(average=True)
        # its broadcast of rank 0's variables at every epoch's end would run before the
        # epoch's callbacks, hiding any rank's drift from RankWeightsCheck: EpochBroadcast runs
        # it after the check (build_config)
        trainer.BROADCAST_EVERY_EPOCH = False
        return trainer
    return SimpleTrainer()


def build_config(plan, arch, train_attacker, source, rank, size):
    """The TrainConfig of a run on ``source`` (data/datasets.py): this rank's shard of its
    training data, and of its evaluation data for every evaluation (a fresh DataFlow each)."""
    is_chief = rank == 0
    train_flow = source.train_flow(plan.batch_per_worker, rank, size, seed=plan.seed, workers=plan.loader_workers)
    replays = getattr(plan.method, "replays", 1)
    if replays > 1:
        # free training (Shafahi et al.): each minibatch replayed m times in a row
        train_flow = RepeatEach(train_flow, replays)
    eval_attackers = {"eval_" + e.name: e.attacker for e in plan.evals}
    if plan.guard:
        eval_attackers[GUARD_TOWER] = plan.guard.attacker
    model = AdvModel(arch, train_attacker=train_attacker, eval_attackers=eval_attackers,
                     label_smoothing=plan.label_smoothing, weight_decay=plan.weight_decay,
                     momentum=plan.momentum, initial_lr=plan.schedule(0.0), method=plan.method)

    callbacks = [
        LearningRateSetter(plan.schedule, plan.steps_per_epoch),
        StopOnNonFiniteLoss(checkpoint_dir=plan.logdir),
        EstimatedTimeLeft(),
    ]
    if faults.enabled():
        callbacks.append(FaultInjection())
    # Epoch-end order matters. The rank check runs before the epoch is checkpointed, so a
    # run it stops leaves the last good checkpoint as the newest one; the evaluations (long
    # under PGD on ImageNet) run after it, so a kill during them loses no training; and
    # ExportNpz, last, never exports after an epoch whose checks or evaluations failed.
    # (Callbacks with collectives keep the same relative order on every rank.)
    callbacks.append(RankWeightsCheck())
    if size > 1:
        if isinstance(plan.method, FreeTraining):
            callbacks.append(GatherFreePerturbation())
        callbacks.append(EpochBroadcast())
    if plan.guard:
        # before the epoch's checkpoint: a collapse is found before it is written
        g = plan.guard
        runner = InferenceRunner(source.eval_flow(plan.eval_batch, rank, size, limit=g.images),
                                 [DistributedClassificationStats(GUARD_TOWER)],
                                 tower_name=GUARD_TOWER).set_chief_only(False)
        callbacks += [GuardTrigger(runner, g.every, plan.steps_per_epoch, timed=True),
                      GuardTrigger(CollapseGuard(plan.logdir, g.margin, source.num_eval(g.images)), g.every,
                                   plan.steps_per_epoch)]
    callbacks.append(ThroughputStats(plan.batch_per_worker * size, plan.method))
    if is_chief:
        callbacks.append(CheckpointSaver(max_to_keep=plan.keep_checkpoints, checkpoint_dir=plan.logdir))
    for ev in plan.evals:
        runner = InferenceRunner(source.eval_flow(plan.eval_batch, rank, size, limit=plan.eval_limit),
                                 [DistributedClassificationStats(ev.name)],
                                 tower_name="eval_" + ev.name).set_chief_only(False)

        def due(self, ev=ev):
            return self.epoch_num % ev.every == 0 or self.epoch_num > plan.epochs - ev.last

        callbacks.append(EnableCallbackIf(runner, due))
    callbacks.append(SkippedImagesStats(source.skipped))   # after the evaluations: it counts theirs too
    if is_chief:
        callbacks.append(ExportNpz(os.path.join(plan.logdir, "model-final.npz"), arch.to_dict(), dataset=source.name,
                                   training=plan.training_record))

    monitors = []
    if is_chief:
        monitors = [TFEventWriter(), JSONWriter(), ScalarPrinter(),
                    JSONLinesWriter(os.path.join(plan.logdir, "metrics.jsonl"))]

    session_init = None
    if plan.load:
        params, _ = checkpoint.read_checkpoint(plan.load)
        session_init = checkpoint.StrictRestore(params, plan.load)
    resume_prefix, starting_epoch = find_resume_point(plan.logdir, plan.steps_per_epoch, is_chief, plan.restart)
    check_ranks_agree_on_resume(starting_epoch, plan.logdir)
    if resume_prefix is not None:
        check_same_batch_on_resume(plan, rank_and_size()[1])
        # a run stopped between its last checkpoint and the export trains nothing and exports
        # that checkpoint's weights (ExportNpz); the chief's view decides for every rank
        if starting_epoch > plan.epochs and not sum_now(
                [float(is_chief and not os.path.exists(os.path.join(plan.logdir, "model-final.npz")))])[0]:
            raise RunFinished("the run in %s finished its %d epochs (%s): nothing to train; pass more --epochs to "
                              "go on from its last checkpoint, or --restart to train it again" % (
                                  plan.logdir, plan.epochs, resume_prefix))
        logger.info("Resuming from %s at epoch %d" % (resume_prefix, starting_epoch))
        session_init = ResumeRestore(resume_prefix)

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
    atomic_write(os.path.join(logdir, "run.json"),
                 lambda f: f.write(json.dumps(info, indent=2, sort_keys=True, default=str)), mode="w")
    checkpoint.save_arch_json(logdir, arch.to_dict())


def train(plan, arch, train_attacker, source, extra_info=None):
    """Adversarial training of ``arch`` on ``source`` (data/datasets.py) by ``plan``, with
    ``train_attacker`` in the training tower; ``extra_info`` joins run.json."""
    rank, size = rank_and_size()
    trainer = make_trainer()
    config = build_config(plan, arch, train_attacker, source, rank, size)
    # recorded once the session is initialised, so that a run refused at its start (say,
    # a log directory of another architecture) leaves the record of the run it holds
    config.callbacks.append(CallbackFactory(before_train=lambda _: write_run_info(
        plan.logdir, arch, plan, dict(extra_info or {}, workers=size))))
    try:
        launch_train_with_config(config, trainer)
    finally:
        wait_for_input_thread(config.data)


def wait_for_input_thread(input_source, timeout=30):
    """tensorpack's QueueInput decodes and enqueues in a daemon thread, which ends at its
    next enqueue once training has closed the session. A program that exits while the
    thread is inside OpenCV's decoder is aborted by Python's shutdown ("terminate called
    without an active exception", SIGABRT): a finished run would exit with status -6.
    So the thread is waited for first."""
    thread = getattr(input_source, "thread", None)
    if thread is not None and thread.is_alive():
        thread.join(timeout)
