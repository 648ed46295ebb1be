"""eval.py's jobs, one function each: white-box evaluation (Sec. 6.1), black-box predictions
over a directory and the all-or-nothing criterion over several attackers' directories
(Sec. 6.2), and export. Each takes resolved objects (an ArchSpec, attackers, a data source,
the checkpoint's weights) and returns what goes into the JSON; the command line only parses
and chooses."""
import core.compat  # noqa: F401  (the TF2 workarounds, before TensorFlow loads)
import os
import sys
import time

import numpy as np
from tqdm import tqdm

from core.dist import rank_and_size, sum_now
from core.files import atomic_write
from data.errors import DataError
from data.images import SkippedFiles

from .blackbox import all_or_nothing, save_all_or_nothing_per_image
from .predictor import Predictor
from .records import AdversarialWriter, PerImageRecorder
from .report import format_table, plot_curve
from .whitebox import WhiteBoxEvaluator, ceil_div


def white_box(arch, params, path, attackers, source, batch, limit=None, progress=True, seed=None,
              save_adversarial=None, per_image=None, plot_out=None, iters_by_name=None):
    """Every attacker (name -> attacker) on ``source``'s evaluation images (this rank's
    shard, summed over ranks). Returns {"white_box": results, "skipped_images": n}."""
    rank, size = rank_and_size()
    flow = source.eval_flow(batch, rank, size, limit=limit)
    evaluator = WhiteBoxEvaluator(arch, attackers, params, path, seed=seed)
    writer = AdversarialWriter(save_adversarial, attackers, rank, size) if save_adversarial else None
    recorder = PerImageRecorder(per_image, attackers) if per_image else None
    results = evaluator.run(flow, total_batches=ceil_div(source.num_eval(limit), batch * size),
                            progress=progress and rank == 0, writer=writer, per_image=recorder)
    skipped = int(sum_now([source.skipped.num_files])[0]) if size > 1 else source.skipped.num_files
    if (writer or recorder) and size > 1 and skipped:
        raise DataError("--per-image and --save-adversarial under horovodrun cannot place the images "
                        "of the unreadable files named above in the images' order (no labels.txt or "
                        "per-image file was written): rerun in one process")
    if writer:
        written = writer.close()
        if rank == 0:
            print("wrote %d adversarial images per attack to %s" % (written, save_adversarial))
    if recorder:
        recorder.close()
        if rank == 0:
            print("wrote every image's results to %s" % per_image)
    if rank == 0:
        print(format_table(results, list(attackers)))
        attacked = {n: i for n, i in (iters_by_name or {}).items() if i > 0}
        if plot_out and attacked:
            plot_curve(results, iters_by_name, plot_out,
                       "%s, eps=%g" % (arch.name, attackers[list(attackers)[-1]].epsilon))
            print("wrote %s" % plot_out)
    return {"white_box": results, "skipped_images": skipped}


def autoattack(arch, params, path, ensemble, source, batch, limit=None, progress=True, seed=None,
               save_adversarial=None, per_image=None):
    """AutoAttack's standard ensemble (evaluation/autoattack.py) on ``source``'s evaluation
    images. Returns {"white_box": {"clean": ..., name: ...}, "skipped_images": n}."""
    from .autoattack import AutoAttackEvaluator, format_members
    rank, size = rank_and_size()
    flow = source.eval_flow(batch, rank, size, limit=limit)
    evaluator = AutoAttackEvaluator(arch, ensemble, params, path, seed=seed)
    name = ensemble.name
    writer = AdversarialWriter(save_adversarial, {name: ensemble}, rank, size) if save_adversarial else None
    recorder = PerImageRecorder(per_image, ["clean", name], extra=("member/" + name, "queries/" + name)) \
        if per_image else None
    start = time.time()
    results = evaluator.run(flow, total_batches=ceil_div(source.num_eval(limit), batch * size),
                            progress=progress and rank == 0, writer=writer, per_image=recorder)
    results[name]["seconds_wall"] = time.time() - start
    skipped = int(sum_now([source.skipped.num_files])[0]) if size > 1 else source.skipped.num_files
    if (writer or recorder) and size > 1 and skipped:
        raise DataError("--per-image and --save-adversarial under horovodrun cannot place the images "
                        "of the unreadable files named above in the images' order (no labels.txt or "
                        "per-image file was written): rerun in one process")
    if writer:
        written = writer.close()
        if rank == 0:
            print("wrote %d adversarial images to %s" % (written, save_adversarial))
    if recorder:
        recorder.close()
        if rank == 0:
            print("wrote every image's results to %s" % per_image)
    if rank == 0:
        print(format_table(results, ["clean", name]))
        print(format_members(results[name]))
        row = results[name]
        print("%s: clean accuracy %.2f%%, robust accuracy %.2f%% +- %.2f (%d images, %.0f s)" % (
            name, 100 * (1 - results["clean"]["top1_error"]), 100 * row["robust_accuracy"],
            100 * row["robust_accuracy_ci95"], row["num_images"], row["seconds_wall"]))
    return {"white_box": results, "skipped_images": skipped}


