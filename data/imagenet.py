"""ImageNet-style image directories and their tensorpack DataFlows, with no download.

tensorpack's ``dataset.ILSVRC12`` / ``ILSVRCMeta`` fetch ImageNet metadata from the internet
when it is missing; clusters often have no internet,
so everything here comes from the directory itself:

- ``<root>/<split>/<wnid>/*.JPEG``: one subdirectory per class (``train`` and ``val`` in
  the usual layout). Any common image extension is accepted, case-insensitively.
- ``<root>/<split>/`` flat, with ``<split>.txt`` (in ``<root>/<split>/`` or ``<root>/``) of
  ``filename label`` lines, ``label`` an int class index (the caffe ``val.txt``).
- optional ``<root>/synset_words.txt`` with lines ``n01440764 tench, Tinca tinca`` for
  human-readable class names.

Class index ``i`` is the ``i``-th wnid in sorted order (the convention of the released
models, whose 1000-way classifier follows the sorted ImageNet wnids). The wnids come from
``train/``'s subdirectories; without ``train/``, from ``synset_words.txt`` (so that a val
directory holding only some classes keeps the indices of all of them); without either,
from the split's own subdirectories.

Items are listed in a deterministic order: by file name for class subdirectories (for
ILSVRC2012 val, ``ILSVRC2012_val_00000001.JPEG`` ... which mixes the classes, so a
``limit`` takes a sample of all of them), the list's order for ``<split>.txt``.

The flows (module :mod:`data.augment` has the augmentation, :mod:`data.sharding` the
shards) yield ``(uint8 [B, S, S, 3] BGR, int32 [B])``; undecodable files are skipped
(:mod:`data.images`) and the flow goes on.
"""
import os

import numpy as np
from tensorpack.dataflow import (BatchData, DataFlow, MapData, MultiProcessMapDataZMQ,
                                 MultiThreadMapData)
from tensorpack.utils import get_rng

from .augment import ImageMapper, black_box_augmentors, eval_augmentors, train_augmentors
from .errors import DataError
from .images import IMAGE_EXTENSIONS, is_image_file
from .sharding import shard_items

SYNSET_WORDS = "synset_words.txt"
_EXTS = " ".join(IMAGE_EXTENSIONS)
_LAYOUT = "expected <root>/<split>/<wnid>/*.JPEG or <root>/<split>/ with a <split>.txt"


def _subdirs(directory):
    with os.scandir(directory) as it:
        return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))


def _image_names(directory):
    with os.scandir(directory) as it:
        return sorted(e.name for e in it if e.is_file() and is_image_file(e.name))


def read_synset_words(root):
    """``{wnid: description}`` from ``<root>/synset_words.txt``, or None without the file."""
    path = os.path.join(root, SYNSET_WORDS)
    if not os.path.isfile(path):
        return None
    words = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.split(None, 1)
            if len(parts) < 2:
                raise DataError("line %d of %s is not 'wnid description': %r; fix the line or "
                                "remove the file (it only provides class names)"
                                % (number, path, line[:80]))
            words[parts[0]] = parts[1]
    return words


def _find_list_file(root, split):
    for path in (os.path.join(root, split, split + ".txt"), os.path.join(root, split + ".txt")):
        if os.path.isfile(path):
            return path
    return None


def imagenet_wnids(root, split="train"):
    """The sorted wnids that define the class indices (see the module docstring), or None
    when the directory has no class subdirectories and no synset_words.txt."""
    train = os.path.join(root, "train")
    if os.path.isdir(train):
        wnids = _subdirs(train)
        if wnids:
            return wnids
    words = read_synset_words(root)
    if words:
        return sorted(words)
    split_dir = os.path.join(root, split)
    if os.path.isdir(split_dir):
        return _subdirs(split_dir) or None
    return None


def _read_list_file(path, split_dir, num_classes):
    entries, seen = [], set()
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            parts = text.rsplit(None, 1)
            try:
                if len(parts) != 2:
                    raise ValueError
                label = int(parts[1])
            except ValueError:
                raise DataError("line %d of %s is not 'filename label' with an integer label: %r; "
                                "fix the list" % (number, path, text[:80])) from None
            name = parts[0]
            if label < 0 or (num_classes is not None and label >= num_classes):
                raise DataError("line %d of %s has label %d, outside [0, %s) for the classes of "
                                "%s: fix the list or the class directories / synset_words.txt"
                                % (number, path, label, num_classes if num_classes else "inf",
                                   os.path.dirname(split_dir)))
            if name in seen:
                raise DataError("line %d of %s names %s a second time: every image must be listed "
                                "once; fix the list" % (number, path, name))
            seen.add(name)
            entries.append((number, name, label))
    present = set(os.listdir(split_dir))
    missing = [(n, name) for n, name, _ in entries
               if not (name in present if os.sep not in name and "/" not in name
                       else os.path.isfile(os.path.join(split_dir, name)))]
    if missing:
        raise DataError("%s names %d file(s) that do not exist in %s, the first is %s (line %d): "
                        "restore the files or fix the list"
                        % (path, len(missing), split_dir, missing[0][1], missing[0][0]))
    return [(os.path.join(split_dir, name), label) for _, name, label in entries]


