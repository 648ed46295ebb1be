"""Evaluation (Sec. 6): white-box attacks of several strengths in one graph, black-box
prediction over image directories, the CAAD 2018 "all-or-nothing" criterion, and export.

White-box figures are sums of per-image metrics over this rank's shard, then over all
Horovod ranks, so a distributed run reports exactly what one process would."""
import math
import os

import numpy as np
import tensorflow as tf
from tensorpack.tfutils.tower import PredictTowerContext, TowerContext
from tqdm import tqdm

from attacks import METRICS, PIXEL_SCALE, to_model_space
from data.errors import DataError

from . import checkpoint
from .callbacks import binomial_ci95
from .dist import SumAcrossRanks
from .model import AdvModel

tfv1 = tf.compat.v1


def build_session(graph, params, path):
    """A session of ``graph`` with ``params`` loaded strictly (all and only the graph's
    model variables)."""
    with graph.as_default():
        init = checkpoint.strict_session_init(params, path, graph)
        sess = tfv1.Session(graph=graph, config=tfv1.ConfigProto(allow_soft_placement=True))
        sess.run(tfv1.global_variables_initializer())
        init.init(sess)
    return sess


class WhiteBoxEvaluator:
    """One graph with a tower per attacker (name -> attacker), sharing the weights."""

    def __init__(self, arch, attackers, params, path="checkpoint", seed=None):
        self.arch = arch
        self.attackers = dict(attackers)
        self.graph = tf.Graph()
        with self.graph.as_default():
            if seed is not None:
                tfv1.set_random_seed(seed)
            model = AdvModel(arch, eval_attackers=self.attackers)
            s, c = arch.image_size, arch.image_channels
            self.image = tfv1.placeholder(tf.uint8, [None, s, s, c], name="input")
            self.label = tfv1.placeholder(tf.int32, [None], name="label")
            self.fetches, self.adv_images = {}, {}
            for name in self.attackers:
                with PredictTowerContext(name):
                    model.build_graph(self.image, self.label)
                    g = tfv1.get_default_graph()
                    self.fetches[name] = [g.get_tensor_by_name("%s/%s:0" % (name, m)) for m in METRICS]
                    self.adv_images[name] = g.get_tensor_by_name("%s/adv_image:0" % name)
            self._reduce = SumAcrossRanks(len(self.attackers) * (len(METRICS) + 1), name="eval_sum")
        self.sess = build_session(self.graph, params, path)

    def run(self, flow, total_batches=None, progress=True, writer=None, per_image=None):
        """-> dict attacker name -> {metric: rate, num_images, <metric>_ci95}.

        ``writer`` (an :class:`AdversarialWriter`) also saves every adversarial image;
        ``per_image`` (a :class:`PerImageRecorder`) keeps every image's metrics."""
        names = list(self.attackers)
        sums = {n: np.zeros(len(METRICS) + 1) for n in names}
        flow.reset_state()
        bar = tqdm(flow, total=total_batches, disable=not progress, desc="evaluating", unit="batch",
                   dynamic_ncols=True)
        fetches = dict(self.fetches, adversarial=self.adv_images) if writer else self.fetches
        for images, labels in bar:
            out = self.sess.run(fetches, {self.image: images, self.label: labels})
            if writer:
                writer.write_batch(images, labels, out.pop("adversarial"))
            if per_image:
                per_image.add_batch(labels, out)
            for n in names:
                for i, values in enumerate(out[n]):
                    sums[n][i] += float(np.sum(values))
                sums[n][-1] += len(labels)
            first = names[-1]
            bar.set_postfix({"n": int(sums[first][-1]),
                             "top1_err[%s]" % first: "%.3f" % (sums[first][0] / max(sums[first][-1], 1))})
        flat = np.concatenate([sums[n] for n in names])
        flat = self._reduce(self.sess, flat).reshape(len(names), len(METRICS) + 1)
        results = {}
        for n, row in zip(names, flat):
            count = int(row[-1])
            r = {"num_images": count, "attack": self.attackers[n].describe()}
            for i, m in enumerate(METRICS):
                rate = row[i] / max(count, 1)
                r[m] = rate
                r[m + "_ci95"] = binomial_ci95(rate, count)
            results[n] = r
        return results


