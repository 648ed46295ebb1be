#!/usr/bin/env python
"""Evaluate a model: white-box attacks (Sec. 6.1), black-box directories and the
all-or-nothing criterion (Sec. 6.2), and export for competition submission.

    python eval.py --load R152-Denoise.npz --data /imagenet --attack-iter 100
    python eval.py --load model.npz --attack-iter 10,100,1000 --plot-out curve.png
    horovodrun -np 16 python eval.py --load X101-DenoiseAll.npz --data /imagenet --attack-iter 1000
    python eval.py --load model.npz --eval-directory adv/ --prediction-file predictions.txt
    python eval.py --load model.npz --export-frozen model.pb

The architecture is read from the checkpoint (nets/infer.py) unless flags are given.
"""
import argparse
import json
import os
import sys


def parse_args(argv=None):
    from fdenoise.flags import (OneLineArgumentParser, add_arch_flags, add_attack_flags, iteration_list,
                                nonnegative_int, positive_int, seed_int)
    p = OneLineArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--load", required=True, help=".npz (released or from train.py) or a TF checkpoint")
    g = p.add_argument_group("data")
    g.add_argument("--data", default="/usr/share/datasets/fashion-mnist",
                   help="ImageNet root (val/) or the Fashion-MNIST directory")
    g.add_argument("--dataset", choices=("auto", "imagenet", "fashion-mnist"), default="auto")
    g.add_argument("--fake", action="store_true", help="random images of the right shapes")
    g.add_argument("--limit", type=positive_int, default=None, help="only the first N images")
    g.add_argument("--batch", type=positive_int, default=None)
    add_arch_flags(p)
    g = add_attack_flags(p)
    g.add_argument("--attack-iter", type=iteration_list, default="0,10",
                   help="comma-separated iteration counts, each evaluated (0 = clean)")
    g.add_argument("--restarts", type=positive_int, default=1, help="random restarts, keeping the best per image")
    g.add_argument("--seed", type=seed_int, default=0,
                   help="seed of every image's target class and random start: the draws depend only on it "
                        "and the image, so results do not change with --batch, the order or the number of ranks")
    g = p.add_argument_group("output")
    g.add_argument("--json-out", default=None, help="write the results as JSON")
    g.add_argument("--plot-out", default=None, help="robustness curve (PNG) when several strengths are given")
    g.add_argument("--per-image", default=None, metavar="FILE.npz",
                   help="also save every image's top-1/top-5 error and attack success per attack (with "
                        "--all-or-nothing: top-1 error per attacker and all-or-nothing), for paired "
                        "comparisons on the same images (white-box also under horovodrun: rank 0 writes the file one "
                        "process would)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.add_argument("--save-adversarial", default=None, metavar="DIR",
                   help="save the adversarial images as DIR/<attack>/<index>.png with DIR/labels.txt "
                        "(black-box transfer, Sec. 6.2; under horovodrun every rank writes its own images)")
    g = p.add_argument_group("black-box (Sec. 6.2)")
    g.add_argument("--eval-directory", default=None, help="predict every image in this directory")
    g.add_argument("--prediction-file", default=None, help="write 'filename,label' lines here")
    g.add_argument("--logits-file", default=None, help="also save filenames and logits (.npz)")
    g.add_argument("--all-or-nothing", nargs="+", default=None, metavar="DIR",
                   help="one directory of adversarial images per attacker; needs --labels")
    g.add_argument("--labels", default=None, help="'filename,label' (or 'filename label') true labels")
    g = p.add_argument_group("export")
    g.add_argument("--export-frozen", default=None, help="frozen GraphDef (.pb): input:0 -> logits:0")
    g.add_argument("--export-savedmodel", default=None, help="SavedModel directory (serving_default)")
    g.add_argument("--export-input-dtype", choices=("uint8", "float32"), default="uint8")
    return p.parse_args(argv)


def arch_flags_given(args):
    return any([args.arch, args.denoise, args.denoise_at, args.denoise_subsample, args.no_denoise_1x1,
                args.no_denoise_residual, args.width])


def resolve_arch(args, params, recorded, dataset):
    from tensorpack.utils import logger

    from fdenoise.flags import arch_from_args, default_data_format
    from nets.infer import infer_arch
    data_format = default_data_format() if args.data_format == "auto" else args.data_format
    if arch_flags_given(args):
        return arch_from_args(args, dataset)
    spec, _ = infer_arch({k: list(v.shape) for k, v in params.items()}, recorded, data_format,
                         log=lambda m: logger.warn(m))
    if args.denoise_query_block:
        import dataclasses
        spec = spec.replace(denoise=dataclasses.replace(spec.denoise, query_block=args.denoise_query_block))
    return spec


