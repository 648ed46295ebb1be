"""The gradient-masking audit (``eval.py --audit``): the checks of Carlini et al., "On
evaluating adversarial robustness" (2019), that a white-box figure does not come from
obfuscated gradients (Athalye, Carlini and Wagner, ICML 2018). A denoising network with
non-smooth operations (median, top-k) is where masked gradients could hide.

Each check gives a pass/fail and one line:
- epsilon sweep: accuracy under APGD-CE falls towards 0 as epsilon grows, up to the whole
  pixel range, where any image can be reached;
- iterations and restarts: more iterations and more restarts never raise accuracy, paired
  per image (restarts keep the worst case, so there they must not raise it on any image);
- black box: Square, which needs no gradient, and transfer attacks (directories written by
  ``--save-adversarial``) break no more images than the white-box attacks did, beyond noise;
- gradients: at the attacked points the gradients of the margin loss are finite and non-zero;
- BPDA: each denoising operation replaced by the identity in the backward pass only; if that
  attack is stronger than the true gradient's beyond noise, the operation masks gradients;
- determinism: the same input gives the same logits.
Comparisons of two attacks on the same images are paired (McNemar's exact test on the images
one attack broke and the other did not), at the 5% level.
"""
import core.compat  # noqa: F401  (the TF2 workarounds, before TensorFlow loads)
import math

import numpy as np
import tensorflow as tf
from tensorpack.tfutils.tower import TowerContext

from attacks import losses, make_attacker, to_model_space
from core.dist import rank_and_size, sum_now
from model import build_tower, network
from nets import Gradients

from .records import PerImageRecorder
from .session import build_session
from .stats import mcnemar
from .whitebox import WhiteBoxEvaluator, ceil_div

tfv1 = tf.compat.v1
ALPHA = 0.05
# the sweep's radii, in multiples of the evaluated epsilon, then the whole range
SWEEP = (0.5, 1.0, 2.0, 4.0, 8.0)
# what the whole range leaves correct: an attack that may produce any image must break
# (almost) all of them
SWEEP_FLOOR = 0.02
ZERO_GRADIENT_SHARE = 0.01
DETERMINISM_TOLERANCE = 1e-5
# The fewest images on which the paired tests can reject at ALPHA: McNemar's exact test of n
# images all broken by one attack only has p = 2 / 2^n, below 0.05 from n = 6. On fewer, no
# check could fail whatever the model, so none may pass.
MIN_AUDIT_IMAGES = next(n for n in range(1, 100) if 2.0 / 2 ** n < ALPHA)


def whole_range(norm, arch):
    """An epsilon (0..255 scale) that reaches every image of the range: 255 per pixel, or the
    diagonal of the pixel cube for L2."""
    if norm == "linf":
        return 255.0
    return 255.0 * math.sqrt(arch.image_size * arch.image_size * arch.image_channels)


