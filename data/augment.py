"""Image augmentation and evaluation crops for ImageNet-style data, on uint8 BGR images.

Training follows fb.resnet.torch (``datasets/imagenet.lua`` / ``transforms.lua``), the
recipe of Goyal et al. [7] that the paper follows (Sec. 5):

1. random-size crop: 8%-100% of the area, aspect ratio 3/4 to 4/3, resized to SxS
   (bicubic), falling back to resize-shortest-edge + center crop after 10 failed tries
   (tensorpack's ``GoogleNetRandomCropAndResize`` implements exactly this);
2. colour jitter of 0.4: brightness (scale by ``1 + U(-0.4, 0.4)``), contrast (blend with
   the mean gray level) and saturation (blend with the gray image), in random order;
3. PCA lighting noise (AlexNet's): add ``eigvec @ (alpha * eigval)`` with
   ``alpha ~ N(0, 0.1)``, using the standard ImageNet RGB eigen-decomposition, with the
   eigenvalues scaled from the 0..1 to the 0..255 range and the eigenvector *rows*
   (which index colour channels) reversed from RGB to BGR;
4. horizontal flip with probability 1/2.

Steps 2-4 run in float32 without intermediate clipping, as in the Torch code; the result
is rounded and clipped to uint8 once at the end.

Evaluation (the original's convention, docs/ORIGINAL.md): resize the shortest
edge to 256 (bicubic), center crop 224; for another size S, shortest edge round(S*256/224)
then center crop S. The black-box directory mode resizes naively to SxS (bicubic), no crop.
"""
import os

import cv2
import numpy as np
from tensorpack.dataflow import imgaug

from .images import read_image_bgr

# ImageNet RGB PCA (AlexNet; the numbers of fb.resnet.torch), on the 0..1 scale.
# Columns of PCA_EIGVEC_RGB are eigenvectors, rows are the R, G, B channels.
PCA_EIGVAL = np.array([0.2175, 0.0188, 0.0045], dtype=np.float32)
PCA_EIGVEC_RGB = np.array([[-0.5675, 0.7192, 0.4009],
                           [-0.5808, -0.0045, -0.8140],
                           [-0.5836, -0.6948, 0.4203]], dtype=np.float32)
PCA_EIGVEC_BGR = PCA_EIGVEC_RGB[::-1, :].copy()

JITTER = 0.4
LIGHTING_STD = 0.1
EVAL_RESIZE_RATIO = 256.0 / 224.0


def eval_resize_size(image_size):
    """Shortest edge before the center crop: 256 for 224, round(S * 256 / 224) otherwise."""
    return int(round(image_size * EVAL_RESIZE_RATIO))


def train_augmentors(image_size=224):
    """fb.resnet.torch's training augmentation for BGR images (module docstring), as a list
    of tensorpack augmentors taking uint8 and giving float32 (see :func:`to_uint8`)."""
    return [
        imgaug.GoogleNetRandomCropAndResize(crop_area_fraction=(0.08, 1.0),
                                            aspect_ratio_range=(3.0 / 4.0, 4.0 / 3.0),
                                            target_shape=image_size, interp=cv2.INTER_CUBIC),
        imgaug.ToFloat32(),
        imgaug.RandomOrderAug([
            imgaug.BrightnessScale((1.0 - JITTER, 1.0 + JITTER), clip=False),
            imgaug.Contrast((1.0 - JITTER, 1.0 + JITTER), rgb=False, clip=False),
            imgaug.Saturation(JITTER, rgb=False, clip=False),
        ]),
        imgaug.Lighting(LIGHTING_STD, eigval=PCA_EIGVAL * 255.0, eigvec=PCA_EIGVEC_BGR,
                        clip=False),
        imgaug.Flip(horiz=True),
    ]


def eval_augmentors(image_size=224):
    """Resize the shortest edge to round(S*256/224) (bicubic) and center crop SxS."""
    return [
        imgaug.ResizeShortestEdge(eval_resize_size(image_size), interp=cv2.INTER_CUBIC),
        imgaug.CenterCrop((image_size, image_size)),
    ]


def black_box_augmentors(image_size=224):
    """The original's black-box directory mode: a naive bicubic resize to SxS, no crop."""
    return [imgaug.Resize((image_size, image_size), interp=cv2.INTER_CUBIC)]


def to_uint8(image):
    """Round and clip to uint8 (a no-op for uint8 input)."""
    if image.dtype == np.uint8:
        return image
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _nested(aug):
    for name in ("aug_lists", "augmentors"):
        children = getattr(aug, name, None)
        if isinstance(children, (list, tuple)):
            return children
    return ()


def seed_augmentors(augmentors, seed_seq):
    """Give every augmentor (and those nested in RandomOrderAug and the like) its own
    RandomState derived from a ``numpy.random.SeedSequence``."""
    for aug, child in zip(augmentors, seed_seq.spawn(len(augmentors))):
        aug.rng = np.random.RandomState(child.generate_state(4))
        children = _nested(aug)
        if children:
            seed_augmentors(children, child)


class ImageMapper:
    """The map function of the image pipelines: ``(path, key) -> [uint8 image, key]``.

    Decodes with :func:`data.images.read_image_bgr` and applies the augmentors. A file that
    cannot be decoded gives ``None`` (for flows that drop None), or ``[None, key]`` with
    ``keep_failed=True`` (for tensorpack's strict parallel maps, which cannot carry None).
    ``key_dtype`` converts the key (int32 labels); None keeps it as it is (file names).

    Randomness: with a ``seed``, the augmentors are seeded from ``(seed, stream)``, and a
    forked worker process reseeds from ``(seed, stream, pid)`` so that workers differ (their
    streams then vary between runs; use one process for bit-exact repeats). Without a seed,
    tensorpack seeds them itself (and again after a fork).
    """

    def __init__(self, augmentors, key_dtype=np.int32, seed=None, stream=0, skipped=None,
                 keep_failed=False, max_pixels=None):
        self.augmentors = list(augmentors)
        self.max_pixels = max_pixels
        self.key_dtype, self.seed, self.stream = key_dtype, seed, stream
        self.skipped, self.keep_failed = skipped, keep_failed
        self._pid = os.getpid()
        self._reseed([])

    def _reseed(self, extra):
        if self.seed is not None and self.augmentors:
            entropy = [int(self.seed), int(self.stream)] + list(extra)
            seed_augmentors(self.augmentors, np.random.SeedSequence(entropy))

    def __call__(self, dp):
        pid = os.getpid()
        if pid != self._pid:  # first call in a forked worker
            self._pid = pid
            self._reseed([pid])
        path, key = dp
        image = read_image_bgr(path, self.skipped, self.max_pixels)
        if image is None:
            return [None, key] if self.keep_failed else None
        for aug in self.augmentors:
            image = aug.augment(image)
        if self.key_dtype is not None:
            key = self.key_dtype(key)
        return [to_uint8(image), key]