def list_imagenet(root, split="train"):
    """List the images of one split.

    Returns:
        ``(items, class_names)``: ``items`` a list of ``(path, label)`` (int labels), in the
        deterministic order described in the module docstring; ``class_names[i]`` the
        synset_words.txt description of class ``i``, else its wnid (else ``str(i)``).
    """
    if not root or not os.path.isdir(root):
        raise DataError("ImageNet directory %s does not exist: pass --data DIR pointing at the "
                        "directory that holds train/ and val/" % (root,))
    split_dir = os.path.join(root, split)
    if not os.path.isdir(split_dir):
        raise DataError("ImageNet directory %s has no %s/ subdirectory: %s; pass --data at the "
                        "ImageNet root" % (root, split, _LAYOUT))
    wnids = imagenet_wnids(root, split)
    words = read_synset_words(root) or {}
    subdirs = _subdirs(split_dir)
    if subdirs:
        index = {w: i for i, w in enumerate(wnids)}
        unknown = [d for d in subdirs if d not in index]
        if unknown:
            raise DataError("%s has class subdirectories not among the classes of %s (%d, the "
                            "first is %s): make train/ and %s/ hold the same wnids"
                            % (split_dir, "train/" if os.path.isdir(os.path.join(root, "train"))
                               else SYNSET_WORDS, len(unknown), unknown[0], split))
        items = [(os.path.join(split_dir, d, name), index[d])
                 for d in subdirs for name in _image_names(os.path.join(split_dir, d))]
        items.sort(key=lambda item: (os.path.basename(item[0]), item[0]))
        if not items:
            raise DataError("%s has class subdirectories but no image files (%s) in them: %s"
                            % (split_dir, _EXTS, _LAYOUT))
    else:
        list_file = _find_list_file(root, split)
        if list_file is None:
            if not os.listdir(split_dir):
                raise DataError("ImageNet directory %s is empty: %s" % (split_dir, _LAYOUT))
            raise DataError("ImageNet directory %s has neither class subdirectories "
                            "(<wnid>/*.JPEG) nor a %s.txt of 'filename label' lines: add one of "
                            "them or point --data at the ImageNet root" % (split_dir, split))
        items = _read_list_file(list_file, split_dir, len(wnids) if wnids else None)
        if not items:
            raise DataError("%s lists no images: add 'filename label' lines" % list_file)
    if wnids:
        names = [words.get(w, w) for w in wnids]
    else:
        names = [str(i) for i in range(max(label for _, label in items) + 1)]
    return items, names


def is_imagenet_dir(path):
    """True if ``path`` has a ``train/`` or ``val/`` with class subdirectories or a list
    file (only the layout is checked; :func:`list_imagenet` validates the contents)."""
    if not path or not os.path.isdir(path):
        return False
    for split in ("train", "val"):
        split_dir = os.path.join(path, split)
        if os.path.isdir(split_dir) and (_find_list_file(path, split) or _subdirs(split_dir)):
            return True
    return False


class ItemFlow(DataFlow):
    """Yields ``[path, key]`` for a fixed list, reshuffled at every pass if ``shuffle``
    (seeded by ``seed`` and ``stream``, or randomly without a seed)."""

    def __init__(self, items, shuffle=False, seed=None, stream=0):
        self.items = list(items)
        self.shuffle, self.seed, self.stream = shuffle, seed, stream
        self.rng = None

    def reset_state(self):
        if self.seed is None:
            self.rng = get_rng(self)
        else:
            state = np.random.SeedSequence([int(self.seed), int(self.stream)]).generate_state(4)
            self.rng = np.random.RandomState(state)

    def __len__(self):
        return len(self.items)

    def __iter__(self):
        if self.shuffle:
            if self.rng is None:
                self.reset_state()
            order = self.rng.permutation(len(self.items))
        else:
            order = range(len(self.items))
        for i in order:
            yield list(self.items[i])


def _drop_failed(dp):
    return None if dp[0] is None else dp


