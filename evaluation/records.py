"""What a white-box evaluation can keep besides its figures: the adversarial images, for
black-box transfer (Sec. 6.2), and every image's results, for paired comparisons."""
import os

import numpy as np

from attacks import METRICS, PIXEL_SCALE
from core.dist import gather_strided_rows, rank_and_size
from core.files import atomic_write
from data.errors import DataError


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
        self._labels.extend(int(label) for label in labels)
        self.count += len(labels)

    def close(self):
        """Writes labels.txt (rank 0); returns the number of images written by all ranks."""
        labels = gather_strided_rows(np.asarray(self._labels, np.int32).reshape(-1, 1))[:, 0]
        if self.rank == 0:
            text = "".join("%06d.png,%d\n" % (i, l) for i, l in enumerate(labels))
            atomic_write(os.path.join(self.directory, "labels.txt"), lambda f: f.write(text), mode="w")
        return len(labels)


class PerImageRecorder:
    """Every image's 0/1 metrics per attacker, in evaluation order, saved as one .npz:
    ``labels`` [N], and ``<metric>/<attacker>`` [N] uint8 for each of METRICS (top-1 error,
    top-5 error, attack success). The sums behind the accuracy cannot tell whether two attacks
    (or two models) fail on the same images; these can, so comparisons on the same images can
    be paired (e.g. McNemar's test), which is far more sensitive than comparing two rates.
    ``extra``: further int32 columns (AutoAttack's ``member/<attacker>``: which member broke
    each image, and ``queries/<attacker>``), given to ``add_batch`` by name."""

    def __init__(self, path, names, extra=()):
        self.path, self.names, self.extra = path, list(names), list(extra)
        self._labels, self._values = [], {(m, n): [] for m in METRICS for n in self.names}
        self._extra = {k: [] for k in self.extra}

    def add_batch(self, labels, out, extra=None):
        """``out``: attacker name -> the METRICS' [B] values, as WhiteBoxEvaluator fetches them."""
        self._labels.append(np.asarray(labels, np.int32))
        for n in self.names:
            for m, values in zip(METRICS, out[n]):
                self._values[(m, n)].append(np.asarray(values).round().astype(np.uint8))
        for k in self.extra:
            self._extra[k].append(np.asarray(extra[k]).round().astype(np.int32))

    def close(self):
        """Writes the file (on rank 0; under horovodrun every rank must call it, and the
        rows of all ranks are put back in the images' order: dist.gather_strided_rows).
        Without a path nothing is written: ``arrays`` then holds the results (every rank)."""
        keys = list(self._values)
        columns = [np.concatenate(self._labels) if self._labels else np.zeros(0, np.int32)]
        columns += [np.concatenate(self._values[k]) if self._values[k] else np.zeros(0, np.uint8) for k in keys]
        columns += [np.concatenate(self._extra[k]) if self._extra[k] else np.zeros(0, np.int32) for k in self.extra]
        rows = gather_strided_rows(np.stack(columns, axis=1).astype(np.int32))
        arrays = {"%s/%s" % key: rows[:, i + 1].astype(np.uint8) for i, key in enumerate(keys)}
        arrays.update({k: rows[:, 1 + len(keys) + i] for i, k in enumerate(self.extra)})
        arrays["labels"] = rows[:, 0].astype(np.int32)
        self.arrays = arrays
        if self.path is None or rank_and_size()[0] != 0:
            return
        atomic_write(self.path, lambda f: np.savez_compressed(f, **arrays))


def load_per_image(path):
    """-> (labels, {(metric, attacker): uint8 array}) of a :class:`PerImageRecorder` file."""
    with np.load(path) as z:
        return z["labels"], {tuple(k.split("/", 1)): z[k] for k in z.files if k != "labels"}
