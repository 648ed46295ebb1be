"""Random batches of the right shapes and dtypes, for benchmarks and tests.

They stand in for a real input pipeline when only throughput or the graph matters (the
paper's timing figures are per-step costs of PGD and training, Sec. 5): uint8 images in
0..255 like the real pipelines produce, and int32 labels in ``[0, num_classes)``.
"""
import numpy as np
from tensorpack.dataflow import DataFlow


class FakeBatches(DataFlow):
    """``size`` batches per pass of ``(uint8 [B, S, S, C], int32 [B])``.

    With ``fixed=True`` one batch is drawn once and yielded every time (nothing but a
    copy-free yield: for benchmarks that must not measure the generator); otherwise each
    batch is new. The same ``seed`` gives the same batches after every ``reset_state``.
    """

    def __init__(self, batch, image_size=224, channels=3, num_classes=1000, seed=0, size=100,
                 fixed=False):
        self.shape = (int(batch), int(image_size), int(image_size), int(channels))
        self.num_classes, self.seed = int(num_classes), seed
        self.size, self.fixed = int(size), fixed
        self._rng = None
        self._fixed_batch = None

    def reset_state(self):
        self._rng = np.random.RandomState(self.seed)
        self._fixed_batch = None

    def __len__(self):
        return self.size

    def _draw(self):
        images = self._rng.randint(0, 256, size=self.shape, dtype=np.uint8)
        labels = self._rng.randint(0, self.num_classes, size=self.shape[0]).astype(np.int32)
        return [images, labels]

    def __iter__(self):
        if self._rng is None:
            self.reset_state()
        for _ in range(self.size):
            if self.fixed:
                if self._fixed_batch is None:
                    self._fixed_batch = self._draw()
                yield self._fixed_batch
            else:
                yield self._draw()


def fake_flow(batch, image_size=224, channels=3, num_classes=1000, seed=0, size=100, fixed=False):
    """A :class:`FakeBatches` flow: ``size`` batches of ``(uint8 [batch, image_size,
    image_size, channels], int32 [batch])`` per pass."""
    return FakeBatches(batch, image_size, channels, num_classes, seed, size, fixed)
