#!/usr/bin/env python
"""Evaluate a model: white-box attacks (Sec. 6.1), black-box directories and the
all-or-nothing criterion (Sec. 6.2), and export for competition submission.

    python eval.py --load R152-Denoise.npz --data /imagenet --attack-iter 100
    python eval.py --load model.npz --attack-iter 10,100,1000 --plot-out curve.png
    horovodrun -np 16 python eval.py --load X101-DenoiseAll.npz --data /imagenet --attack-iter 1000
    python eval.py --load model.npz --eval-directory adv/ --prediction-file predictions.txt
    python eval.py --load model.npz --export-frozen model.pb
    python eval.py --load model.npz --export-onnx model.onnx

The architecture is read from the checkpoint (nets/infer.py) unless flags are given; every
other default comes from the preset (``--preset``, config/presets.py).
"""
import argparse
import os
import sys

# the exit status of an audit that ran and found a failing check (bad input is 2)
AUDIT_FAILED = 3


def parse_args(argv=None):
    from attacks import AA_VERSIONS
    from evaluation.audit import MIN_AUDIT_IMAGES
    from config.flags import (DATASETS, OneLineArgumentParser, add_arch_flags, add_attack_flags, add_preset_flags,
                              iteration_list, positive_int, seed_int)
    p = OneLineArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--load", required=True, help=".npz (released or from train.py) or a TF checkpoint")
    g = p.add_argument_group("data")
    g.add_argument("--data", default="/usr/share/datasets/fashion-mnist",
                   help="ImageNet root (val/) or the Fashion-MNIST directory")
    g.add_argument("--dataset", choices=("auto",) + DATASETS, default="auto",
                   help="auto: the preset's, else the one the checkpoint records, else recognised from --data")
    g.add_argument("--validation", type=positive_int, default=None, metavar="N",
                   help="Fashion-MNIST: evaluate on the last N training images (held out by train.py --validation "
                        "N) instead of the test set")
    g.add_argument("--max-image-pixels", type=positive_int, default=None,
                   help="image files with more pixels than this are skipped, unread (default 100,000,000: far above "
                        "ImageNet's largest images)")
    g.add_argument("--fake", action="store_true", help="random images of the right shapes")
    g.add_argument("--limit", type=positive_int, default=None, help="only the first N images")
    g.add_argument("--batch", type=positive_int, default=None, help="default: the preset's (ImageNet 50, "
                                                                    "Fashion-MNIST 250; black-box 32)")
    add_preset_flags(p)
    add_arch_flags(p)
    g = add_attack_flags(p, evaluation=True)
    g.add_argument("--attack-iter", type=iteration_list, default=None,
                   help="comma-separated iteration counts, each evaluated (0 = clean; default 0,10)")
    g.add_argument("--restarts", type=positive_int, default=None,
                   help="random restarts, keeping the worst case per image (default 1): pgd, apgd-*, fab, fab-t "
                        "(per target), square; with --attack autoattack, the restarts of APGD-CE, APGD-DLR and FAB "
                        "in the plus and custom versions (default 5, the authors'); refused by attacks without a "
                        "random start (fgsm, ifgsm, mifgsm) and by the standard and rand versions")
    g.add_argument("--aa-version", choices=AA_VERSIONS, default=None,
                   help="--attack autoattack's version, as its authors define it (default standard): standard "
                        "(APGD-CE, APGD-T, FAB-T, Square, each once), plus (APGD-CE and APGD-DLR with 5 restarts, "
                        "FAB with 5, Square, APGD-T, FAB-T), rand (APGD-CE and APGD-DLR with EOT over 20 draws, for "
                        "randomised defenses), custom (the members of --aa-attacks)")
    g.add_argument("--aa-attacks", default=None, metavar="LIST",
                   help="--aa-version custom: comma-separated members in the order they run, from apgd-ce, "
                        "apgd-dlr, apgd-t, fab, fab-t, square (e.g. apgd-ce,apgd-t)")
    g.add_argument("--square-queries", type=positive_int, default=None,
                   help="Square's query budget inside --attack autoattack (default 5000, with AutoAttack's "
                        "unrescaled window schedule; --attack square takes its budget from --attack-iter)")
    g.add_argument("--seed", type=seed_int, default=None,
                   help="seed of every image's target class and random start (default 0): the draws depend only "
                        "on it and the image, so results do not change with --batch, the order or the number of "
                        "ranks")
    g = p.add_argument_group("gradient-masking audit (Carlini et al. 2019)")
    g.add_argument("--audit", action="store_true",
                   help="run the audit's checks on the first --limit images (epsilon sweep, iterations and restarts, "
                        "Square and transfer against white-box, finite gradients, BPDA per denoising op, determinism) "
                        "and write pass/fail with a line per check to --json-out; exit status 3 if a check fails "
                        "(fewer than %d images fail them all: its paired tests cannot detect anything below)"
                        % MIN_AUDIT_IMAGES)
    g.add_argument("--audit-iter", type=positive_int, default=None,
                   help="the audit's attack iterations (default 100; at least 2: it compares a run of half as many)")
    g.add_argument("--audit-queries", type=positive_int, default=None,
                   help="the audit's Square query budget (default 5000)")
    g.add_argument("--audit-transfer", nargs="+", default=None, metavar="SET",
                   help="--save-adversarial sets (attack directories DIR/<attack>/, or .npz files) made from the same "
                        "first images at the same epsilon, compared image by image with the white-box attacks")
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
    g.add_argument("--export-onnx", default=None, metavar="FILE.onnx",
                   help="ONNX model (tf2onnx, opset 15): input float32 BGR 0..255 [N,S,S,C] -> logits, to run it and "
                        "the reference AutoAttack in PyTorch (docs/ROBUSTNESS.md); needs pip install -e '.[onnx]'")
    g.add_argument("--export-savedmodel", default=None, help="SavedModel directory (serving_default)")
    g.add_argument("--export-input-dtype", choices=("uint8", "float32"), default="uint8")
    args = p.parse_args(argv)
    check_job_flags(args)
    args.attack = args.attack or "pgd"
    args.audit_iter = args.audit_iter or 100
    args.audit_queries = args.audit_queries or 5000
    return args


