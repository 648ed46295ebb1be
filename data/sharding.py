"""Which part of a data set each Horovod rank reads.

The paper trains with synchronous SGD on 128 GPUs, 32 images per GPU (Sec. 5); with Horovod
every rank runs its own input pipeline. Each rank reads its own *shard*: the items
``shard_index, shard_index + num_shards, ...`` of a fixed, deterministic list. Shards of
different ranks are disjoint and together cover the list, and their sizes differ by at most
one, so evaluation sees every image exactly once and training sees every image once per
epoch (in a different order on every rank and epoch).
"""
from .errors import DataError


def check_shard(shard_index, num_shards):
    """Raise DataError unless ``0 <= shard_index < num_shards``."""
    if int(num_shards) < 1 or not 0 <= int(shard_index) < int(num_shards):
        raise DataError("shard %r of %r does not exist: shard_index must be in [0, num_shards) "
                        "and num_shards >= 1 (pass the Horovod rank and size)"
                        % (shard_index, num_shards))


def shard_indices(count, shard_index=0, num_shards=1):
    """Indices into a list of ``count`` items that belong to shard ``shard_index``."""
    check_shard(shard_index, num_shards)
    return range(int(shard_index), int(count), int(num_shards))


def shard_items(items, shard_index=0, num_shards=1):
    """The items of shard ``shard_index`` of ``num_shards`` (a strided slice, in list order)."""
    check_shard(shard_index, num_shards)
    return list(items)[int(shard_index)::int(num_shards)]


def steps_per_epoch(num_items, batch, num_shards=1):
    """Steps per epoch that every rank can take with full batches: ``num_items // (batch *
    num_shards)``, at least 1. Shards differ in size by at most one item, so a per-rank
    ``len(flow)`` may differ by one between ranks; use this number for all of them."""
    return max(1, int(num_items) // (int(batch) * int(num_shards)))