class Audit:
    """Runs the checks on ``source``'s first ``limit`` evaluation images."""

    def __init__(self, arch, params, path, source, batch, limit, norm, epsilon, seed=0, iterations=100,
                 queries=5000, progress=True):
        self.arch, self.params, self.path, self.source = arch, params, path, source
        self.batch, self.limit, self.norm, self.epsilon = batch, limit, norm, float(epsilon)
        self.seed, self.iterations, self.queries, self.progress = seed, iterations, queries, progress
        self.rank, self.size = rank_and_size()

    # ---- per-image results of a set of attacks ----
    def correct(self, attackers, gradients=Gradients()):
        """{name: bool [N], True where the image stays correctly classified}."""
        recorder = PerImageRecorder(None, attackers)
        evaluator = WhiteBoxEvaluator(self.arch, attackers, self.params, self.path, seed=self.seed,
                                      gradients=gradients)
        flow = self.source.eval_flow(self.batch, self.rank, self.size, limit=self.limit)
        evaluator.run(flow, total_batches=ceil_div(self.source.num_eval(self.limit), self.batch * self.size),
                      progress=self.progress and self.rank == 0, per_image=recorder)
        recorder.close()
        return {n: recorder.arrays["top1_error/%s" % n] == 0 for n in attackers}

    def apgd(self, iterations, epsilon=None, restarts=1):
        return make_attacker("apgd-ce", iterations, epsilon=self.epsilon if epsilon is None else epsilon,
                             norm=self.norm, per_image_seed=self.seed, restarts=restarts)

    def pgd(self, iterations, restarts=1):
        return make_attacker("pgd", iterations, epsilon=self.epsilon, step_size=None, norm=self.norm,
                             targeted=False, per_image_seed=self.seed, restarts=restarts)

    # ---- the checks ----
    def epsilon_sweep(self):
        radii = [self.epsilon * m for m in SWEEP] + [whole_range(self.norm, self.arch)]
        attackers = {"eps%g" % e: self.apgd(self.iterations, e) for e in radii}
        correct = self.correct(attackers)
        acc = [float(correct[n].mean()) for n in attackers]
        rising = [(radii[i], radii[i + 1]) for i in range(len(radii) - 1)
                  if _significantly_more_correct(correct[list(attackers)[i + 1]], correct[list(attackers)[i]])]
        ok = acc[-1] <= SWEEP_FLOOR and not rising
        line = "accuracy under APGD-CE-%d falls from %.1f%% at epsilon %g to %.1f%% at %g (the whole range)" % (
            self.iterations, 100 * acc[0], radii[0], 100 * acc[-1], radii[-1])
        if acc[-1] > SWEEP_FLOOR:
            line += ", above the %.0f%% an attack that may produce any image must reach" % (100 * SWEEP_FLOOR)
        if rising:
            line += "; it rises significantly from epsilon %g to %g" % rising[0]
        return _check(ok, line, epsilons=radii, accuracy=acc)

    def iterations_and_restarts(self):
        short, long_ = max(self.iterations // 10, 1), self.iterations
        attackers = {"pgd%d" % short: self.pgd(short), "pgd%d" % long_: self.pgd(long_),
                     "pgd%dx4" % short: self.pgd(short, restarts=4)}
        correct = self.correct(attackers)
        c_short, c_long, c_restart = (correct[n] for n in attackers)
        self.white_box_worst = c_short & c_long & c_restart
        p, n_long_only, n_short_only = mcnemar(c_long, c_short)
        more_iterations_help_model = n_long_only > n_short_only and p < ALPHA
        restart_regressions = int(np.sum(c_restart & ~c_short))
        ok = not more_iterations_help_model and restart_regressions == 0
        line = ("untargeted PGD: accuracy %.1f%% with %d iterations, %.1f%% with %d (%d images correct only with more "
                "iterations, %d only with fewer, McNemar p = %.3g); %d restarts: %.1f%%, %d images correct under "
                "restarts that a single run broke" % (
                    100 * c_short.mean(), short, 100 * c_long.mean(), long_, n_long_only, n_short_only, p, 4,
                    100 * c_restart.mean(), restart_regressions))
        return _check(ok, line, accuracy={n: float(c.mean()) for n, c in correct.items()},
                      long_only=n_long_only, short_only=n_short_only, p=p, restart_regressions=restart_regressions)

    def black_box(self, white_box_correct, transfer=None):
        """``white_box_correct``: the strongest white-box attack's per-image results;
        ``transfer``: {name: bool [N]} of transfer attacks on the same images (or None)."""
        square = make_attacker("square", self.queries, epsilon=self.epsilon, norm=self.norm, per_image_seed=self.seed)
        found = self.correct({"square": square})
        found.update(transfer or {})
        stronger = []
        for name, c in found.items():
            # a transfer set made from the same first images: pair them by index
            n = min(len(c), len(white_box_correct))
            p, bb_only, wb_only = mcnemar(white_box_correct[:n], c[:n])   # bb_only: broken only by the black box
            if bb_only > wb_only and p < ALPHA:
                stronger.append((name, bb_only, wb_only, p))
        line = "; ".join("%s %.1f%%" % (n, 100 * c.mean()) for n, c in found.items())
        line = "black-box accuracy %s against white-box %.1f%%" % (line, 100 * white_box_correct.mean())
        if stronger:
            line += "; %s breaks %d images the white-box attack did not (and misses %d it broke), p = %.3g" % \
                stronger[0]
        return _check(not stronger, line, accuracy={n: float(c.mean()) for n, c in found.items()},
                      white_box_accuracy=float(white_box_correct.mean()))

    def bpda(self, true_correct):
        """The attack with every denoising operation the identity in the backward pass, against
        the same attack with the true gradient (``true_correct``)."""
        if not self.arch.denoise.enabled or self.arch.denoise.op in ("bottleneck", "null"):
            return _check(None, "not applicable: the network has no denoising operation")
        c = self.correct({"bpda": self.apgd(self.iterations)}, gradients=Gradients(bpda=True))["bpda"]
        p, bpda_only, true_only = mcnemar(true_correct, c)
        masks = bpda_only > true_only and p < ALPHA
        line = ("APGD-CE-%d through the %s operation's true gradient: %.1f%%; with the identity in its backward pass "
                "(BPDA): %.1f%% (%d images only BPDA broke, %d only the true gradient, p = %.3g)" % (
                    self.iterations, self.arch.denoise.op, 100 * true_correct.mean(), 100 * c.mean(), bpda_only,
                    true_only, p))
        if masks:
            line += ": the %s operation masks gradients" % self.arch.denoise.op
        return _check(not masks, line, operation=self.arch.denoise.op, accuracy_bpda=float(c.mean()),
                      accuracy_true=float(true_correct.mean()), p=p)

    def gradients_and_determinism(self):
        """Gradients of the margin loss at APGD-CE's points (finite, non-zero), and the logits
        of the same images computed twice."""
        graph = tf.Graph()
        with graph.as_default():
            tfv1.set_random_seed(self.seed)
            s, c = self.arch.image_size, self.arch.image_channels
            image = tfv1.placeholder(tf.uint8, [None, s, s, c])
            label = tfv1.placeholder(tf.int32, [None])
            with TowerContext("", is_training=False):
                tower = build_tower(self.arch, image, label, self.apgd(self.iterations))
                point = tf.identity(tower.adv)
                net = network(self.arch)
                grad = tf.gradients(tf.reduce_sum(losses.margin(net(point), label)), point)[0]
                axes = list(range(1, grad.shape.ndims))
                finite = tf.reduce_all(tf.math.is_finite(grad), axis=axes)
                zero = tf.reduce_all(tf.equal(grad, 0.0), axis=axes)
                clean = net(to_model_space(image))
        sess = build_session(graph, self.params, self.path)
        flow = self.source.eval_flow(self.batch, self.rank, self.size, limit=self.limit)
        flow.reset_state()
        counts = np.zeros(4)          # images, non-finite, zero, logits differing
        worst = 0.0
        for images, labels in flow:
            f, z, first = sess.run([finite, zero, clean], {image: images, label: labels})
            second = sess.run(clean, {image: images})
            scale = max(float(np.abs(first).max()), 1e-12)
            diff = np.abs(first - second).max(axis=1) / scale
            worst = max(worst, float(diff.max()))
            counts += [len(labels), np.sum(~f), np.sum(z & f), np.sum(diff > DETERMINISM_TOLERANCE)]
        counts = sum_now(counts) if self.size > 1 else counts
        n, nonfinite, zeros, differing = (int(v) for v in counts)
        ok_grad = nonfinite == 0 and zeros <= ZERO_GRADIENT_SHARE * max(n, 1)
        grad_check = _check(ok_grad, "gradients of the margin loss at APGD-CE's points: %d of %d non-finite, %d "
                                     "all-zero" % (nonfinite, n, zeros), nonfinite=nonfinite, zero=zeros, images=n)
        det_check = _check(differing == 0, "the same images twice: %d of %d with logits differing by more than %g of "
                                           "their scale (largest %.2g)" % (differing, n, DETERMINISM_TOLERANCE, worst),
                           differing=differing, largest_relative_difference=worst)
        return grad_check, det_check

    def run(self, transfer=None):
        """-> {"checks": {name: {passed, verdict, ...}}, "passed": all passed (not applicable ones
        aside)}. On fewer than MIN_AUDIT_IMAGES images every check fails as "not enough images"."""
        count = self.source.num_eval(self.limit)
        if count < MIN_AUDIT_IMAGES:
            line = ("not enough images: %d, and the audit's paired tests cannot detect anything on fewer than %d: "
                    "pass --limit %d or more" % (count, MIN_AUDIT_IMAGES, MIN_AUDIT_IMAGES))
            if self.rank == 0:
                print("eval.py: warning: %s" % line)
            checks = {name: _check(False, line, images=count) for name in CHECKS}
            return {"checks": checks, "passed": False, "epsilon": self.epsilon, "norm": self.norm,
                    "iterations": self.iterations, "square_queries": self.queries}
        checks = {"epsilon_sweep": self.epsilon_sweep()}
        iters = self.iterations_and_restarts()
        checks["iterations_and_restarts"] = iters
        true_correct = self.correct({"apgd": self.apgd(self.iterations)})["apgd"]
        # the white-box worst case per image: correct under every gradient attack run
        checks["black_box"] = self.black_box(true_correct & self.white_box_worst, transfer)
        checks["gradients"], checks["determinism"] = self.gradients_and_determinism()
        checks["bpda"] = self.bpda(true_correct)
        verdicts = [c["passed"] for c in checks.values() if c["passed"] is not None]
        return {"checks": checks, "passed": all(verdicts), "epsilon": self.epsilon, "norm": self.norm,
                "iterations": self.iterations, "square_queries": self.queries}


CHECKS = ("epsilon_sweep", "iterations_and_restarts", "black_box", "gradients", "determinism", "bpda")


def _significantly_more_correct(stronger, weaker):
    """Images correct under the stronger attack that the weaker one broke outnumber the
    reverse, beyond noise (McNemar, 5%)."""
    p, stronger_only, weaker_only = mcnemar(stronger, weaker)
    return stronger_only > weaker_only and p < ALPHA


def _check(passed, line, **details):
    return dict(details, passed=passed, verdict=("PASS" if passed else "n/a" if passed is None else "FAIL") + ": " +
                line)


def _set_images(path):
    """[(name, images uint8 [N, S, S, C], labels [N] or None)] of one --save-adversarial set:
    an .npz (every images/<attack> array, its labels inside) or one attack's directory of
    000000.png ... (labels.txt beside it, in the set's top directory). A one-line DataError
    naming --audit-transfer for anything else."""
    import os

    import cv2

    from data.errors import DataError
    from data.labels import read_labels
    what = "pass a set written by eval.py --save-adversarial: one attack's directory (DIR/<attack>) or FILE.npz"
    if not os.path.exists(path):
        raise DataError("--audit-transfer %s does not exist: %s" % (path, what))
    if os.path.isfile(path):
        if not str(path).endswith(".npz"):
            raise DataError("--audit-transfer %s is not an .npz set: %s" % (path, what))
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise DataError("--audit-transfer %s cannot be read as an .npz (%s): %s" % (path, e, what))
        sets = sorted(k for k in arrays if k.startswith("images/"))
        if not sets or "labels" not in arrays:
            raise DataError("--audit-transfer %s holds no images/<attack> arrays with their labels: %s" % (path, what))
        return [(k.split("/", 1)[1], arrays[k], arrays["labels"]) for k in sets]
    entries = sorted(os.listdir(path))
    pngs = [e for e in entries if e.endswith(".png")]
    if not pngs:
        inner = [e for e in entries if os.path.isdir(os.path.join(path, e))]
        if inner and os.path.exists(os.path.join(path, "labels.txt")):
            raise DataError("--audit-transfer %s is a set's top directory: pass one attack's directory in it (%s)"
                            % (path, ", ".join(os.path.join(path, e) for e in inner[:3])))
        raise DataError("--audit-transfer %s holds no .png images: %s" % (path, what))
    labels_file = os.path.join(os.path.dirname(os.path.abspath(path)), "labels.txt")
    truth = read_labels(labels_file) if os.path.exists(labels_file) else None
    images = []
    for name in pngs:
        image = cv2.imread(os.path.join(path, name), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise DataError("--audit-transfer %s: %s cannot be read as an image: pass a set written by eval.py "
                            "--save-adversarial" % (path, name))
        images.append(image if image.ndim == 3 else image[:, :, None])
    labels = np.array([truth[n] for n in pngs], np.int64) if truth and all(n in truth for n in pngs) else None
    return [(os.path.basename(os.path.normpath(path)), np.stack(images), labels)]


def check_transfer_set(path, name, images, labels, clean, clean_labels, norm, epsilon):
    """A transfer set is comparable with the audit's white-box attacks only if it was made
    from the same first images within the same ball: at least as many images as the audit's,
    the same labels, and every image within ``epsilon`` (0..255 scale, under ``norm``) of the
    audit's clean image of that index (the set's pixels were rounded to integers:
    ``records.quantize_adversarial``). A set from other images is far from them all; one made
    at a larger epsilon is beyond the ball. One-line DataError otherwise."""
    from data.errors import DataError
    n = len(clean)
    where = "--audit-transfer %s%s" % (path, "" if str(path).endswith(name) else " (%s)" % name)
    if len(images) < n:
        raise DataError("%s holds %d images; the audit runs on the first %d (--limit): craft the set on at least as "
                        "many of the same images" % (where, len(images), n))
    if images.shape[1:] != clean.shape[1:]:
        raise DataError("%s holds images of shape %s, the model takes %s: craft the set for this data set" % (
            where, images.shape[1:], clean.shape[1:]))
    if labels is not None and not np.array_equal(np.asarray(labels[:n]), np.asarray(clean_labels)):
        first = int(np.flatnonzero(np.asarray(labels[:n]) != np.asarray(clean_labels))[0])
        raise DataError("%s holds other images than the audit's first %d (their labels differ from image %d on): craft "
                        "it from the same images (the same data set and --limit, without --validation)" % (
                            where, n, first))
    delta = images[:n].astype(np.float64) - clean.astype(np.float64)
    flat = delta.reshape(n, -1)
    if norm == "linf":
        distance, allowed = np.abs(flat).max(axis=1), np.floor(epsilon + 1e-6)
    else:
        distance, allowed = np.sqrt((flat ** 2).sum(axis=1)), epsilon + 0.5 * np.sqrt(flat.shape[1])
    beyond = distance > allowed + 1e-6
    if beyond.any():
        # with the labels the same, the images are the same ones (other images of N >= 6 would
        # share every label by chance less than once in a million for 10 classes)
        why = "was crafted at a larger epsilon" if labels is not None else \
            "was crafted at a larger epsilon or from other images"
        raise DataError("%s %s than the audit's %g: %d of its first %d images lie beyond that %s ball around the "
                        "audit's images (up to %.1f on the 0..255 scale): craft it from the same images at the "
                        "audit's epsilon" % (where, why, epsilon, int(beyond.sum()), n, norm, distance.max()))


def transfer_correct(predictor, paths, keys, clean, clean_labels, norm, epsilon, batch):
    """{"transfer:<key>[/<attack>]": bool [N]} of every set in ``paths``: each checked
    (``check_transfer_set``) before anything is predicted, then its first N images predicted
    and compared with the audit's labels."""
    loaded = []
    for key, path in zip(keys, paths):
        sets = _set_images(path)
        for name, images, labels in sets:
            check_transfer_set(path, name, images, labels, clean, clean_labels, norm, epsilon)
            loaded.append(("transfer:" + (key + "/" + name if str(path).endswith(".npz") else key), images))
    n = len(clean)
    out = {}
    for name, images in loaded:
        logits = np.concatenate([predictor(images[i:min(i + batch, n)]) for i in range(0, n, batch)])
        out[name] = logits.argmax(axis=1) == np.asarray(clean_labels)
    return out


def first_images(source, limit, batch):
    """The first ``limit`` evaluation images and labels, in order (every rank reads them all)."""
    flow = source.eval_flow(batch, 0, 1, limit=limit)
    flow.reset_state()
    parts = [(np.asarray(x), np.asarray(y)) for x, y in flow]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
