"""The large-minibatch learning-rate recipe of Goyal et al. [7], as used in Sec. 5.

"Each mini-batch contains 32 images per GPU (i.e., the total mini-batch size is
128 x 32 = 4096). We follow the training recipe of [7] ... our models are trained for a
total of 110 epochs; we decrease the learning rate by 10x at the 35-th, 70-th, and 95-th
epoch." Goyal et al.: linear scaling, lr = 0.1 x total batch / 256, with a gradual warm-up
from 0.1 over the first 5 epochs when the scaled rate exceeds 0.1.
"""
from dataclasses import dataclass
from typing import Tuple

from tensorpack.callbacks import HyperParamSetter
from tensorpack.callbacks.param import GraphVarParam


@dataclass(frozen=True)
class LRSchedule:
    total_batch: int
    base_lr: float = 0.1            # per 256 images
    warmup_epochs: float = 5.0
    decay_epochs: Tuple[float, ...] = (35.0, 70.0, 95.0)
    decay_factor: float = 0.1

    @property
    def peak_lr(self):
        return self.base_lr * self.total_batch / 256.0

    def __call__(self, epoch):
        """Learning rate at a (fractional) epoch counted from 0."""
        peak = self.peak_lr
        if peak > self.base_lr and self.warmup_epochs > 0 and epoch < self.warmup_epochs:
            return self.base_lr + (peak - self.base_lr) * epoch / self.warmup_epochs
        lr = peak
        for boundary in self.decay_epochs:
            if epoch >= boundary:
                lr *= self.decay_factor
        return lr


class LearningRateSetter(HyperParamSetter):
    """Sets the ``learning_rate`` variable every step from ``LRSchedule`` at the current
    fractional epoch, so the warm-up is linear per step and resuming from a checkpoint
    (which restores the global step) lands on the same value."""
    _chief_only = False   # every Horovod rank owns its own learning-rate variable

    def __init__(self, schedule, steps_per_epoch, var_name="learning_rate"):
        super().__init__(GraphVarParam(var_name))
        self.schedule = schedule
        self.steps_per_epoch = steps_per_epoch

    def _get_value_to_set(self):
        return float(self.schedule(self.global_step / float(self.steps_per_epoch)))

    def _trigger_step(self):
        self.trigger()

    def _trigger_epoch(self):
        pass
