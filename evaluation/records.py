"""What a white-box evaluation can keep besides its figures: the adversarial images, for
black-box transfer (Sec. 6.2), and every image's results, for paired comparisons."""
import os
import shutil

import numpy as np

from attacks import METRICS, PIXEL_SCALE
from core.dist import gather_strided_rows, rank_and_size, sum_now
from core.files import write_npz
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
    """Saves the adversarial images of each attacker for black-box use (Sec. 6.2), in one of
    two layouts:

    - a directory: ``<directory>/<attacker>/<index>.png`` (lossless) and
      ``<directory>/labels.txt`` (``labels.write_labels``), the layout of CAAD submissions and
      of ``eval.py --all-or-nothing DIR/<attacker> ... --labels DIR/labels.txt``. It is written
      to ``<directory>.partial`` and renamed into place once complete, so a set cut short (a
      kill, Ctrl-C, a full disk) is never mistaken for a whole one;
    - a path ending in ``.npz``: one file holding ``images/<attacker>`` uint8 [N, S, S, C],
      ``labels`` [N] and ``names`` [N], written atomically (``eval.py --all-or-nothing
      FILE.npz`` reads it): thousands of images as one compressed file.

    ``attackers``: name -> attacker; the clean "attack" (0 iterations) is not saved, since it is
    no attacker for an all-or-nothing evaluation. Under horovodrun each rank holds its images
    under their index in the whole set (ranks read strided shards: image j of rank r is
    r + j * size); every rank must call ``close``, and rank 0 completes the set."""

    def __init__(self, target, attackers, rank=0, size=1):
        self.target, self.count = target, 0
        self.rank, self.size = rank, size
        self.as_npz = str(target).endswith(".npz")
        self.epsilons = {name: a.epsilon for name, a in attackers.items() if a.num_iter > 0}
        self._labels, self._arrays = [], {name: [] for name in self.epsilons}
        self.partial = None if self.as_npz else str(target).rstrip("/") + ".partial"
        if self.partial:
            if rank == 0 and os.path.exists(self.partial):
                shutil.rmtree(self.partial)           # what an interrupted run of this command left
            sum_now([0.0])                            # every rank waits for that before writing
            for name in self.epsilons:
                os.makedirs(os.path.join(self.partial, name), exist_ok=True)

    def _index(self, local):
        return self.rank + self.size * local

    def write_batch(self, clean, labels, adversarial_by_name):
        import cv2
        for name, epsilon in self.epsilons.items():
            images = quantize_adversarial(clean, adversarial_by_name[name], epsilon)
            if self.as_npz:
                self._arrays[name].append(images)
                continue
            for i, image in enumerate(images):
                path = os.path.join(self.partial, name, "%06d.png" % self._index(self.count + i))
                if not cv2.imwrite(path, image):
                    raise DataError("could not write %s: check the disk and permissions" % path)
        self._labels.extend(int(label) for label in labels)
        self.count += len(labels)

    def close(self):
        """Completes the set (rank 0); returns the number of images written by all ranks."""
        from data.labels import write_labels
        labels = gather_strided_rows(np.asarray(self._labels, np.int32).reshape(-1, 1))[:, 0]
        names = ["%06d.png" % i for i in range(len(labels))]
        if self.as_npz:
            arrays = {}
            for name, parts in self._arrays.items():
                local = np.concatenate(parts) if parts else np.zeros((0, 1, 1, 1), np.uint8)
                shape = local.shape[1:]
                rows = gather_strided_rows(local.reshape(len(local), -1).astype(np.int32))
                arrays["images/" + name] = rows.astype(np.uint8).reshape((-1,) + shape)
            if self.rank == 0:
                arrays.update(labels=labels.astype(np.int32), names=np.array(names))
                write_npz(self.target, **arrays)
            return len(labels)
        if self.rank == 0:
            write_labels(os.path.join(self.partial, "labels.txt"), zip(names, labels))
            os.replace(self.partial, str(self.target).rstrip("/"))
        sum_now([0.0])                                # the set is in place before anyone goes on
        return len(labels)

    def abandon(self):
        """An interrupted run: remove the partial set (rank 0)."""
        if self.partial and self.rank == 0 and os.path.exists(self.partial):
            shutil.rmtree(self.partial, ignore_errors=True)


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
        write_npz(self.path, **arrays)


def load_per_image(path):
    """-> (labels, {(metric, attacker): uint8 array}) of a :class:`PerImageRecorder` file."""
    with np.load(path) as z:
        return z["labels"], {tuple(k.split("/", 1)): z[k] for k in z.files if k != "labels"}
