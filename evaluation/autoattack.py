"""AutoAttack (Croce and Hein, ICML 2020): the field's standard evaluation of robustness, an
ensemble of four attacks of different kinds scored per image as the worst case.

The standard version runs APGD-CE, APGD-T, FAB-T and Square (attacks/), in that order; "plus"
and "rand" are the authors' other versions (attacks/factory.py: VERSIONS). Each member runs
on the images that every earlier member left correctly classified: an image counts as robust
only if none of them breaks it, so AutoAttack's accuracy never exceeds any member's. It
measures misclassification within the threat model's ball (it is untargeted as a whole).

Each member is a graph of its own, run on this rank's still-standing images of the batch, so
that its time, the images it removed and the network evaluations it spent are known; the sums
go over every Horovod rank, and every member's random numbers are drawn per image (seeded by
the image's content), so a distributed run reports what one process would.
"""
import core.compat  # noqa: F401  (the TF2 workarounds, before TensorFlow loads)
import time

import numpy as np
import tensorflow as tf
from tensorpack.tfutils.tower import TowerContext
from tqdm import tqdm

from attacks import METRICS, per_image_metrics, to_model_space
from core.dist import SumAcrossRanks
from model import network

from .session import build_session
from .stats import rate_ci95

tfv1 = tf.compat.v1

#: per-image code of ``member/<name>`` in a --per-image file: 0 misclassified without attack,
#: k the k-th member (1-based) broke it, -1 robust (no member broke it)
CLEAN_WRONG, ROBUST = 0, -1


class Ensemble:
    """What the rest of evaluation needs to know of the ensemble as one attacker (its name,
    radius, and that it counts misclassification)."""
    targeted = False

    def __init__(self, name, members, version="standard"):
        self.name, self.members, self.version = name, dict(members), version
        first = next(iter(self.members.values()))
        self.threat = first.threat
        self.epsilon = first.epsilon
        self.num_iter = max(m.num_iter for m in self.members.values())

    def describe(self):
        return "%s-%s[%s]" % (self.name, self.version, "; ".join(m.describe() for m in self.members.values()))


