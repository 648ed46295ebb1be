"""The catastrophic-overfitting guard (Wong, Rice and Kolter, ICLR 2020, Sec. 5.3): single-step
adversarial training can collapse within an epoch, its PGD accuracy falling to near 0 while its
FGSM accuracy rises. Their guard: PGD on a fixed batch every epoch, keeping the model from
before a drop of more than 20 points.

Here: every ``every`` steps and at each epoch's end (before the epoch's checkpoint is written),
the accuracy under untargeted PGD-10 on the first ``images`` evaluation images (held out from
training: the test set, or the --validation hold-out), summed over the ranks. A fall of more
than ``margin`` points below the best accuracy so far is a collapse: ``Collapsed`` is raised
before the epoch's checkpoint, so the newest checkpoint on disk is the last one the guard
passed, and train.py stops (exit 3) or goes on from it with a fallback method
(``--on-collapse``). Every check is logged (``guard/accuracy`` in TensorBoard and
metrics.jsonl; guard.json keeps the best so far, so a resumed run keeps its reference).
"""
import json
import os
import time

from tensorpack.callbacks import Callback, ProxyCallback

from core.files import atomic_write

GUARD_TOWER = "guard"
DEFAULT_MARGIN = 20.0        # points: Wong et al.'s
DEFAULT_IMAGES = 256
GUARD_ITERATIONS = 10


class Collapsed(RuntimeError):
    """A collapse: its step, the accuracies, and the checkpoint kept."""

    def __init__(self, step, accuracy, best, images, margin, checkpoint):
        self.step, self.accuracy, self.best, self.checkpoint = step, accuracy, best, checkpoint
        super().__init__(
            "catastrophic overfitting at step %d: accuracy under PGD-%d on the guard's %d held-out images fell from "
            "%.1f%% to %.1f%%, more than the %g-point margin; the last checkpoint before it, %s, is kept and "
            "model-final.npz was not written" % (step, GUARD_ITERATIONS, images, 100 * best, 100 * accuracy, margin,
                                                 checkpoint or "none (no checkpoint had been written)"))


class CollapseGuard(Callback):
    """Reads the guard tower's accuracy (its InferenceRunner runs just before this callback, on
    the same triggers) and raises ``Collapsed`` on a fall of more than ``margin`` points."""
    _chief_only = False

    def __init__(self, logdir, margin=DEFAULT_MARGIN, images=DEFAULT_IMAGES):
        self.logdir, self.margin, self.images = logdir, float(margin), int(images)
        self.path = os.path.join(logdir, "guard.json")
        self.best = None
        self.history = []

    def _before_train(self):
        if os.path.exists(self.path):
            with open(self.path) as f:
                record = json.load(f)
            self.best, self.history = record.get("best"), record.get("history", [])

    def _trigger(self):
        error = self.trainer.monitors.get_latest(GUARD_TOWER + "/top1_error")
        accuracy = 1.0 - float(error)
        self.trainer.monitors.put_scalar(GUARD_TOWER + "/accuracy", accuracy)
        self.history.append({"step": int(self.global_step), "accuracy": accuracy})
        if self.best is not None and 100.0 * (self.best - accuracy) > self.margin:
            from model.checkpoint import latest_valid_checkpoint
            self._save()
            raise Collapsed(int(self.global_step), accuracy, self.best, self.images, self.margin,
                            latest_valid_checkpoint(self.logdir))
        self.best = accuracy if self.best is None else max(self.best, accuracy)
        self._save()

    def _save(self):
        if self.trainer.is_chief:
            record = {"best": self.best, "margin": self.margin, "images": self.images, "history": self.history}
            atomic_write(self.path, lambda f: f.write(json.dumps(record, indent=1)), mode="w")


class GuardTrigger(ProxyCallback):
    """Triggers ``callback`` at every multiple of ``every`` of the global step (so a resumed run
    checks where an unbroken one would) and at each epoch's end, once when the two coincide;
    its other hooks pass through. ``timed``: the guard's cost, its seconds in the epoch and their
    share of the epoch's wall time, to TensorBoard and metrics.jsonl (``guard/seconds``,
    ``guard/share``)."""

    def __init__(self, callback, every, steps_per_epoch, timed=False):
        super().__init__(callback)
        self.every, self.steps_per_epoch, self.timed = int(every or 0), int(steps_per_epoch), timed
        self._seconds = self._epoch_start = None

    def _before_epoch(self):
        self._seconds, self._epoch_start = 0.0, time.perf_counter()
        self.cb.before_epoch()

    def _timed_trigger(self):
        start = time.perf_counter()
        self.cb.trigger()
        if self._seconds is not None:
            self._seconds += time.perf_counter() - start

    def _trigger_step(self):
        self.cb.trigger_step()
        step = self.global_step
        if self.every and step % self.every == 0 and step % self.steps_per_epoch != 0:
            self._timed_trigger()

    def _trigger_epoch(self):
        self._timed_trigger()
        if self.timed and self._epoch_start is not None:
            wall = time.perf_counter() - self._epoch_start
            self.trainer.monitors.put_scalar("guard/seconds", self._seconds)
            self.trainer.monitors.put_scalar("guard/share", self._seconds / max(wall, 1e-9))
