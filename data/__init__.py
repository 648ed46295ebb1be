"""Input pipelines: Fashion-MNIST (IDX files), ImageNet-style directories, black-box image
directories and fake batches, all as tensorpack DataFlows of uint8 images and int32 labels,
shardable across Horovod ranks. Nothing here downloads anything.

Modules: ``datasets`` (one interface over them all: ``open_dataset``), ``errors``
(DataError), ``fashion_mnist`` (IDX reader), ``fashion_flow`` (its flows), ``images`` (robust
decoding), ``augment`` (fb.resnet.torch augmentation, eval crops), ``imagenet`` (directory
listing and flows), ``sharding``, ``fake``.
"""
import os

import core.compat  # noqa: F401  (the TF2 workarounds, before TensorFlow loads)

from .errors import DataError
from .fake import fake_flow
from .fashion_flow import fashion_eval_flow, fashion_train_flow
from .fashion_mnist import CLASS_NAMES as FASHION_MNIST_CLASS_NAMES
from .fashion_mnist import DEFAULT_DIR as FASHION_MNIST_DIR
from .fashion_mnist import is_fashion_mnist_dir, load_fashion_mnist
from .datasets import open_dataset
from .images import SkippedFiles, read_image_bgr
from .imagenet import (black_box_directory_flow, imagenet_eval_flow, imagenet_train_flow,
                       is_imagenet_dir, list_imagenet)
from .sharding import shard_items, steps_per_epoch

__all__ = ["DataError", "detect_dataset", "fake_flow", "fashion_train_flow", "fashion_eval_flow",
           "FASHION_MNIST_CLASS_NAMES", "FASHION_MNIST_DIR", "is_fashion_mnist_dir",
           "load_fashion_mnist", "read_image_bgr", "SkippedFiles", "black_box_directory_flow", "open_dataset",
           "imagenet_train_flow", "imagenet_eval_flow", "is_imagenet_dir", "list_imagenet",
           "shard_items", "steps_per_epoch"]


def detect_dataset(path):
    """``'fashion-mnist'`` or ``'imagenet'`` for a data directory, from its layout alone.

    Fashion-MNIST: the four IDX files (raw or .gz). ImageNet: ``train/`` or ``val/`` with
    class subdirectories or a list file. Anything else raises a one-line DataError.
    """
    if not path or not os.path.isdir(path):
        raise DataError("data directory %s does not exist: pass --data DIR (Fashion-MNIST: "
                        "`apt-get install dataset-fashion-mnist` gives %s)"
                        % (path, FASHION_MNIST_DIR))
    if is_fashion_mnist_dir(path):
        return "fashion-mnist"
    if is_imagenet_dir(path):
        return "imagenet"
    raise DataError("%s is neither a Fashion-MNIST directory ({train,t10k}-{images-idx3,"
                    "labels-idx1}-ubyte[.gz]) nor an ImageNet-style one (train/<wnid>/*.JPEG, "
                    "val/<wnid>/*.JPEG or val/ with val.txt): pass --data DIR or --dataset" % path)