def quantize_adversarial(clean, adversarial, epsilon):
    """Model-space adversarial images -> uint8 pixels that stay inside the epsilon ball
    (0..255 scale) of the clean ones: each perturbation is rounded to the nearest integer,
    then clipped to +-floor(epsilon). Rounding, not truncation: PGD leaves most pixels on
    the ball's surface, and float32 gives +-epsilon back as 15.99999, which truncation
    would turn into 15 (a weaker saved attack than the one evaluated)."""
    clean = clean.astype(np.float64)
    bound = np.floor(epsilon + 1e-6)
    delta = np.clip(np.rint(np.asarray(adversarial, np.float64) / PIXEL_SCALE + 1.0 / PIXEL_SCALE - clean),
                    -bound, bound)
    return np.clip(clean + delta, 0, 255).astype(np.uint8)


class AdversarialWriter:
    """Saves the adversarial images of each attacker for black-box use (Sec. 6.2):
    ``<directory>/<attacker>/<index>.png`` (lossless) and ``<directory>/labels.txt`` with
    ``filename,label`` lines, the layout ``eval.py --all-or-nothing ... --labels`` reads.
    ``attackers``: name -> Attacker; the clean "attack" (0 iterations) is not saved, since
    it is no attacker for an all-or-nothing evaluation.

    Under horovodrun each rank writes its own images under their index in the whole set
    (ranks read strided shards: image j of rank r is r + j * size), and rank 0 writes
    labels.txt for all of them; every rank must call ``close``."""

    def __init__(self, directory, attackers, rank=0, size=1):
        self.directory, self.count = directory, 0
        self.rank, self.size = rank, size
        self.epsilons = {name: a.epsilon for name, a in attackers.items() if a.num_iter > 0}
        for name in self.epsilons:
            os.makedirs(os.path.join(directory, name), exist_ok=True)
        self._labels = []

    def _index(self, local):
        return self.rank + self.size * local

    def write_batch(self, clean, labels, adversarial_by_name):
        import cv2
        for name, epsilon in self.epsilons.items():
            images = quantize_adversarial(clean, adversarial_by_name[name], epsilon)
            for i, image in enumerate(images):
                path = os.path.join(self.directory, name, "%06d.png" % self._index(self.count + i))
                if not cv2.imwrite(path, image):
                    raise DataError("could not write %s: check the disk and permissions" % path)
        self._labels.extend(int(l) for l in labels)
        self.count += len(labels)

    def close(self):
        """Writes labels.txt (rank 0); returns the number of images written by all ranks."""
        from .dist import gather_strided_rows
        labels = gather_strided_rows(np.asarray(self._labels, np.int32).reshape(-1, 1))[:, 0]
        if self.rank == 0:
            text = "".join("%06d.png,%d\n" % (i, l) for i, l in enumerate(labels))
            checkpoint.atomic_write(os.path.join(self.directory, "labels.txt"), lambda f: f.write(text), mode="w")
        return len(labels)