def read_labels(path):
    from data.errors import DataError
    labels = {}
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.replace(",", " ").split()
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                raise DataError("%s line %d is not 'filename,label': fix the labels file" % (path, lineno))
            labels[parts[0]] = int(parts[1])
    return labels


def attacker_keys(directories):
    """Short unique names for attacker directories: the last path component, or as many
    trailing components as it takes to tell them apart (``a/pgd10`` vs ``b/pgd10``)."""
    parts = [os.path.normpath(d).split(os.sep) for d in directories]
    for depth in range(1, max(len(p) for p in parts) + 1):
        keys = ["/".join(p[-depth:]) for p in parts]
        if len(set(keys)) == len(keys):
            return keys
    return [os.path.normpath(d) for d in directories]


def predict_directory(predictor, directory, batch, progress):
    """-> (filenames, logits) for every readable image in ``directory``."""
    import numpy as np
    from tqdm import tqdm

    from data.imagenet import black_box_directory_flow
    flow = black_box_directory_flow(directory, batch, image_size=predictor.arch.image_size)
    flow.reset_state()
    names, logits = [], []
    for images, filenames in tqdm(flow, disable=not progress, desc=os.path.basename(directory.rstrip("/")),
                                  unit="batch"):
        if predictor.arch.image_channels == 1 and images.shape[-1] == 3:
            import cv2
            images = np.stack([cv2.cvtColor(im, cv2.COLOR_BGR2GRAY) for im in images])[..., None]
        logits.append(predictor(images))
        names.extend(filenames)
    return names, (np.concatenate(logits) if logits else np.zeros((0, predictor.arch.num_classes)))


