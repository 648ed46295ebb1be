#!/usr/bin/env python
"""Adversarial training of feature-denoising networks (Sec. 5).

    horovodrun -np 128 -H ... python train.py --arch R152 --denoise nonlocal --data /imagenet
    python train.py                      # Fashion-MNIST, small net, one CPU machine
    python train.py --preset demo        # README's demo recipe

Every minibatch is replaced by its targeted PGD version built inside the training tower;
the SGD step sees adversarial images only. ``--attack-iter 0`` trains on clean images
(Table 3). The learning rate follows the total batch (Goyal et al.). A run resumes from
the newest checkpoint in its log directory when started again with the same command.
Every default comes from the preset (``--preset``, config/presets.py).
"""
import argparse
import os
import sys


def parse_args(argv=None):
    from config.flags import (DATASETS, OneLineArgumentParser, add_arch_flags, add_attack_flags, add_preset_flags,
                              epoch_list, iteration_list, nonnegative_float, nonnegative_int, positive_float,
                              positive_int, probability, seed_int)
    from config.methods import DEFAULT_GUARD_IMAGES, METHODS
    p = OneLineArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--data", default="/usr/share/datasets/fashion-mnist",
                   help="ImageNet root (train/ and val/) or the directory of the Fashion-MNIST IDX files")
    g.add_argument("--dataset", choices=("auto",) + DATASETS, default="auto",
                   help="auto: the preset's, else recognised from the directory's contents")
    g.add_argument("--validation", type=positive_int, default=None, metavar="N",
                   help="Fashion-MNIST: hold out the last N training images; train on the rest, and evaluate on "
                        "them (not the test set) during training")
    g.add_argument("--max-image-pixels", type=positive_int, default=None,
                   help="image files with more pixels than this are skipped, unread (default 100,000,000: far above "
                        "ImageNet's largest images)")
    g.add_argument("--fake", action="store_true", help="random data of the right shapes (benchmarks, tests)")
    g.add_argument("--loader-workers", type=positive_int, default=None,
                   help="decoding processes per rank (ImageNet)")
    add_preset_flags(p)
    add_arch_flags(p)
    g = p.add_argument_group("recipe (Sec. 5, Goyal et al.; defaults: the preset's)")
    g.add_argument("--batch", type=positive_int, default=None, help="images per worker (ImageNet 32)")
    g.add_argument("--total-batch", type=positive_int, default=None,
                   help="images per step over all workers, instead of --batch (Sec. 5: 4096 = 128 x 32); "
                        "must divide by the number of workers")
    g.add_argument("--epochs", type=positive_int, default=None, help="ImageNet 110")
    g.add_argument("--steps-per-epoch", type=positive_int, default=None,
                   help="default: training images / total batch")
    g.add_argument("--base-lr", type=nonnegative_float, default=None, help="learning rate per 256 images (0.1)")
    g.add_argument("--warmup-epochs", type=nonnegative_float, default=None, help="ImageNet 5")
    g.add_argument("--lr-decay-epochs", type=epoch_list, default=None, help="comma-separated; ImageNet 35,70,95")
    g.add_argument("--label-smoothing", type=nonnegative_float, default=None, help="Sec. 5: 0.1")
    g.add_argument("--weight-decay", type=nonnegative_float, default=None, help="1e-4")
    g.add_argument("--momentum", type=nonnegative_float, default=None, help="0.9")
    g = add_attack_flags(p)
    g.add_argument("--attack-iter", type=nonnegative_int, default=None,
                   help="PGD iterations in training (ImageNet 30; 0: clean)")
    g.add_argument("--prob-start-from-clean", type=probability, default=None, help="Sec. 5: 0.2 (20%% of batches)")
    g = p.add_argument_group("training method (model/methods.py; default pgd, the paper's)")
    g.add_argument("--method", choices=METHODS, default="pgd",
                   help="pgd: the paper's (Sec. 5; --attack-iter steps, targeted unless --untargeted); fgsm-rs: FGSM "
                        "from a random start (Wong et al., ICLR 2020); n-fgsm: noise of --n-fgsm-noise epsilon, a "
                        "step of epsilon, no projection (de Jorge et al., NeurIPS 2022); free: minibatch replays "
                        "with a carried perturbation (Shafahi et al., NeurIPS 2019); trades: CE + beta KL "
                        "(Zhang et al., ICML 2019). All but pgd are untargeted")
    g.add_argument("--fgsm-step", type=positive_float, default=None,
                   help="fgsm-rs: the step as a multiple of epsilon (default 1.25, Wong et al.)")
    g.add_argument("--n-fgsm-noise", type=nonnegative_float, default=None,
                   help="n-fgsm: the noise's half-width as a multiple of epsilon (default 2; 4 for wide nets at large "
                        "epsilon, de Jorge et al.)")
    g.add_argument("--free-replays", type=int, default=None,
                   help="free: replays m of every minibatch (default 8, Shafahi et al.); an epoch is still "
                        "--steps-per-epoch SGD steps, so it covers 1/m of the training images")
    g.add_argument("--trades-beta", type=float, default=None,
                   help="trades: beta of the KL term (default 6, Zhang et al.'s CIFAR-10 models; 1 to 10)")
    g.add_argument("--trades-steps", type=nonnegative_int, default=None,
                   help="trades: steps of the inner attack on the KL (default 10, Zhang et al.)")
    g = p.add_argument_group("catastrophic-overfitting guard (training/guard.py; Wong et al. 2020, Sec. 5.3)")
    g.add_argument("--guard", choices=("auto", "on", "off"), default="auto",
                   help="untargeted PGD-10 on --guard-images held-out images every --guard-every steps and at each "
                        "epoch's end; auto: on for fgsm-rs, n-fgsm and free, off for pgd and trades")
    g.add_argument("--guard-every", type=nonnegative_int, default=None,
                   help="steps between checks within an epoch (default: half an epoch; 0: epoch ends only)")
    g.add_argument("--guard-images", type=positive_int, default=None, help="default %d" % DEFAULT_GUARD_IMAGES)
    g.add_argument("--guard-margin", type=float, default=None,
                   help="a fall of more than this many points below the best accuracy so far is a collapse (default "
                        "20, Wong et al.'s); in (0, 100]")
    g.add_argument("--on-collapse", default="stop", metavar="stop|METHOD",
                   help="stop: exit 3 naming the step and the checkpoint kept; or a fallback to continue with from "
                        "that checkpoint: n-fgsm, fgsm-rs, trades, or pgd-K (PGD with K steps, untargeted)")
    g = p.add_argument_group("evaluation during training (defaults: the preset's)")
    g.add_argument("--eval-attack-iters", type=iteration_list, default=None,
                   help="evaluated every epoch (0 = clean; default 0,10)")
    g.add_argument("--eval-long-attack-iter", type=nonnegative_int, default=None,
                   help="evaluated every --eval-long-every epochs (default 100)")
    g.add_argument("--eval-long-every", type=positive_int, default=None, help="default 10")
    g.add_argument("--eval-long-last", type=nonnegative_int, default=None, help="... and in the last N epochs (1)")
    g.add_argument("--eval-limit", type=positive_int, default=None, help="evaluate on the first N images only")
    g.add_argument("--eval-batch", type=positive_int, default=None)
    g = p.add_argument_group("run")
    g.add_argument("--logdir", default=None, help="default: train_log/<arch name>")
    g.add_argument("--load", default=None, help="initialise from a .npz or TF checkpoint (must fit exactly)")
    g.add_argument("--keep-checkpoints", type=positive_int, default=None, help="default 3")
    g.add_argument("--restart", action="store_true",
                   help="train from scratch in --logdir even though it holds an earlier run (whose files are moved "
                        "to <logdir>/previous-<time>/); without it, a run resumes from its newest checkpoint and a "
                        "log directory with no checkpoint left is refused")
    g.add_argument("--seed", type=seed_int, default=None)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import tensorflow as tf

    from attacks import AttackError
    from config.flags import FlagError
    from data.errors import DataError
    from model.checkpoint import CheckpointError
    from nets import SpecError
    from training.callbacks import RanksDiverged, TrainingDiverged

    from core.files import PathError
    from core.interrupt import Interrupted, exit_on_signals
    from training.resume import RunFinished

    from training.guard import Collapsed

    logdir = None
    collapses = []
    try:
        with exit_on_signals():
            from config.methods import check_method_flags
            from training.trainer import train
            check_method_flags(args)
            args.attack = args.attack or "pgd"
            if not args.restart:
                # interrupted while going on with its fallback: the same command resumes the fallback
                from config.methods import recorded_fallback
                recorded = recorded_fallback(args.logdir, args.method, args.on_collapse)
                if recorded:
                    collapses = recorded
                    args = fallback_args(args)
            while True:
                # each attempt in a graph of its own: a collapse continued with a fallback method
                # builds the run again, resuming from the checkpoint the guard kept
                with tf.Graph().as_default():
                    job = training_job(args, collapses)
                    logdir = job["plan"].logdir
                    try:
                        train(job["plan"], job["arch"], job["train_attacker"], job["source"], extra_info=job["info"])
                        break
                    except Collapsed as e:
                        args = continue_after_collapse(args, e, collapses)
                        if args is None:
                            return 3
    except RunFinished as e:
        print("train.py: %s" % e, file=sys.stderr)
        return 0
    except Interrupted as e:
        print("train.py: %s; the last checkpoint in %s is intact: run the same command to resume" % (
            e, logdir or "the log directory"), file=sys.stderr)
        return e.status
    except (SpecError, AttackError, DataError, CheckpointError, FlagError, PathError, TrainingDiverged,
            RanksDiverged) as e:
        print("train.py: error: %s" % e, file=sys.stderr)
        return 3 if isinstance(e, (TrainingDiverged, RanksDiverged)) else 2
    except tf.errors.OpError as e:
        if "Horovod has been shut down" not in str(e):
            raise
        from model.checkpoint import latest_valid_checkpoint
        # a rank died or stopped answering: horovodrun ends the job (docs/RELIABILITY.md)
        last = latest_valid_checkpoint(logdir) if logdir and os.path.isdir(logdir) else None
        print("train.py: error: Horovod stopped the job because another rank failed or stopped responding (its "
              "error is above); the last checkpoint, %s, is intact: fix or replace the failed node and run the same "
              "command to resume" % (last or "none yet"), file=sys.stderr)
        return 4
    return 0