def _given(args, names):
    """The flags among ``names`` (attribute names) that were given: not None, not False."""
    return ["--" + n.replace("_", "-") for n in names if getattr(args, n) not in (None, False)]


# what each job reads; a flag outside it is refused with the job's name rather than dropped
WHITE_BOX_ONLY = ("attack", "attack_iter", "restarts", "untargeted", "attack_step_size", "attack_loss", "eot",
                  "aa_version", "aa_attacks", "square_queries", "per_image", "save_adversarial", "plot_out")
AUDIT_ONLY = ("audit_iter", "audit_queries", "audit_transfer")


def check_job_flags(args):
    """One line and exit 2 for a flag the chosen job does not use (before any work)."""
    def refuse(flags, job, fix):
        if flags:
            sys.stderr.write("eval.py: error: %s %s not used by %s: %s\n" % (
                ", ".join(flags), "is" if len(flags) == 1 else "are", job, fix))
            sys.exit(2)
    if not args.audit:
        refuse(_given(args, AUDIT_ONLY), "this run (they are the audit's)", "add --audit or drop them")
    if args.audit:
        refuse(_given(args, [n for n in WHITE_BOX_ONLY if n != "untargeted"]), "--audit (it runs its own attacks: "
               "APGD-CE, PGD with restarts, Square, BPDA)", "drop them, or run them as a separate eval.py command")
        if args.audit_iter is not None and args.audit_iter < 2:
            sys.stderr.write("eval.py: error: --audit-iter %d: the audit compares its attack with a run of a tenth as "
                             "many iterations, so it needs at least 2: pass --audit-iter 2 or more (default 100)\n"
                             % args.audit_iter)
            sys.exit(2)
        return
    if black_box_mode(args):
        refuse(_given(args, [n for n in WHITE_BOX_ONLY if n != "per_image"]),
               "black-box prediction and export (no attack runs)", "drop them, or run the attack as a separate "
               "eval.py command")
        return
    attack = args.attack or "pgd"
    if attack != "autoattack":
        refuse(_given(args, ("aa_version", "aa_attacks", "square_queries")), "--attack %s" % attack,
               "they set up --attack autoattack: drop them or pass --attack autoattack")
    else:
        refuse(_given(args, ("plot_out",)), "--attack autoattack (one strength, no curve to plot)",
               "drop --plot-out")
        if args.aa_attacks and args.aa_version != "custom":
            refuse(["--aa-attacks"], "--aa-version %s" % (args.aa_version or "standard"),
                   "it chooses the members of --aa-version custom: pass --aa-version custom or drop it")