def main(argv=None):
    args = parse_args(argv)
    import numpy as np
    import tensorflow as tf
    from tensorpack.utils import logger

    import data
    from attacks import AttackError
    from data.errors import DataError
    from fdenoise import checkpoint, datasets, evaluation
    from fdenoise.checkpoint import CheckpointError
    from fdenoise.dist import rank_and_size, sum_now
    from fdenoise.flags import FlagError, attacker_from_args
    from nets import SpecError

    try:
        rank, size = rank_and_size()
        params, recorded = checkpoint.read_checkpoint(args.load)
        dataset = args.dataset
        black_box = args.eval_directory or args.all_or_nothing or args.export_frozen or args.export_savedmodel
        if dataset == "auto":
            if args.fake or black_box:
                dataset = "fashion-mnist" if params.get("conv0/W", np.zeros((7,))).shape[0] == 3 else "imagenet"
            else:
                dataset = data.detect_dataset(args.data)
        if args.per_image and black_box and not args.all_or_nothing:
            raise DataError("--per-image is for white-box or --all-or-nothing evaluation: for black-box "
                            "predictions use --logits-file")
        if args.per_image and black_box and size > 1:
            raise DataError("--per-image with --all-or-nothing runs in one process: drop horovodrun for it")
        arch = resolve_arch(args, params, recorded, dataset)
        if rank == 0:
            logger.info("Architecture: %s" % arch.name)
        out = {"checkpoint": os.path.abspath(args.load), "arch": arch.to_dict(), "workers": size}

        if black_box:
            dtype = tf.float32 if args.export_input_dtype == "float32" else tf.uint8
            predictor = evaluation.Predictor(arch, params, args.load, input_dtype=dtype)
            if args.export_frozen:
                predictor.export_frozen(args.export_frozen)
                print("wrote frozen graph %s (input:0 %s BGR 0..255 [N,%d,%d,%d] -> logits:0, probabilities:0, "
                      "classes:0)" % (args.export_frozen, args.export_input_dtype, arch.image_size,
                                      arch.image_size, arch.image_channels))
            if args.export_savedmodel:
                predictor.export_savedmodel(args.export_savedmodel)
                print("wrote SavedModel %s (signature serving_default: image -> logits, probabilities, classes)"
                      % args.export_savedmodel)
            batch = args.batch or 32
            if args.eval_directory:
                names, logits = predict_directory(predictor, args.eval_directory, batch, not args.quiet)
                preds = logits.argmax(axis=1) if len(names) else []
                lines = "".join("%s,%d\n" % (n, p) for n, p in zip(names, preds))
                if args.prediction_file:
                    checkpoint.atomic_write(args.prediction_file, lambda f: f.write(lines), mode="w")
                    print("wrote %d predictions to %s" % (len(names), args.prediction_file))
                else:
                    sys.stdout.write(lines)
                if args.logits_file:
                    checkpoint.atomic_write(args.logits_file, lambda f: np.savez(
                        f, filenames=np.array(names), logits=logits))
                out["predictions"] = len(names)
            if args.all_or_nothing:
                if not args.labels:
                    raise DataError("--all-or-nothing needs --labels FILE with the true 'filename,label' lines")
                truth = read_labels(args.labels)
                per_attacker = {}
                for directory, key in zip(args.all_or_nothing, attacker_keys(args.all_or_nothing)):
                    names, logits = predict_directory(predictor, directory, batch, not args.quiet)
                    per_attacker[key] = dict(
                        zip(names, (int(p) for p in logits.argmax(axis=1))))
                res = evaluation.all_or_nothing(truth, per_attacker)
                out["all_or_nothing"] = res
                if args.per_image:
                    evaluation.save_all_or_nothing_per_image(args.per_image, truth, per_attacker)
                    print("wrote every image's results to %s" % args.per_image)
                print("all-or-nothing accuracy over %d attackers: %.2f%% +- %.2f (%d images)" % (
                    len(per_attacker), 100 * res["all_or_nothing_accuracy"], 100 * res["all_or_nothing_ci95"],
                    res["num_images"]))
                for name, acc in res["per_attacker_accuracy"].items():
                    print("  %-30s %.2f%%" % (name, 100 * acc))
        else:
            iters = sorted({int(x) for x in args.attack_iter.split(",") if x.strip()})   # >= 0: iteration_list
            attackers, iters_by_name = {}, {}
            for n in iters:
                name = "clean" if n == 0 else "%s%d" % (args.attack, n)
                attackers[name] = attacker_from_args(args, dataset, n, restarts=args.restarts if n else 1,
                                                     seed=args.seed, per_image_seed=args.seed,
                                                     precision_flags=True)
                iters_by_name[name] = n
            source = datasets.open_dataset(dataset, args.data, fake=args.fake)
            batch = args.batch or (50 if dataset == "imagenet" else 250)
            flow = source.eval_flow(batch, rank, size, limit=args.limit)
            evaluator = evaluation.WhiteBoxEvaluator(arch, attackers, params, args.load, seed=args.seed)
            writer = None
            if args.save_adversarial:
                writer = evaluation.AdversarialWriter(args.save_adversarial, attackers, rank, size)
            recorder = evaluation.PerImageRecorder(args.per_image, attackers) if args.per_image else None
            results = evaluator.run(flow, total_batches=evaluation.ceil_div(
                source.num_eval(args.limit), batch * size), progress=(rank == 0 and not args.quiet),
                writer=writer, per_image=recorder)
            if (writer or recorder) and size > 1 and int(sum_now([data.skipped_files.num_files])[0]):
                raise DataError("--per-image and --save-adversarial under horovodrun cannot place the images "
                                "of the unreadable files named above in the images' order (no labels.txt or "
                                "per-image file was written): rerun in one process")
            if writer:
                written = writer.close()
                if rank == 0:
                    print("wrote %d adversarial images per attack to %s" % (written, args.save_adversarial))
            if recorder:
                recorder.close()
                if rank == 0:
                    print("wrote every image's results to %s" % args.per_image)
            out["white_box"] = results
            if rank == 0:
                print(evaluation.format_table(results, list(attackers)))
                if args.plot_out and len([n for n in iters if n > 0]) >= 1:
                    evaluation.plot_curve(results, iters_by_name, args.plot_out,
                                          "%s, eps=%g" % (arch.name, attackers[list(attackers)[-1]].epsilon))
                    print("wrote %s" % args.plot_out)
        skipped = data.skipped_files.num_files      # unreadable images, reported and skipped (data/images.py)
        if size > 1 and not black_box:
            skipped = int(sum_now([skipped])[0])
        out["skipped_images"] = skipped
        if skipped and rank == 0:
            print("eval.py: skipped %d unreadable image file(s), each named in a warning above" % skipped,
                  file=sys.stderr)
        if args.json_out and rank == 0:
            checkpoint.atomic_write(args.json_out, lambda f: f.write(json.dumps(out, indent=2, sort_keys=True)),
                                    mode="w")
    except (SpecError, AttackError, DataError, CheckpointError, FlagError) as e:
        print("eval.py: error: %s" % e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
