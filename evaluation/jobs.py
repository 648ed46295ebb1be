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
from core.files import write_npz
from data.errors import DataError
from data.images import SkippedFiles
from data.labels import format_labels, read_labels, write_labels

from .blackbox import all_or_nothing, save_all_or_nothing_per_image
from .predictor import ONNX_OPSET, Predictor
from .records import AdversarialWriter, PerImageRecorder
from .report import format_table, plot_curve
from .stats import format_rate
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
    try:
        results = evaluator.run(flow, total_batches=ceil_div(source.num_eval(limit), batch * size),
                                progress=progress and rank == 0, writer=writer, per_image=recorder)
    except BaseException:
        if writer:
            writer.abandon()          # a partial set must never be mistaken for a whole one
        raise
    skipped = int(sum_now([source.skipped.num_files])[0]) if size > 1 else source.skipped.num_files
    if (writer or recorder) and size > 1 and skipped:
        if writer:
            writer.abandon()
        raise DataError("--per-image and --save-adversarial under horovodrun cannot place the images "
                        "of the unreadable files named above in the images' order (no labels.txt or "
                        "per-image file was written): rerun in one process")
    if rank == 0:
        # the results first: a file that cannot be written (a full disk) then loses none of them
        print(format_table(results, list(attackers)))
    if writer:
        written = writer.close()
        if rank == 0:
            print("wrote %d adversarial images per attack to %s" % (written, save_adversarial))
    if recorder:
        recorder.close()
        if rank == 0:
            print("wrote every image's results to %s" % per_image)
    if rank == 0:
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
    try:
        results = evaluator.run(flow, total_batches=ceil_div(source.num_eval(limit), batch * size),
                                progress=progress and rank == 0, writer=writer, per_image=recorder)
    except BaseException:
        if writer:
            writer.abandon()
        raise
    results[name]["seconds_wall"] = time.time() - start
    skipped = int(sum_now([source.skipped.num_files])[0]) if size > 1 else source.skipped.num_files
    if (writer or recorder) and size > 1 and skipped:
        if writer:
            writer.abandon()
        raise DataError("--per-image and --save-adversarial under horovodrun cannot place the images "
                        "of the unreadable files named above in the images' order (no labels.txt or "
                        "per-image file was written): rerun in one process")
    if rank == 0:
        # the results first: a file that cannot be written (a full disk) then loses none of them
        print(format_table(results, ["clean", name]))
        print(format_members(results[name]))
        row = results[name]
        print("%s: clean accuracy %.2f%%, robust accuracy %s%% (95%% interval; %d images, %.0f s)" % (
            name, 100 * (1 - results["clean"]["top1_error"]), format_rate(row["robust_accuracy"], row["num_images"], 2),
            row["num_images"], row["seconds_wall"]))
    if writer:
        written = writer.close()
        if rank == 0:
            print("wrote %d adversarial images to %s" % (written, save_adversarial))
    if recorder:
        recorder.close()
        if rank == 0:
            print("wrote every image's results to %s" % per_image)
    return {"white_box": results, "skipped_images": skipped}


def predict_directory(predictor, directory, batch, progress, skipped, max_pixels=None):
    """-> (filenames, logits) for every readable image in ``directory``."""
    from data.imagenet import black_box_directory_flow
    flow = black_box_directory_flow(directory, batch, image_size=predictor.arch.image_size, skipped=skipped,
                                    max_pixels=max_pixels)
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


def attacker_keys(directories):
    """Short unique names for attacker directories: the last path component, or as many
    trailing components as it takes to tell them apart (``a/pgd10`` vs ``b/pgd10``)."""
    parts = [os.path.normpath(d).split(os.sep) for d in directories]
    for depth in range(1, max(len(p) for p in parts) + 1):
        keys = ["/".join(p[-depth:]) for p in parts]
        if len(set(keys)) == len(keys):
            return keys
    return [os.path.normpath(d) for d in directories]


def predictions(predictor, directory, batch, progress=True, prediction_file=None, logits_file=None, max_pixels=None):
    """Black-box predictions of every image in ``directory``: ``filename,label`` lines
    (data/labels.py) to ``prediction_file`` (or stdout), logits to ``logits_file``. Returns the
    JSON entries."""
    skipped = SkippedFiles()
    names, logits = predict_directory(predictor, directory, batch, progress, skipped, max_pixels)
    preds = logits.argmax(axis=1) if len(names) else []
    pairs = list(zip(names, (int(p) for p in preds)))
    if prediction_file:
        write_labels(prediction_file, pairs)
        print("wrote %d predictions to %s" % (len(names), prediction_file))
    else:
        sys.stdout.write(format_labels(pairs))
    if logits_file:
        write_npz(logits_file, compressed=False, filenames=np.array(names), logits=logits)
    return {"predictions": len(names), "skipped_images": skipped.num_files}