def continue_after_collapse(args, collapse, collapses):
    """``--on-collapse``: None after one line (stop), or the flags of the fallback method, which
    resumes from the checkpoint the guard kept (``collapses`` records what happened)."""
    from config.methods import fallback_method
    method, iterations = fallback_method(args.on_collapse)
    collapses.append({"step": collapse.step, "accuracy": collapse.accuracy, "best": collapse.best,
                      "checkpoint": collapse.checkpoint, "method": args.method,
                      "continued_with": None if method is None else args.on_collapse})
    if method is None:
        print("train.py: %s: rerun with --on-collapse n-fgsm (or pgd-2) to continue from it with a method that does "
              "not collapse, or train with a smaller --attack-epsilon" % collapse, file=sys.stderr)
        return None
    print("train.py: %s; continuing from it with --method %s" % (collapse, args.on_collapse), file=sys.stderr)
    return fallback_args(args)


def fallback_args(args):
    """The flags of ``--on-collapse``'s method, for going on from the checkpoint kept."""
    import copy

    from config.methods import fallback_method
    method, iterations = fallback_method(args.on_collapse)
    new = copy.copy(args)
    new.method, new.on_collapse = method, "stop"          # one fallback: a second collapse stops
    for name in ("fgsm_step", "n_fgsm_noise", "free_replays", "trades_beta", "trades_steps"):
        setattr(new, name, None)
    new.attack, new.attack_iter, new.prob_start_from_clean = "pgd", iterations, None
    new.untargeted = True
    new.guard = "on"
    return new


