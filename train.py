#!/usr/bin/env python
"""Adversarial training of feature-denoising networks (Sec. 5).

    horovodrun -np 128 -H ... python train.py --arch R152 --denoise nonlocal --data /imagenet
    python train.py                      # Fashion-MNIST, small net, one CPU machine

Every minibatch is replaced by its targeted PGD version built inside the training tower;
the SGD step sees adversarial images only. ``--attack-iter 0`` trains on clean images
(Table 3). The learning rate follows the total batch (Goyal et al.). A run resumes from
the newest checkpoint in its log directory when started again with the same command.
"""
import argparse
import os
import sys


def parse_args(argv=None):
    from fdenoise.flags import (OneLineArgumentParser, add_arch_flags, add_attack_flags, epoch_list, iteration_list,
                                nonnegative_float, nonnegative_int, positive_int, probability, seed_int)
    p = OneLineArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--data", default="/usr/share/datasets/fashion-mnist",
                   help="ImageNet root (train/ and val/) or the directory of the Fashion-MNIST IDX files")
    g.add_argument("--dataset", choices=("auto", "imagenet", "fashion-mnist"), default="auto",
                   help="auto: recognised from the directory's contents")
    g.add_argument("--fake", action="store_true", help="random data of the right shapes (benchmarks, tests)")
    g.add_argument("--loader-workers", type=positive_int, default=None,
                   help="decoding processes per rank (ImageNet)")
    add_arch_flags(p)
    g = p.add_argument_group("recipe (Sec. 5, Goyal et al.)")
    g.add_argument("--batch", type=positive_int, default=None, help="images per worker (ImageNet 32)")
    g.add_argument("--total-batch", type=positive_int, default=None,
                   help="images per step over all workers, instead of --batch (Sec. 5: 4096 = 128 x 32); "
                        "must divide by the number of workers")
    g.add_argument("--epochs", type=positive_int, default=None, help="ImageNet 110")
    g.add_argument("--steps-per-epoch", type=positive_int, default=None,
                   help="default: training images / total batch")
    g.add_argument("--base-lr", type=nonnegative_float, default=0.1, help="learning rate per 256 images")
    g.add_argument("--warmup-epochs", type=nonnegative_float, default=None, help="ImageNet 5")
    g.add_argument("--lr-decay-epochs", type=epoch_list, default=None, help="comma-separated; ImageNet 35,70,95")
    g.add_argument("--label-smoothing", type=nonnegative_float, default=0.1)
    g.add_argument("--weight-decay", type=nonnegative_float, default=1e-4)
    g.add_argument("--momentum", type=nonnegative_float, default=0.9)
    g = add_attack_flags(p)
    g.add_argument("--attack-iter", type=nonnegative_int, default=None,
                   help="PGD iterations in training (ImageNet 30; 0: clean)")
    g.add_argument("--prob-start-from-clean", type=probability, default=0.2, help="Sec. 5: 20%% of batches")
    g = p.add_argument_group("evaluation during training")
    g.add_argument("--eval-attack-iters", type=iteration_list, default="0,10",
                   help="evaluated every epoch (0 = clean)")
    g.add_argument("--eval-long-attack-iter", type=nonnegative_int, default=100,
                   help="evaluated every --eval-long-every epochs")
    g.add_argument("--eval-long-every", type=positive_int, default=10)
    g.add_argument("--eval-long-last", type=nonnegative_int, default=1, help="... and in the last N epochs")
    g.add_argument("--eval-limit", type=positive_int, default=None, help="evaluate on the first N images only")
    g.add_argument("--eval-batch", type=positive_int, default=None)
    g = p.add_argument_group("run")
    g.add_argument("--logdir", default=None, help="default: train_log/<arch name>")
    g.add_argument("--load", default=None, help="initialise from a .npz or TF checkpoint (must fit exactly)")
    g.add_argument("--keep-checkpoints", type=positive_int, default=3)
    g.add_argument("--seed", type=seed_int, default=None)
    return p.parse_args(argv)


# Recipes per data set: ImageNet is Sec. 5 verbatim; Fashion-MNIST is a short schedule
# for one CPU machine (documented in README), same shape: warm-up, step decays.
RECIPES = {
    "imagenet": dict(epochs=110, warmup_epochs=5.0, decay=(35.0, 70.0, 95.0), eval_batch=50),
    "fashion-mnist": dict(epochs=4, warmup_epochs=0.0, decay=(3.0,), eval_batch=250),
}