def attacker_sets(paths):
    """The attackers of --all-or-nothing: each directory of images is one, and each
    ``images/<attack>`` array of an ``.npz`` written by --save-adversarial is one. ->
    [(key, directory or (file, array name))]."""
    out = []
    keys = attacker_keys([p for p in paths])
    for path, key in zip(paths, keys):
        if str(path).endswith(".npz") and os.path.isfile(path):
            with np.load(path, allow_pickle=False) as z:
                arrays = sorted(k for k in z.files if k.startswith("images/"))
            if not arrays:
                raise DataError("%s holds no images/<attack> arrays: pass a file written by eval.py --save-adversarial "
                                "FILE.npz, or a directory of images" % path)
            out += [("%s/%s" % (key, k.split("/", 1)[1]), (path, k)) for k in arrays]
        else:
            out.append((key, path))
    return out


def predict_set(predictor, source, batch, progress, skipped, max_pixels=None):
    """-> (filenames, logits) of one attacker's set: a directory, or (npz file, array name)."""
    if isinstance(source, tuple):
        path, array = source
        with np.load(path, allow_pickle=False) as z:
            images, names = z[array], [str(n) for n in z["names"]]
        logits = [predictor(images[i:i + batch]) for i in range(0, len(images), batch)]
        return names, (np.concatenate(logits) if logits else np.zeros((0, predictor.arch.num_classes)))
    return predict_directory(predictor, source, batch, progress, skipped, max_pixels)


def sets_labels(paths):
    """The true labels stored in --save-adversarial .npz files, when every path is one and they
    all hold the same {name: label} (sets crafted on the same images, by any source model);
    otherwise a one-line DataError asking for --labels."""
    found = [npz_labels(p) for p in paths]
    if not found or any(f is None for f in found):
        raise DataError("--all-or-nothing needs --labels FILE with the true 'filename,label' lines (only .npz sets "
                        "written by eval.py --save-adversarial carry their own)")
    differ = [p for p, f in zip(paths, found) if f != found[0]]
    if differ:
        raise DataError("%s and %s hold different images or labels: pass --labels FILE with the true "
                        "'filename,label' lines" % (paths[0], differ[0]))
    return found[0]


def npz_labels(path):
    """{name: label} stored in a --save-adversarial .npz, or None for a directory."""
    if not (str(path).endswith(".npz") and os.path.isfile(path)):
        return None
    with np.load(path, allow_pickle=False) as z:
        if "labels" not in z.files or "names" not in z.files:
            return None
        return dict(zip((str(n) for n in z["names"]), (int(v) for v in z["labels"])))


def all_or_nothing_job(predictor, paths, labels_path, batch, progress=True, per_image=None, max_pixels=None):
    """The CAAD 2018 criterion over every attacker's set (Sec. 6.2). The labels name every
    image once; an image an attacker lacks counts as wrong (the CAAD rule) and is counted per
    attacker; an image an attacker has that the labels do not name is refused (its truth is
    unknown). Returns the JSON entries."""
    num_classes = predictor.arch.num_classes
    if labels_path:
        truth = read_labels(labels_path, num_classes)
    else:
        truth = sets_labels(paths)
        bad = sorted(n for n, v in truth.items() if not 0 <= v < num_classes)
        if bad:
            raise DataError("%s holds labels outside the model's classes 0..%d (first: %s)" % (
                paths[0], num_classes - 1, bad[0]))
    skipped = SkippedFiles()
    per_attacker, missing = {}, {}
    for key, source in attacker_sets(paths):
        names, logits = predict_set(predictor, source, batch, progress, skipped, max_pixels)
        unknown = sorted(set(names) - set(truth))
        if unknown:
            raise DataError("the labels name %d of the %d images of attacker %s: add labels for the other %d (first: "
                            "%s), or remove those images" % (len(names) - len(unknown), len(names), key,
                                                              len(unknown), unknown[0]))
        per_attacker[key] = dict(zip(names, (int(p) for p in logits.argmax(axis=1))))
        missing[key] = len(set(truth) - set(names))
    res = all_or_nothing(truth, per_attacker)
    res["missing_images"] = missing
    if per_image:
        save_all_or_nothing_per_image(per_image, truth, per_attacker)
        print("wrote every image's results to %s" % per_image)
    print("all-or-nothing accuracy over %d attackers: %s%% (95%% interval; %d images)" % (
        len(per_attacker), format_rate(res["all_or_nothing_accuracy"], res["num_images"], 2) if res["num_images"]
        else "-", res["num_images"]))
    for name, acc in res["per_attacker_accuracy"].items():
        note = ", %d image(s) missing: counted wrong" % missing[name] if missing[name] else ""
        print("  %-30s %.2f%%%s" % (name, 100 * acc, note))
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


def export_onnx(predictor, path):
    arch = predictor.arch
    predictor.export_onnx(path)
    print("wrote ONNX model %s (input float32 BGR 0..255 [N,%d,%d,%d] NHWC -> logits; opset %d)" % (
        path, arch.image_size, arch.image_size, arch.image_channels, ONNX_OPSET))


def make_predictor(arch, params, path, input_dtype="uint8"):
    import tensorflow as tf
    return Predictor(arch, params, path, input_dtype=tf.float32 if input_dtype == "float32" else tf.uint8)