def _ordered_map(ds, mapper, parallel):
    """Map every item exactly once (evaluation): MapData, or tensorpack's strict
    MultiThreadMapData (same set of outputs; the order inside a pass may vary)."""
    if parallel <= 1 or len(ds) < 2:
        return MapData(ds, mapper)
    mapper.keep_failed = True
    ds = MultiThreadMapData(ds, num_thread=parallel, map_func=mapper,
                            buffer_size=min(len(ds), 4 * parallel), strict=True)
    return MapData(ds, _drop_failed)


def _default_parallel():
    return max(1, min(8, (os.cpu_count() or 1)))


def imagenet_train_flow(root, batch, shard_index=0, num_shards=1, parallel=None, image_size=224,
                        seed=None, split="train", skipped=None, max_pixels=None):
    """Training batches ``(uint8 [batch, S, S, 3] BGR, int32 [batch])`` of this rank's shard.

    fb.resnet.torch augmentation (:func:`data.augment.train_augmentors`), reshuffled every
    pass, full batches only. ``parallel`` > 1 decodes in that many processes
    (``MultiProcessMapDataZMQ``, non-strict: the flow then repeats endlessly, which is what
    tensorpack's trainers want; ``len()`` is still the batches of one pass). Default
    ``parallel``: the number of CPUs, at most 8. Use :func:`data.sharding.steps_per_epoch`
    for a steps-per-epoch that is the same on every rank. ``skipped``: the
    :class:`data.images.SkippedFiles` that counts undecodable files (in this process).
    """
    items, _ = list_imagenet(root, split)
    shard = shard_items(items, shard_index, num_shards)
    if len(shard) < int(batch):
        raise DataError("ImageNet training shard %d of %d of %s has %d images, fewer than one "
                        "batch of %d: use a smaller --batch or fewer ranks"
                        % (shard_index, num_shards, os.path.join(root, split), len(shard), batch))
    parallel = _default_parallel() if parallel is None else int(parallel)
    ds = ItemFlow(shard, shuffle=True, seed=seed, stream=2 * int(shard_index))
    mapper = ImageMapper(train_augmentors(image_size), seed=seed, stream=2 * int(shard_index) + 1, skipped=skipped,
                         max_pixels=max_pixels)
    if parallel > 1:
        ds = MultiProcessMapDataZMQ(ds, num_proc=parallel, map_func=mapper,
                                    buffer_size=min(len(shard), 200), strict=False)
    else:
        ds = MapData(ds, mapper)
    return BatchData(ds, batch, remainder=False)


def imagenet_eval_flow(root, batch, shard_index=0, num_shards=1, parallel=1, image_size=224,
                       split="val", limit=None, skipped=None, max_pixels=None):
    """Evaluation batches ``(uint8 [B, S, S, 3] BGR, int32 [B])``, every image once.

    Resize the shortest edge to round(S*256/224) (bicubic), center crop S. ``limit`` keeps
    the first ``limit`` items of the split before sharding. The shard is a fixed strided
    slice of the fixed list; the last batch may be smaller; undecodable files are skipped.
    ``parallel`` > 1 decodes in threads (the set per pass is exact, the order may vary).
    """
    items, _ = list_imagenet(root, split)
    if limit is not None:
        items = items[:max(0, int(limit))]
    shard = shard_items(items, shard_index, num_shards)
    mapper = ImageMapper(eval_augmentors(image_size), skipped=skipped, max_pixels=max_pixels)
    ds = _ordered_map(ItemFlow(shard), mapper, int(parallel))
    return BatchData(ds, batch, remainder=True)


def list_image_directory(directory):
    """Sorted names of the image files directly in ``directory`` (DataError if none)."""
    if not directory or not os.path.isdir(directory):
        raise DataError("image directory %s does not exist: pass an existing directory of "
                        "images" % (directory,))
    names = _image_names(directory)
    if not names:
        raise DataError("image directory %s has no image files (%s): put the images directly "
                        "in it (not in subdirectories)" % (directory, _EXTS))
    return names


def black_box_directory_flow(directory, batch, image_size=224, parallel=1, skipped=None, max_pixels=None):
    """Every image file directly in ``directory``, sorted by file name, resized naively to
    SxS (bicubic, no crop: the original's black-box mode). Yields ``(uint8 [B, S, S, 3] BGR,
    file names [B] (str))``, the last batch possibly smaller; undecodable files are
    reported, counted in ``skipped`` (a :class:`data.images.SkippedFiles`) and skipped."""
    names = list_image_directory(directory)
    items = [(os.path.join(directory, name), name) for name in names]
    mapper = ImageMapper(black_box_augmentors(image_size), key_dtype=None, skipped=skipped, max_pixels=max_pixels)
    ds = _ordered_map(ItemFlow(items), mapper, int(parallel))
    return BatchData(ds, batch, remainder=True)