def predict_directory(predictor, directory, batch, progress, skipped):
    """-> (filenames, logits) for every readable image in ``directory``."""
    from data.imagenet import black_box_directory_flow
    flow = black_box_directory_flow(directory, batch, image_size=predictor.arch.image_size, skipped=skipped)
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


def read_labels(path):
    """{filename: label} of a ``filename,label`` (or ``filename label``) file."""
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


def predictions(predictor, directory, batch, progress=True, prediction_file=None, logits_file=None):
    """Black-box predictions of every image in ``directory``: ``filename,label`` lines to
    ``prediction_file`` (or stdout), logits to ``logits_file``. Returns the JSON entries."""
    skipped = SkippedFiles()
    names, logits = predict_directory(predictor, directory, batch, progress, skipped)
    preds = logits.argmax(axis=1) if len(names) else []
    lines = "".join("%s,%d\n" % (n, p) for n, p in zip(names, preds))
    if prediction_file:
        atomic_write(prediction_file, lambda f: f.write(lines), mode="w")
        print("wrote %d predictions to %s" % (len(names), prediction_file))
    else:
        sys.stdout.write(lines)
    if logits_file:
        atomic_write(logits_file, lambda f: np.savez(f, filenames=np.array(names), logits=logits))
    return {"predictions": len(names), "skipped_images": skipped.num_files}


def all_or_nothing_job(predictor, directories, labels_path, batch, progress=True, per_image=None):
    """The CAAD 2018 criterion over every attacker's directory (Sec. 6.2). Returns the JSON
    entries."""
    truth = read_labels(labels_path)
    skipped = SkippedFiles()
    per_attacker = {}
    for directory, key in zip(directories, attacker_keys(directories)):
        names, logits = predict_directory(predictor, directory, batch, progress, skipped)
        per_attacker[key] = dict(zip(names, (int(p) for p in logits.argmax(axis=1))))
    res = all_or_nothing(truth, per_attacker)
    if per_image:
        save_all_or_nothing_per_image(per_image, truth, per_attacker)
        print("wrote every image's results to %s" % per_image)
    print("all-or-nothing accuracy over %d attackers: %.2f%% +- %.2f (%d images)" % (
        len(per_attacker), 100 * res["all_or_nothing_accuracy"], 100 * res["all_or_nothing_ci95"],
        res["num_images"]))
    for name, acc in res["per_attacker_accuracy"].items():
        print("  %-30s %.2f%%" % (name, 100 * acc))
    return {"all_or_nothing": res, "skipped_images": skipped.num_files}


def export(predictor, frozen=None, savedmodel=None, input_dtype="uint8"):
    """A frozen GraphDef and/or a SavedModel of ``predictor``'s graph."""
    arch = predictor.arch
    if frozen:
        predictor.export_frozen(frozen)
        print("wrote frozen graph %s (input:0 %s BGR 0..255 [N,%d,%d,%d] -> logits:0, probabilities:0, classes:0)"
              % (frozen, input_dtype, arch.image_size, arch.image_size, arch.image_channels))
    if savedmodel:
        predictor.export_savedmodel(savedmodel)
        print("wrote SavedModel %s (signature serving_default: image -> logits, probabilities, classes)" % savedmodel)


def make_predictor(arch, params, path, input_dtype="uint8"):
    import tensorflow as tf
    return Predictor(arch, params, path, input_dtype=tf.float32 if input_dtype == "float32" else tf.uint8)