class AutoAttackEvaluator:
    """Clean accuracy, then the members in order on the images still standing."""

    def __init__(self, arch, ensemble, params, path="checkpoint", seed=None):
        self.arch, self.ensemble = arch, ensemble
        self.names = list(ensemble.members)
        self.graph = tf.Graph()
        with self.graph.as_default():
            if seed is not None:
                tfv1.set_random_seed(seed)
            s, c = arch.image_size, arch.image_channels
            self.image = tfv1.placeholder(tf.uint8, [None, s, s, c], name="input")
            self.label = tfv1.placeholder(tf.int32, [None], name="label")
            with TowerContext("", is_training=False):
                net = network(arch)
                clean = to_model_space(self.image)
                self.clean_metrics = [per_image_metrics(net(clean), self.label, self.label, False)[m] for m in METRICS]
                self.member_fetches = {}
                for name, member in ensemble.members.items():
                    with tf.name_scope(name.replace("-", "_")):
                        adv, _, queries = member.attack_info(clean, self.label, net, arch.num_classes)
                        metrics = per_image_metrics(net(adv), self.label, self.label, False)
                        self.member_fetches[name] = {"adv": adv, "queries": queries,
                                                     "metrics": [metrics[m] for m in METRICS]}
            # images, clean METRICS, final METRICS, then per member: removed, attacked, queries, seconds
            self._length = 1 + 2 * len(METRICS) + 4 * len(self.names)
            self._reduce = SumAcrossRanks(self._length, name="autoattack_sum")
        self.sess = build_session(self.graph, params, path)

    def _batch(self, images, labels):
        """-> (clean metrics, final metrics, adversarial images (model space), member codes,
        queries per image, per-member [removed, attacked, queries, seconds])."""
        feed = {self.image: images, self.label: labels}
        clean = [np.asarray(v) for v in self.sess.run(self.clean_metrics, feed)]
        final = [v.copy() for v in clean]
        adv = images.astype(np.float32) * (2.0 / 255.0) - 1.0
        code = np.where(clean[0] > 0.5, CLEAN_WRONG, ROBUST).astype(np.int32)
        queries = np.ones(len(labels), np.float64)          # the clean prediction
        per_member = np.zeros((len(self.names), 4))
        standing = clean[0] < 0.5
        for k, name in enumerate(self.names):
            idx = np.flatnonzero(standing)
            if not idx.size:
                continue
            start = time.perf_counter()
            out = self.sess.run(self.member_fetches[name], {self.image: images[idx], self.label: labels[idx]})
            per_member[k, 3] = time.perf_counter() - start
            broke = out["metrics"][0] > 0.5
            chosen = idx[broke]
            for m in range(len(METRICS)):
                final[m][chosen] = out["metrics"][m][broke]
            adv[chosen] = out["adv"][broke]
            code[chosen] = k + 1
            standing[chosen] = False
            # a member's own clean prediction is the one counted above
            own = 1.0 if getattr(self.ensemble.members[name], "own_clean_prediction", False) else 0.0
            queries[idx] += out["queries"] - own
            per_member[k, :3] = [broke.sum(), idx.size, out["queries"].sum() - own * idx.size]
        return clean, final, adv, code, queries, per_member

    def run(self, flow, total_batches=None, progress=True, writer=None, per_image=None):
        """-> results as WhiteBoxEvaluator's (name -> metrics), with the ensemble's row holding
        ``members`` (per member: images removed and attacked, network evaluations per
        attacked image, seconds: process-seconds, summed over the ranks under horovodrun) and
        ``queries_per_image``."""
        sums = np.zeros(self._length)
        name = self.ensemble.name
        flow.reset_state()
        bar = tqdm(flow, total=total_batches, disable=not progress, desc=name, unit="batch", dynamic_ncols=True)
        total_queries = 0.0
        for images, labels in bar:
            clean, final, adv, code, queries, per_member = self._batch(np.asarray(images), np.asarray(labels))
            if writer:
                writer.write_batch(images, labels, {name: adv})
            if per_image:
                per_image.add_batch(labels, {"clean": clean, name: final},
                                    extra={"member/" + name: code, "queries/" + name: queries})
            n = len(labels)
            sums[0] += n
            sums[1:1 + len(METRICS)] += [float(np.sum(v)) for v in clean]
            sums[1 + len(METRICS):1 + 2 * len(METRICS)] += [float(np.sum(v)) for v in final]
            sums[1 + 2 * len(METRICS):] += per_member.ravel()
            total_queries += queries.sum()
            bar.set_postfix({"n": int(sums[0]), "robust": "%.3f" % (1 - sums[1 + len(METRICS)] / max(sums[0], 1))})
        totals = self._reduce(self.sess, sums)
        count = int(totals[0])
        results = {"clean": self._row(totals[1:1 + len(METRICS)], count, "clean")}
        row = self._row(totals[1 + len(METRICS):1 + 2 * len(METRICS)], count, self.ensemble.describe())
        members = totals[1 + 2 * len(METRICS):].reshape(len(self.names), 4)
        row["members"] = {n: {"removed": int(m[0]), "attacked": int(m[1]),
                              "queries_per_attacked_image": m[2] / m[1] if m[1] else 0.0, "seconds": m[3]}
                          for n, m in zip(self.names, members)}
        row["robust_accuracy"] = 1.0 - row["top1_error"]
        low, high = row["top1_error_ci95"]
        row["robust_accuracy_ci95"] = [1.0 - high, 1.0 - low]
        results[name] = row
        return results

    @staticmethod
    def _row(metric_sums, count, description):
        r = {"num_images": count, "attack": description}
        for i, m in enumerate(METRICS):
            rate = metric_sums[i] / max(count, 1)
            r[m] = rate
            r[m + "_ci95"] = rate_ci95(rate, count)
        r["non_finite_images"] = int(round(metric_sums[METRICS.index("non_finite_logits")]))
        return r


def format_members(row):
    """Plain-text lines of what each member removed."""
    lines = ["%-10s %8s %9s %14s %9s" % ("member", "removed", "attacked", "queries/image", "seconds")]
    for name, m in row["members"].items():
        lines.append("%-10s %8d %9d %14.1f %9.1f" % (name, m["removed"], m["attacked"],
                                                     m["queries_per_attacked_image"], m["seconds"]))
    return "\n".join(lines)