def black_box_mode(args):
    return bool(args.eval_directory or args.all_or_nothing or args.export_frozen or args.export_savedmodel
                or args.export_onnx)


def choose_dataset(args, recorded, needed):
    """The data set: --dataset, the preset's, the one the checkpoint records, or (white-box)
    the one --data holds. Never guessed from the weights. None when nothing needs one."""
    import data
    from config.flags import FlagError, preset_dataset
    named = None if args.dataset == "auto" else args.dataset
    named = named or preset_dataset(args)
    if named:
        return named
    if not black_box_mode(args) and not args.fake:
        found = data.detect_dataset(args.data)
        return found
    if recorded:
        return recorded
    if needed:
        raise FlagError("the checkpoint does not record its data set: pass --dataset imagenet or --dataset "
                        "fashion-mnist (or --preset)")
    return None


def resolve_arch(args, params, recorded_arch, preset):
    """The architecture: from the flags (with the preset's defaults) when any is given, else
    from the checkpoint's record or its variables (nets/infer.py)."""
    import dataclasses

    from tensorpack.utils import logger

    from config.flags import arch_flags_given, arch_from_args, data_format_of
    from nets.infer import infer_arch
    if arch_flags_given(args):
        return arch_from_args(args, preset)
    spec, _ = infer_arch({k: list(v.shape) for k, v in params.items()}, recorded_arch, data_format_of(args),
                         log=lambda m: logger.warn(m))
    if args.denoise_query_block:
        spec = spec.replace(denoise=dataclasses.replace(spec.denoise, query_block=args.denoise_query_block))
    return spec


OUTPUTS = ("json_out", "plot_out", "per_image", "prediction_file", "logits_file", "export_frozen",
           "export_savedmodel", "export_onnx", "save_adversarial")
OUTPUT_DIRECTORIES = ("--export-savedmodel", "--save-adversarial")
INPUTS = ("load", "data", "labels", "eval_directory", "all_or_nothing", "audit_transfer")


def check_paths(args):
    """Every output writable and none an input, before any work (core/files.py); the
    directories a run creates whole must not exist yet (or be empty)."""
    from core.files import PathError, check_outputs
    flag = lambda name: "--" + name.replace("_", "-")  # noqa: E731
    check_outputs([(flag(n), getattr(args, n)) for n in OUTPUTS],
                  [(flag(n), getattr(args, n)) for n in INPUTS if getattr(args, n)], OUTPUT_DIRECTORIES)
    if args.export_onnx:
        from evaluation.predictor import onnx_missing
        missing = onnx_missing()
        if missing:
            raise PathError(missing)
    if args.export_savedmodel and os.path.exists(args.export_savedmodel):
        raise PathError("--export-savedmodel %s exists: SavedModel export needs a new directory" %
                        args.export_savedmodel)
    if args.save_adversarial and os.path.isdir(args.save_adversarial) and os.listdir(args.save_adversarial):
        raise PathError("--save-adversarial %s is not empty: pass a new directory (a set is written whole, never mixed "
                        "into another)" % args.save_adversarial)


