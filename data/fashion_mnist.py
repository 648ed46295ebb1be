"""Fashion-MNIST from its four IDX files, read and validated without any download.

Fashion-MNIST (Xiao et al., 2017) is the small real data set this project trains and
attacks on a CPU machine, in place of ImageNet (which the paper uses, Sec. 5): 60,000
training and 10,000 test images, 28x28 grayscale, 10 classes. Debian's package
``dataset-fashion-mnist`` installs it as ``/usr/share/datasets/fashion-mnist/``
``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``; the files may also be uncompressed.

The IDX format (LeCun's MNIST format): a big-endian header of a 4-byte magic number
(two zero bytes, a type byte 0x08 = unsigned byte, a byte with the number of dimensions),
one big-endian uint32 per dimension, then the values. Images are ``0x00000803``
(N x 28 x 28), labels ``0x00000801`` (N). Every check below raises a one-line
:class:`~data.errors.DataError` naming the file, the problem and the fix.
"""
import gzip
import os
import zlib

import numpy as np

from .errors import DataError

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
IMAGE_SIZE = 28
NUM_CLASSES = 10
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension

# Split name -> file stems. "val" is accepted for the test split, which is what
# evaluation reads (Fashion-MNIST has no separate validation set).
SPLIT_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SPLIT_ALIASES = {"train": "train", "test": "test", "t10k": "test", "val": "test"}

_FIX = "re-install dataset-fashion-mnist (apt-get install --reinstall dataset-fashion-mnist) " \
       "or point --data at the right directory"
_INSTALL = "install it with `apt-get install dataset-fashion-mnist` or pass --data DIR " \
           "with the four files"


def _split_name(split):
    try:
        return SPLIT_ALIASES[split]
    except KeyError:
        raise DataError("unknown Fashion-MNIST split %r: use 'train' or 'test' (or 'val' for "
                        "the test split)" % (split,)) from None


def _find(directory, stem):
    """The path of ``stem`` or ``stem.gz`` in ``directory`` (the uncompressed one first)."""
    for name in (stem, stem + ".gz"):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    return None


def fashion_mnist_files(directory=DEFAULT_DIR, split="train"):
    """``(images_path, labels_path)`` of a split, or DataError naming what is missing."""
    split = _split_name(split)
    if not os.path.isdir(directory):
        raise DataError("Fashion-MNIST directory %s does not exist: %s" % (directory, _INSTALL))
    stems = SPLIT_STEMS[split]
    paths = [_find(directory, stem) for stem in stems]
    missing = [stem + "[.gz]" for stem, path in zip(stems, paths) if path is None]
    if missing:
        raise DataError("Fashion-MNIST directory %s lacks %s: %s"
                        % (directory, ", ".join(missing), _INSTALL))
    return tuple(paths)


def is_fashion_mnist_dir(path):
    """True if ``path`` holds all four Fashion-MNIST IDX files (each raw or .gz).
    Only looks at file names; :func:`load_fashion_mnist` validates the contents."""
    if not path or not os.path.isdir(path):
        return False
    return all(_find(path, stem) is not None
               for stems in SPLIT_STEMS.values() for stem in stems)


def _read_bytes(path):
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        with open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as e:
        # gzip.BadGzipFile is an OSError; a cut-off .gz ends in EOFError.
        raise DataError("Fashion-MNIST file %s cannot be read (%s: %s): the file is damaged or "
                        "truncated; %s" % (path, type(e).__name__, e, _FIX)) from None


def read_idx(path, expected_magic, what):
    """Read one IDX file of unsigned bytes and return it as a uint8 array of its dimensions.

    ``what`` describes the expected content for messages ("idx3 images", "idx1 labels").
    Checks: the magic number, a complete header, no zero-sized dimension, and a payload of
    exactly the product of the dimensions (a shorter one means a truncated file).
    """
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError("Fashion-MNIST file %s is %d bytes long, too short for an IDX header: "
                        "the file is truncated; %s" % (path, len(data), _FIX))
    magic = int.from_bytes(data[:4], "big")
    if magic != expected_magic:
        kind = "image" if expected_magic == IMAGES_MAGIC else "label"
        raise DataError("Fashion-MNIST file %s has magic 0x%x, expected 0x%x (%s): the file is "
                        "not a Fashion-MNIST %s file; %s"
                        % (path, magic, expected_magic, what, kind, _FIX))
    ndim = expected_magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError("Fashion-MNIST file %s is %d bytes long, shorter than its %d-byte IDX "
                        "header: the file is truncated; %s" % (path, len(data), header, _FIX))
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims, dtype=np.int64))
    payload = len(data) - header
    if payload < expected:
        raise DataError("Fashion-MNIST file %s holds %d bytes of data, expected %d for its "
                        "dimensions %s: the file is truncated; %s"
                        % (path, payload, expected, "x".join(map(str, dims)), _FIX))
    if payload > expected:
        raise DataError("Fashion-MNIST file %s holds %d bytes of data, %d more than its "
                        "dimensions %s allow: the file is corrupt; %s"
                        % (path, payload, payload - expected, "x".join(map(str, dims)), _FIX))
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def load_fashion_mnist(directory=DEFAULT_DIR, split="train"):
    """Images and labels of one split.

    Args:
        directory: the directory with the IDX files (default: Debian's location).
        split: "train" (60,000 images) or "test" (10,000; "val" and "t10k" are aliases).

    Returns:
        ``(images, labels)``: uint8 ``[N, 28, 28, 1]`` (0 = background, 255 = ink) and
        int32 ``[N]`` in ``[0, 10)``; names of the classes are :data:`CLASS_NAMES`.
    """
    directory = directory or DEFAULT_DIR
    images_path, labels_path = fashion_mnist_files(directory, split)
    images = read_idx(images_path, IMAGES_MAGIC, "idx3 images")
    labels = read_idx(labels_path, LABELS_MAGIC, "idx1 labels")
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError("Fashion-MNIST file %s holds images of %dx%d, expected %dx%d: the file "
                        "is not a Fashion-MNIST image file; %s"
                        % (images_path, images.shape[1], images.shape[2],
                           IMAGE_SIZE, IMAGE_SIZE, _FIX))
    if len(images) != len(labels):
        raise DataError("Fashion-MNIST files %s (%d images) and %s (%d labels) do not agree: "
                        "they belong to different sets; %s"
                        % (images_path, len(images), labels_path, len(labels), _FIX))
    if len(images) == 0:
        raise DataError("Fashion-MNIST file %s holds no images: %s" % (images_path, _FIX))
    if labels.max() >= NUM_CLASSES:
        bad = int(np.argmax(labels >= NUM_CLASSES))
        raise DataError("Fashion-MNIST file %s has label %d at index %d, outside [0, %d): the file "
                        "is corrupt; %s" % (labels_path, labels[bad], bad, NUM_CLASSES, _FIX))
    return images[..., None], labels.astype(np.int32)
