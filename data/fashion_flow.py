"""tensorpack DataFlows over Fashion-MNIST arrays, shardable across Horovod ranks.

The arrays come from :func:`data.fashion_mnist.load_fashion_mnist`. Batching is done with
numpy indexing on whole batches (one ``images[indices]`` per batch), not per image, because
decoding costs nothing here and per-image Python overhead would dominate.

Augmentation is deliberately simple: an optional random horizontal flip, nothing else.
The paper's ImageNet recipe (random-size crops, colour jitter, lighting noise, after
fb.resnet.torch; see :mod:`data.imagenet`) does not carry over to 28x28 grayscale images,
and the project uses Fashion-MNIST as a small stand-in to exercise adversarial training,
not to push its accuracy. A horizontal flip keeps every Fashion-MNIST class a valid member
of its class (shoes point the other way, shirts stay shirts).
"""
import numpy as np
from tensorpack.dataflow import RNGDataFlow

from .errors import DataError
from .sharding import shard_indices


def _seeded_rng(seed, shard_index):
    """A RandomState for one rank: the same ``seed`` gives different streams on
    different shards, and the same stream on the same shard in every run."""
    state = np.random.SeedSequence([int(seed), int(shard_index)]).generate_state(4)
    return np.random.RandomState(state)


def _check_arrays(images, labels):
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise DataError("Fashion-MNIST images must be a uint8 array [N, H, W, C], got %s %s: "
                        "load them with data.load_fashion_mnist" % (images.dtype, images.shape))
    if labels.shape != (len(images),):
        raise DataError("Fashion-MNIST labels must be an array [N] with N = %d images, got shape "
                        "%s: load them with data.load_fashion_mnist" % (len(images), labels.shape))
    return images, labels.astype(np.int32, copy=False)


class ArrayBatchFlow(RNGDataFlow):
    """Batches ``[images[idx], labels[idx]]`` over a fixed list of indices.

    Args:
        images, labels: uint8 ``[N, H, W, C]`` and int32 ``[N]``.
        indices: which rows to use (this rank's shard), in their deterministic order.
        batch: batch size.
        shuffle: reshuffle the indices at every pass (training) or keep their order.
        remainder: also yield the last, smaller batch (evaluation) or drop it (training).
        flip: flip each image horizontally with probability 1/2.
        seed, shard_index: seed the random order and flips (``None``: a fresh random seed).
    """

    def __init__(self, images, labels, indices, batch, shuffle, remainder, flip=False,
                 seed=None, shard_index=0):
        super().__init__()
        self.images, self.labels = images, labels
        self.indices = np.asarray(indices, dtype=np.int64)
        self.batch = int(batch)
        self.shuffle, self.remainder, self.flip = bool(shuffle), bool(remainder), bool(flip)
        self.seed, self.shard_index = seed, shard_index

    def reset_state(self):
        super().reset_state()
        if self.seed is not None:
            self.rng = _seeded_rng(self.seed, self.shard_index)

    def __len__(self):
        full, rest = divmod(len(self.indices), self.batch)
        return full + int(self.remainder and rest > 0)

    def __iter__(self):
        order = self.rng.permutation(self.indices) if self.shuffle else self.indices
        for start in range(0, len(order), self.batch):
            idx = order[start:start + self.batch]
            if len(idx) < self.batch and not self.remainder:
                break
            images = self.images[idx]  # fancy indexing copies: safe to modify
            if self.flip:
                mask = self.rng.uniform(size=len(idx)) < 0.5
                images[mask] = images[mask, :, ::-1]
            yield [images, self.labels[idx]]


def fashion_train_flow(images, labels, batch, shard_index=0, num_shards=1, flip=True, seed=None):
    """Training batches ``(uint8 [B, 28, 28, 1], int32 [B])`` of this rank's shard.

    The shard (every ``num_shards``-th image from ``shard_index``) is reshuffled at every
    pass; incomplete batches are dropped so every step has ``batch`` images. The only
    augmentation is an optional random horizontal flip (see the module docstring).
    """
    images, labels = _check_arrays(images, labels)
    indices = shard_indices(len(images), shard_index, num_shards)
    if len(indices) < int(batch):
        raise DataError("Fashion-MNIST training shard %d of %d has %d images, fewer than one batch "
                        "of %d: use a smaller --batch or fewer ranks"
                        % (shard_index, num_shards, len(indices), batch))
    return ArrayBatchFlow(images, labels, indices, batch, shuffle=True, remainder=False,
                          flip=flip, seed=seed, shard_index=shard_index)


def fashion_eval_flow(images, labels, batch, shard_index=0, num_shards=1, limit=None):
    """Evaluation batches ``(uint8 [B, 28, 28, 1], int32 [B])``, deterministic and complete.

    ``limit`` keeps the first ``limit`` images of the split (before sharding, so all ranks
    together see exactly those). The order is the file's order, no augmentation, and the
    last batch may be smaller: every image of the shard is yielded exactly once per pass.
    """
    images, labels = _check_arrays(images, labels)
    count = len(images) if limit is None else min(len(images), int(limit))
    if count < 1:
        raise DataError("Fashion-MNIST evaluation limit %r leaves no images: pass a positive "
                        "--limit" % (limit,))
    indices = shard_indices(count, shard_index, num_shards)
    return ArrayBatchFlow(images, labels, indices, batch, shuffle=False, remainder=True)