def main(argv=None):
    args = parse_args(argv)
    import numpy as np
    import tensorflow as tf
    from tensorpack.utils import logger

    from attacks import AttackError
    import data
    from data.errors import DataError
    from fdenoise import checkpoint, datasets
    from fdenoise.callbacks import RanksDiverged, TrainingDiverged
    from fdenoise.checkpoint import CheckpointError
    from fdenoise.flags import DATASET_DEFAULTS, FlagError, arch_from_args, attacker_from_args, batch_per_worker
    from fdenoise.schedule import LRSchedule
    from fdenoise.dist import rank_and_size
    from fdenoise.training import EvalPlan, TrainPlan, train
    from nets import SpecError

    logdir = None
    try:
        rank, size = rank_and_size()
        dataset = args.dataset
        if dataset == "auto":
            dataset = "fashion-mnist" if args.fake else data.detect_dataset(args.data)
        defaults, recipe = DATASET_DEFAULTS[dataset], RECIPES[dataset]
        if args.seed is not None:
            tf.compat.v1.set_random_seed(args.seed + rank)
            np.random.seed(args.seed + rank)
        batch = batch_per_worker(args.batch, args.total_batch, size, defaults["batch"])
        source = datasets.open_dataset(dataset, args.data, fake=args.fake)
        arch = arch_from_args(args, dataset, image_size=source.image_size,
                              num_classes=source.num_classes, image_channels=source.image_channels)
        attack_iter = defaults["train_attack_iter"] if args.attack_iter is None else args.attack_iter
        # --attack-precision/--attack-xla: the training attack only; evaluations stay fp32
        train_attacker = attacker_from_args(args, dataset, attack_iter, args.prob_start_from_clean,
                                            seed=args.seed, precision_flags=True)
        # Evaluations draw targets and starts per image from seed 0 (eval.py's default), so
        # every epoch and every run is measured against the same targets.
        evals = [EvalPlan("clean" if n == 0 else "pgd%d" % n, attacker_from_args(args, dataset, n, per_image_seed=0))
                 for n in sorted({int(x) for x in args.eval_attack_iters.split(",") if x.strip()})]
        if args.eval_long_attack_iter:
            evals.append(EvalPlan("pgd%d" % args.eval_long_attack_iter,
                                  attacker_from_args(args, dataset, args.eval_long_attack_iter, per_image_seed=0),
                                  every=args.eval_long_every, last=args.eval_long_last))
        total_batch = batch * size
        steps = args.steps_per_epoch or max(1, source.num_train // total_batch)
        decay = recipe["decay"] if args.lr_decay_epochs is None else tuple(
            float(x) for x in args.lr_decay_epochs.split(",") if x.strip())
        schedule = LRSchedule(total_batch=total_batch, base_lr=args.base_lr,
                              warmup_epochs=recipe["warmup_epochs"] if args.warmup_epochs is None
                              else args.warmup_epochs, decay_epochs=decay)
        logdir = args.logdir or os.path.join("train_log", arch.name)
        if rank == 0:
            logger.set_logger_dir(logdir, action="k")
        plan = TrainPlan(logdir=logdir, epochs=args.epochs or recipe["epochs"], steps_per_epoch=steps,
                         batch_per_worker=batch, schedule=schedule, label_smoothing=args.label_smoothing,
                         weight_decay=args.weight_decay, momentum=args.momentum,
                         keep_checkpoints=args.keep_checkpoints, load=args.load, evals=tuple(evals))
        eval_batch = args.eval_batch or recipe["eval_batch"]
        train_flow = source.train_flow(batch, rank, size, seed=args.seed, workers=args.loader_workers)

        def eval_flow_fn():
            return source.eval_flow(eval_batch, rank, size, limit=args.eval_limit)

        if rank == 0:
            from nets.complexity import complexity
            params, flops = complexity(arch)
            logger.info("Architecture %s: %.2fM parameters, %.3f GFLOPs (multiply-adds) per image; training "
                        "attack %s; %d worker(s) x %d images, peak lr %.4g" % (
                            arch.name, params / 1e6, flops / 1e9, train_attacker.describe(), size, batch,
                            schedule.peak_lr))
        train(plan, arch, train_attacker, train_flow, eval_flow_fn,
              extra_info={"dataset": dataset, "data": args.data, "fake": args.fake,
                          "train_attack": train_attacker.describe(),
                          "eval_attacks": {e.name: e.attacker.describe() for e in evals}, "argv": sys.argv})
    except (SpecError, AttackError, DataError, CheckpointError, FlagError, TrainingDiverged, RanksDiverged) as e:
        print("train.py: error: %s" % e, file=sys.stderr)
        return 3 if isinstance(e, (TrainingDiverged, RanksDiverged)) else 2
    except tf.errors.OpError as e:
        if "Horovod has been shut down" not in str(e):
            raise
        # a rank died or stopped answering: horovodrun ends the job (docs/RELIABILITY.md)
        last = checkpoint.latest_valid_checkpoint(logdir) if logdir and os.path.isdir(logdir) else None
        print("train.py: error: Horovod stopped the job because another rank failed or stopped responding (its "
              "error is above); the last checkpoint, %s, is intact: fix or replace the failed node and run the same "
              "command to resume" % (last or "none yet"), file=sys.stderr)
        return 4
    return 0


if __name__ == "__main__":
    sys.exit(main())