class PerImageRecorder:
    """Every image's 0/1 metrics per attacker, in evaluation order, saved as one .npz:
    ``labels`` [N], and ``<metric>/<attacker>`` [N] uint8 for each of METRICS (top-1 error,
    top-5 error, attack success). The sums behind the accuracy cannot tell whether two attacks
    (or two models) fail on the same images; these can, so comparisons on the same images can
    be paired (e.g. McNemar's test), which is far more sensitive than comparing two rates."""

    def __init__(self, path, names):
        self.path, self.names = path, list(names)
        self._labels, self._values = [], {(m, n): [] for m in METRICS for n in self.names}

    def add_batch(self, labels, out):
        """``out``: attacker name -> the METRICS' [B] values, as WhiteBoxEvaluator fetches them."""
        self._labels.append(np.asarray(labels, np.int32))
        for n in self.names:
            for m, values in zip(METRICS, out[n]):
                self._values[(m, n)].append(np.asarray(values).round().astype(np.uint8))

    def close(self):
        """Writes the file (on rank 0; under horovodrun every rank must call it, and the
        rows of all ranks are put back in the images' order: dist.gather_strided_rows)."""
        from .dist import gather_strided_rows, rank_and_size
        keys = list(self._values)
        columns = [np.concatenate(self._labels) if self._labels else np.zeros(0, np.int32)]
        columns += [np.concatenate(self._values[k]) if self._values[k] else np.zeros(0, np.uint8) for k in keys]
        rows = gather_strided_rows(np.stack(columns, axis=1).astype(np.int32))
        if rank_and_size()[0] != 0:
            return
        arrays = {"%s/%s" % key: rows[:, i + 1].astype(np.uint8) for i, key in enumerate(keys)}
        arrays["labels"] = rows[:, 0].astype(np.int32)
        checkpoint.atomic_write(self.path, lambda f: np.savez_compressed(f, **arrays))


def load_per_image(path):
    """-> (labels, {(metric, attacker): uint8 array}) of a :class:`PerImageRecorder` file."""
    with np.load(path) as z:
        return z["labels"], {tuple(k.split("/", 1)): z[k] for k in z.files if k != "labels"}


class Predictor:
    """Clean logits for uint8 BGR images (black-box evaluation and export). Built with
    TensorFlow's own gradients only (nets.denoise_block.tensorflow_gradients_only), so that
    its exported graphs can be differentiated by any TensorFlow process."""

    def __init__(self, arch, params, path="checkpoint", input_dtype=tf.uint8):
        from nets.denoise_block import tensorflow_gradients_only
        self.arch = arch
        self.graph = tf.Graph()
        with self.graph.as_default(), tensorflow_gradients_only():
            model = AdvModel(arch)
            s, c = arch.image_size, arch.image_channels
            self.image = tfv1.placeholder(input_dtype, [None, s, s, c], name="input")
            with TowerContext("", is_training=False):
                logits = model.logits(to_model_space(self.image), training=False)
            self.logits = tf.identity(logits, name="logits")
            self.probabilities = tf.nn.softmax(self.logits, name="probabilities")
            self.classes = tf.argmax(self.logits, axis=1, output_type=tf.int32, name="classes")
        self.sess = build_session(self.graph, params, path)

    def __call__(self, images):
        return self.sess.run(self.logits, {self.image: images})

    def export_frozen(self, path):
        """A frozen GraphDef: input ``input:0`` ([N, S, S, C] BGR, 0..255, uint8 or float32),
        outputs ``logits:0``, ``probabilities:0``, ``classes:0``."""
        with self.graph.as_default():
            frozen = tfv1.graph_util.convert_variables_to_constants(
                self.sess, self.graph.as_graph_def(), ["logits", "probabilities", "classes"])
            frozen = tfv1.graph_util.extract_sub_graph(frozen, ["logits", "probabilities", "classes"])
        checkpoint.atomic_write(path, lambda f: f.write(frozen.SerializeToString()))

    def export_savedmodel(self, directory):
        """A SavedModel with signature ``serving_default``: {image} -> {logits, probabilities, classes}."""
        if os.path.exists(directory):
            raise checkpoint.CheckpointError("%s exists: SavedModel export needs a new directory" % directory)
        with self.graph.as_default():
            builder = tfv1.saved_model.Builder(directory)
            sig = tfv1.saved_model.predict_signature_def(
                inputs={"image": self.image},
                outputs={"logits": self.logits, "probabilities": self.probabilities, "classes": self.classes})
            builder.add_meta_graph_and_variables(self.sess, [tfv1.saved_model.tag_constants.SERVING],
                                                 signature_def_map={"serving_default": sig})
            builder.save()


