"""White-box evaluation (Sec. 6.1): attacks of several strengths in one graph, a tower per
attacker sharing the weights.

Figures are sums of per-image metrics over this rank's shard, then over all Horovod ranks,
so a distributed run reports exactly what one process would."""
import core.compat  # noqa: F401  (the TF2 workarounds, before TensorFlow loads)
import math

import numpy as np
import tensorflow as tf
from tensorpack.tfutils.tower import PredictTowerContext
from tqdm import tqdm

from attacks import METRICS
from core.dist import SumAcrossRanks
from model import build_tower
from nets import FAST

from .session import build_session
from .stats import rate_ci95

tfv1 = tf.compat.v1


class WhiteBoxEvaluator:
    """One graph with a tower per attacker (name -> attacker), sharing the weights.
    ``gradients``: the gradients the attacks see (nets/gradients.py; the audit's BPDA)."""

    def __init__(self, arch, attackers, params, path="checkpoint", seed=None, gradients=FAST):
        self.arch = arch
        self.attackers = dict(attackers)
        self.graph = tf.Graph()
        with self.graph.as_default():
            if seed is not None:
                tfv1.set_random_seed(seed)
            s, c = arch.image_size, arch.image_channels
            self.image = tfv1.placeholder(tf.uint8, [None, s, s, c], name="input")
            self.label = tfv1.placeholder(tf.int32, [None], name="label")
            self.fetches, self.adv_images = {}, {}
            for name, attacker in self.attackers.items():
                with PredictTowerContext(name):
                    tower = build_tower(arch, self.image, self.label, attacker, gradients=gradients)
                    self.fetches[name] = [tower.metrics[m] for m in METRICS]
                    self.adv_images[name] = tower.adv
            self._reduce = SumAcrossRanks(len(self.attackers) * (len(METRICS) + 1), name="eval_sum")
        self.sess = build_session(self.graph, params, path)

    def run(self, flow, total_batches=None, progress=True, writer=None, per_image=None):
        """-> dict attacker name -> {metric: rate, num_images, <metric>_ci95 (Wilson's [low, high])}.

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
                r[m + "_ci95"] = rate_ci95(rate, count)
            r["non_finite_images"] = int(round(row[METRICS.index("non_finite_logits")]))
            results[n] = r
        return results


def ceil_div(a, b):
    return int(math.ceil(a / float(b)))