def main(argv=None):
    args = parse_args(argv)
    from attacks import AttackError
    from config.flags import FlagError
    from core.files import PathError
    from core.interrupt import Interrupted, exit_on_signals
    from data.errors import DataError
    from model.checkpoint import CheckpointError
    from nets import SpecError

    try:
        with exit_on_signals():
            check_paths(args)
            return run(args)
    except (SpecError, AttackError, DataError, CheckpointError, FlagError, PathError) as e:
        print("eval.py: error: %s" % e, file=sys.stderr)
        return 2
    except Interrupted as e:
        print("eval.py: %s; no output file was left half-written: run the same command again" % e, file=sys.stderr)
        return e.status
    except OSError as e:
        # a full disk or a failing file system: outputs written before are whole (atomic writes)
        print("eval.py: error: could not write %s (%s): it was not written, and the outputs written before it are "
              "intact; the results printed above are complete: free disk space (or fix the directory) and run the "
              "same command again" % (e.filename or "an output", e.strerror or e), file=sys.stderr)
        return 2


def run(args):
    """The job the flags ask for (export, black-box predictions, all-or-nothing, or white-box
    attacks); -> exit status."""
    from tensorpack.utils import logger

    import data
    from attacks import MEMBERS, STANDARD_ITERATIONS, STANDARD_QUERIES
    from config.flags import arch_flags_given, attacker_from_args, choose_preset, iterations, or_preset
    from core.dist import rank_and_size
    from core.files import write_json
    from core.provenance import git_commit
    from data.errors import DataError
    from evaluation import jobs
    from model import checkpoint

    rank, size = rank_and_size()
    status = 0
    black_box = black_box_mode(args)
    if args.per_image and black_box and not args.all_or_nothing:
        raise DataError("--per-image is for white-box or --all-or-nothing evaluation: for black-box "
                        "predictions use --logits-file")
    if args.validation and black_box:
        raise DataError("--validation chooses Fashion-MNIST images to attack; black-box evaluation reads the "
                        "images given: drop --validation")
    if args.per_image and black_box and size > 1:
        raise DataError("--per-image with --all-or-nothing runs in one process: drop horovodrun for it")
    params, recorded_arch = checkpoint.read_checkpoint(args.load)
    dataset = choose_dataset(args, checkpoint.recorded_dataset(args.load),
                             needed=not black_box or arch_flags_given(args))
    preset = choose_preset(args, dataset) if dataset else None
    arch = resolve_arch(args, params, recorded_arch, preset)
    if rank == 0:
        logger.info("Architecture: %s" % arch.name)
    out = {"checkpoint": os.path.abspath(args.load), "arch": arch.to_dict(), "workers": size,
           "dataset": dataset, "preset": preset.name if preset else None, "commit": git_commit()}
    if args.validation:
        out["validation"] = args.validation       # the held-out training images, not the test set
    progress = not args.quiet

    if black_box:
        predictor = jobs.make_predictor(arch, params, args.load, args.export_input_dtype)
        jobs.export(predictor, args.export_frozen, args.export_savedmodel, args.export_input_dtype)
        if args.export_onnx:
            # ONNX takes float32 images (a PyTorch attacker differentiates through them)
            onnx_predictor = predictor if args.export_input_dtype == "float32" else \
                jobs.make_predictor(arch, params, args.load, "float32")
            jobs.export_onnx(onnx_predictor, args.export_onnx)
        batch = args.batch or (preset.predict_batch if preset else 32)
        skipped = 0
        if args.eval_directory:
            res = jobs.predictions(predictor, args.eval_directory, batch, progress, args.prediction_file,
                                   args.logits_file, args.max_image_pixels)
            skipped += res.pop("skipped_images")
            out.update(res)
        if args.all_or_nothing:
            res = jobs.all_or_nothing_job(predictor, args.all_or_nothing, args.labels, batch, progress, args.per_image,
                                          args.max_image_pixels)
            skipped += res.pop("skipped_images")
            out.update(res)
        out["skipped_images"] = skipped
    elif args.audit:
        from config.flags import attack_epsilon
        from evaluation.audit import Audit, first_images, transfer_correct
        seed = or_preset(args.seed, preset, "eval_seed")
        source = data.open_dataset(dataset, args.data, fake=args.fake, max_pixels=args.max_image_pixels,
                                   validation=args.validation or 0)
        batch = args.batch or preset.eval_batch
        transfer = None
        epsilon = attack_epsilon(args, preset)
        if args.audit_transfer:
            # every set checked before the audit's long work (same images, same ball)
            clean, clean_labels = first_images(source, args.limit, batch)
            predictor = jobs.make_predictor(arch, params, args.load)
            transfer = transfer_correct(predictor, args.audit_transfer, jobs.attacker_keys(args.audit_transfer), clean,
                                        clean_labels, args.norm, epsilon, batch)
        audit = Audit(arch, params, args.load, source, batch, args.limit, args.norm, epsilon,
                      seed=seed, iterations=args.audit_iter, queries=args.audit_queries, progress=progress)
        res = audit.run(transfer)
        out["audit"] = res
        out["skipped_images"] = source.skipped.num_files
        if rank == 0:
            for verdict in dict.fromkeys(c["verdict"] for c in res["checks"].values()):     # once each
                print(verdict)
            print("audit: %s" % ("every check passed" if res["passed"] else "FAILED (see above)"))
        if not res["passed"]:
            status = AUDIT_FAILED
    elif args.attack == "autoattack":
        from attacks import autoattack_members
        from config.flags import FlagError, attack_epsilon, check_member_flags
        from evaluation.autoattack import Ensemble
        seed = or_preset(args.seed, preset, "eval_seed")
        strengths = iterations(args.attack_iter or "0,%d" % STANDARD_ITERATIONS)
        attacked = [n for n in strengths if n]
        if len(attacked) != 1:
            raise FlagError("--attack autoattack takes one iteration count for its APGD and FAB members (the "
                            "standard is 100): pass --attack-iter 100, or 0,100 with the clean figure")
        version = args.aa_version or "standard"
        check_member_flags(args, "--attack autoattack")
        aa_attacks = [a.strip() for a in args.aa_attacks.split(",") if a.strip()] if args.aa_attacks else None
        members = autoattack_members(version, args.norm, attack_epsilon(args, preset), attacked[0],
                                     args.square_queries or STANDARD_QUERIES, per_image_seed=seed,
                                     restarts=args.restarts, eot=args.eot, attacks=aa_attacks,
                                     precision=args.attack_precision, num_classes=arch.num_classes)
        if args.square_queries and "square" not in members:
            raise FlagError("--square-queries: the %s version has no Square member: drop it" % version)
        source = data.open_dataset(dataset, args.data, fake=args.fake, max_pixels=args.max_image_pixels,
                                   validation=args.validation or 0)
        out.update(jobs.autoattack(arch, params, args.load, Ensemble("autoattack", members, version), source,
                                   args.batch or preset.eval_batch, limit=args.limit, progress=progress, seed=seed,
                                   save_adversarial=args.save_adversarial, per_image=args.per_image))
    else:
        seed = or_preset(args.seed, preset, "eval_seed")
        attackers, iters_by_name = {}, {}
        default = "0,%d" % (STANDARD_QUERIES if args.attack == "square" else STANDARD_ITERATIONS) \
            if args.attack in MEMBERS else preset.attack_iter
        for n in iterations(args.attack_iter or default):
            name = "clean" if n == 0 else "%s%d" % (args.attack, n)
            attackers[name] = attacker_from_args(args, preset, n, restarts=(args.restarts or 1) if n else 1,
                                                 seed=seed, per_image_seed=seed, precision_flags=True,
                                                 num_classes=arch.num_classes)
            iters_by_name[name] = n
        source = data.open_dataset(dataset, args.data, fake=args.fake, max_pixels=args.max_image_pixels,
                                   validation=args.validation or 0)
        out.update(jobs.white_box(arch, params, args.load, attackers, source, args.batch or preset.eval_batch,
                                  limit=args.limit, progress=progress, seed=seed,
                                  save_adversarial=args.save_adversarial, per_image=args.per_image,
                                  plot_out=args.plot_out, iters_by_name=iters_by_name))
    if out["skipped_images"] and rank == 0:
        print("eval.py: skipped %d unreadable image file(s), each named in a warning above" % out["skipped_images"],
              file=sys.stderr)
    if args.json_out and rank == 0:
        write_json(args.json_out, out)
    return status


if __name__ == "__main__":
    sys.exit(main())