def training_job(args, collapses=()):
    """Everything a run needs, from the flags and the preset: the data source, the
    architecture, the training attacker and the plan (schedule, evaluations, log directory)."""
    import numpy as np
    import tensorflow as tf
    from tensorpack.utils import logger

    import data
    from config.flags import (arch_from_args, attacker_from_args, batch_per_worker, choose_preset, iterations,
                              or_preset, preset_dataset)
    from config.methods import check_resumed_method, guard_plan, training_method
    from core.dist import rank_and_size
    from core.files import check_outputs
    from core.provenance import git_commit
    from nets.complexity import complexity
    from training.schedule import LRSchedule
    from training.trainer import EvalPlan, TrainPlan

    rank, size = rank_and_size()
    dataset = args.dataset
    if dataset == "auto":
        dataset = preset_dataset(args) or ("fashion-mnist" if args.fake else data.detect_dataset(args.data))
    preset = choose_preset(args, dataset)
    seed = or_preset(args.seed, preset, "seed")
    if seed is not None:
        tf.compat.v1.set_random_seed(seed + rank)
        np.random.seed(seed + rank)
    batch = batch_per_worker(args.batch, args.total_batch, size, preset.batch)
    source = data.open_dataset(dataset, args.data, fake=args.fake, max_pixels=args.max_image_pixels,
                               validation=args.validation or 0)
    arch = arch_from_args(args, preset, image_size=source.image_size, num_classes=source.num_classes,
                          image_channels=source.image_channels)
    total_batch = batch * size
    # --attack-precision/--attack-xla: the training attack only; evaluations stay fp32
    method, train_attacker, method_record = training_method(args, preset, seed, total_batch, batch, rank)
    attack_iter = getattr(train_attacker, "num_iter", 0) or 0
    # Evaluations draw targets and starts per image from seed 0 (eval.py's default), so
    # every epoch and every run is measured against the same targets.
    evals = [EvalPlan("clean" if n == 0 else "pgd%d" % n, attacker_from_args(args, preset, n, per_image_seed=0))
             for n in iterations(or_preset(args.eval_attack_iters, preset, "eval_attack_iters"))]
    long_iter = or_preset(args.eval_long_attack_iter, preset, "eval_long_attack_iter")
    if long_iter:
        evals.append(EvalPlan("pgd%d" % long_iter, attacker_from_args(args, preset, long_iter, per_image_seed=0),
                              every=or_preset(args.eval_long_every, preset, "eval_long_every"),
                              last=or_preset(args.eval_long_last, preset, "eval_long_last")))
    steps = args.steps_per_epoch or preset.steps_per_epoch or max(1, source.num_train // total_batch)
    decay = preset.lr_decay_epochs if args.lr_decay_epochs is None else tuple(
        float(x) for x in args.lr_decay_epochs.split(",") if x.strip())
    schedule = LRSchedule(total_batch=total_batch, base_lr=or_preset(args.base_lr, preset, "base_lr"),
                          warmup_epochs=or_preset(args.warmup_epochs, preset, "warmup_epochs"), decay_epochs=decay)
    logdir = args.logdir or os.path.join("train_log", arch.name)
    check_outputs([("--logdir", logdir)], [("--load", args.load), ("--data", args.data)] if args.load else
                  [("--data", args.data)], directories=("--logdir",))
    if not args.restart and not collapses:       # a fallback after a collapse changes method on purpose
        check_resumed_method(logdir, method_record)
    if rank == 0:
        logger.set_logger_dir(logdir, action="k")
    plan = TrainPlan(logdir=logdir, epochs=args.epochs or preset.epochs, steps_per_epoch=steps,
                     batch_per_worker=batch, schedule=schedule,
                     label_smoothing=or_preset(args.label_smoothing, preset, "label_smoothing"),
                     weight_decay=or_preset(args.weight_decay, preset, "weight_decay"),
                     momentum=or_preset(args.momentum, preset, "momentum"),
                     keep_checkpoints=or_preset(args.keep_checkpoints, preset, "keep_checkpoints"), load=args.load,
                     evals=tuple(evals), eval_batch=args.eval_batch or preset.eval_batch,
                     eval_limit=args.eval_limit or preset.eval_limit, seed=seed, loader_workers=args.loader_workers,
                     restart=args.restart and not collapses, method=method,
                     guard=guard_plan(args, steps, method_record["epsilon"]),
                     training_record=dict(method_record, collapses=list(collapses)))
    if rank == 0:
        params, flops = complexity(arch)
        logger.info("Architecture %s: %.2fM parameters, %.3f GFLOPs (multiply-adds) per image; training "
                    "method %s; %d worker(s) x %d images, peak lr %.4g" % (
                        arch.name, params / 1e6, flops / 1e9, method.describe(), size, batch,
                        schedule.peak_lr))
    # run.json: the preset and every value this run used, whether from the preset or a flag
    settings = {"arch": arch.name, "batch": batch, "total_batch": total_batch, "epochs": plan.epochs,
                "steps_per_epoch": steps, "base_lr": schedule.base_lr, "warmup_epochs": schedule.warmup_epochs,
                "lr_decay_epochs": list(decay), "label_smoothing": plan.label_smoothing,
                "weight_decay": plan.weight_decay, "momentum": plan.momentum, "train_attack_iter": attack_iter,
                "prob_start_from_clean": getattr(train_attacker, "prob_start_from_clean", 0.0) if attack_iter else None,
                "epsilon": method_record["epsilon"], "norm": args.norm, "eval_batch": plan.eval_batch,
                "eval_limit": plan.eval_limit, "keep_checkpoints": plan.keep_checkpoints, "seed": seed,
                "validation": args.validation or 0}
    info = {"dataset": dataset, "data": args.data, "fake": args.fake, "preset": preset.name, "settings": settings,
            "commit": git_commit(), "train_attack": train_attacker.describe(), "method": plan.training_record,
            "passes_per_step": method.passes_per_step(),
            "eval_attacks": {e.name: e.attacker.describe() for e in evals}, "argv": sys.argv}
    return {"source": source, "arch": arch, "train_attacker": train_attacker, "plan": plan, "info": info}


if __name__ == "__main__":
    sys.exit(main())