def all_or_nothing_per_image(true_labels, predictions_per_attacker):
    """Every image's outcome under the CAAD 2018 criterion (Sec. 6.2): -> (filenames sorted,
    their true labels [N], {attacker: [N] bool correct}, [N] bool correct under every
    attacker). An image missing from an attacker's predictions counts as wrong. Two models
    judged on the same transfer images can then be compared image by image (paired)."""
    names = sorted(true_labels)
    labels = np.array([int(true_labels[f]) for f in names], dtype=np.int32)
    correct = {attacker: np.array([preds.get(f) == true_labels[f] for f in names], dtype=bool)
               for attacker, preds in sorted(predictions_per_attacker.items())}
    all_correct = np.ones(len(names), dtype=bool)
    for c in correct.values():
        all_correct &= c
    return names, labels, correct, all_correct


def all_or_nothing(true_labels, predictions_per_attacker):
    """CAAD 2018 criterion (Sec. 6.2): "an image is considered correctly classified only if
    the model correctly classifies all adversarial versions of this image created by all
    attackers". ``true_labels``: filename -> label; ``predictions_per_attacker``: attacker ->
    {filename -> predicted label}. An image missing from an attacker's predictions counts
    as wrong. Returns dict with the all-or-nothing accuracy and per-attacker accuracies."""
    names, _, correct, all_correct = all_or_nothing_per_image(true_labels, predictions_per_attacker)
    n = len(names)
    per_attacker = {a: float(c.mean()) if n else float("nan") for a, c in correct.items()}
    acc = float(all_correct.mean()) if n else float("nan")
    return {"num_images": n, "all_or_nothing_accuracy": acc,
            "all_or_nothing_ci95": binomial_ci95(acc, n) if n else float("nan"),
            "per_attacker_accuracy": per_attacker}


#: the name under which a black-box --per-image file holds the all-or-nothing outcome
ALL_OR_NOTHING = "all-or-nothing"


def save_all_or_nothing_per_image(path, true_labels, predictions_per_attacker):
    """A black-box --per-image file in :class:`PerImageRecorder`'s format, images in filename
    order: ``labels``, ``top1_error/<attacker>`` for each attacker and
    ``top1_error/all-or-nothing`` (1 = wrong), so the same reader pairs it."""
    _, labels, correct, all_correct = all_or_nothing_per_image(true_labels, predictions_per_attacker)
    arrays = {"top1_error/%s" % a: (~c).astype(np.uint8) for a, c in correct.items()}
    arrays["top1_error/" + ALL_OR_NOTHING] = (~all_correct).astype(np.uint8)
    arrays["labels"] = labels
    checkpoint.atomic_write(path, lambda f: np.savez_compressed(f, **arrays))


def format_table(results, order=None):
    """Plain-text table of white-box results (percentages)."""
    order = order or list(results)
    lines = ["%-12s %8s %18s %18s %18s" % ("attack", "images", "top-1 error %", "top-5 error %",
                                           "attack success %")]
    for name in order:
        r = results[name]
        cells = ["%6.2f +- %5.2f" % (100 * r[m], 100 * r[m + "_ci95"]) for m in METRICS]
        lines.append("%-12s %8d %18s %18s %18s" % (name, r["num_images"], *cells))
    return "\n".join(lines)


def plot_curve(results, iters_by_name, path, title):
    """Figure 6/7 style: accuracy (100 - top-1 error) against attack iterations."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    pts = sorted((iters_by_name[n], 100 * (1 - r["top1_error"]), 100 * r["top1_error_ci95"])
                 for n, r in results.items() if iters_by_name.get(n, 0) > 0)
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.5))
    xs, ys, es = zip(*pts)
    ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3)
    ax.set_xscale("log")
    ax.set_xlabel("attack iterations")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def ceil_div(a, b):
    return int(math.ceil(a / float(b)))
