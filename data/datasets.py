"""One interface over the data sets: sizes, shapes, this rank's shard of the training and
evaluation flows, and the count of image files skipped as unreadable (``skipped``, per data
source)."""
from .errors import DataError
from .fake import fake_flow
from .fashion_flow import fashion_eval_flow, fashion_train_flow
from .fashion_mnist import load_fashion_mnist
from .images import SkippedFiles

# (image size, channels, classes) of each data set
DATASET_SHAPES = {"fashion-mnist": (28, 1, 10), "imagenet": (224, 3, 1000)}


class FashionMNIST:
    """``validation``: the last N training images are held out; training never sees them and
    evaluation reads them instead of the test set (schedules are chosen on them, so that the
    test set is read only for the final figures)."""
    name = "fashion-mnist"
    image_size, image_channels, num_classes = 28, 1, 10

    def __init__(self, directory, validation=0):
        self.directory = directory
        self.validation = validation
        self._train = None
        self._test = None
        self._full_train = None
        self.skipped = SkippedFiles()       # IDX arrays: never any, but the interface has it

    def _all_train(self):
        """The whole training file, read once (the training and held-out arrays are its views)."""
        if self._full_train is None:
            images, labels = load_fashion_mnist(self.directory, "train")
            if self.validation >= len(labels):
                raise DataError("--validation %d holds out every one of the %d training images: pass a smaller N "
                                 "(e.g. 5000)" % (self.validation, len(labels)))
            self._full_train = images, labels
        return self._full_train

    @property
    def train_arrays(self):
        if self._train is None:
            images, labels = self._all_train()
            cut = len(labels) - self.validation
            self._train = images[:cut], labels[:cut]
        return self._train

    @property
    def test_arrays(self):
        """The evaluation images: the test set, or the held-out training images."""
        if self._test is None:
            if self.validation:
                images, labels = self._all_train()
                self._test = images[-self.validation:], labels[-self.validation:]
            else:
                self._test = load_fashion_mnist(self.directory, "test")
        return self._test

    @property
    def num_train(self):
        return len(self.train_arrays[1])

    def num_eval(self, limit=None):
        n = len(self.test_arrays[1])
        return min(n, limit) if limit else n

    def train_flow(self, batch, rank, size, seed=None, workers=None):
        images, labels = self.train_arrays
        return fashion_train_flow(images, labels, batch, shard_index=rank, num_shards=size, seed=seed)

    def eval_flow(self, batch, rank, size, limit=None):
        images, labels = self.test_arrays
        return fashion_eval_flow(images, labels, batch, shard_index=rank, num_shards=size, limit=limit)


class ImageNet:
    name = "imagenet"
    image_size, image_channels, num_classes = 224, 3, 1000

    def __init__(self, root, max_pixels=None):
        from .imagenet import list_imagenet
        self.root = root
        self.max_pixels = max_pixels
        self.skipped = SkippedFiles()
        self._train_list = None
        self._val_list, self.class_names = list_imagenet(root, "val")
        self.num_classes = max(len(self.class_names), 2) if self.class_names else 1000

    @property
    def num_train(self):
        from .imagenet import list_imagenet
        if self._train_list is None:
            self._train_list, _ = list_imagenet(self.root, "train")
        return len(self._train_list)

    def num_eval(self, limit=None):
        n = len(self._val_list)
        return min(n, limit) if limit else n

    def train_flow(self, batch, rank, size, seed=None, workers=None):
        from .imagenet import imagenet_train_flow
        return imagenet_train_flow(self.root, batch, shard_index=rank, num_shards=size,
                                   parallel=workers or 4, image_size=self.image_size, seed=seed, skipped=self.skipped,
                                   max_pixels=self.max_pixels)

    def eval_flow(self, batch, rank, size, limit=None):
        from .imagenet import imagenet_eval_flow
        return imagenet_eval_flow(self.root, batch, shard_index=rank, num_shards=size,
                                  image_size=self.image_size, limit=limit, skipped=self.skipped,
                                  max_pixels=self.max_pixels)


class Fake:
    """Random images of the right shapes (``--fake``): benchmarks and tests."""

    def __init__(self, like):
        self.name = like
        self.image_size, self.image_channels, self.num_classes = DATASET_SHAPES[like]
        self.num_train = 1024
        self.skipped = SkippedFiles()

    def num_eval(self, limit=None):
        return limit or 64

    def train_flow(self, batch, rank, size, seed=None, workers=None):
        return fake_flow(batch, self.image_size, self.image_channels, self.num_classes,
                         seed=(seed or 0) + rank, size=max(1, self.num_train // (batch * size)))

    def eval_flow(self, batch, rank, size, limit=None):
        n = self.num_eval(limit)
        per_rank = max(1, n // (batch * size))
        return fake_flow(batch, self.image_size, self.image_channels, self.num_classes,
                         seed=1000 + rank, size=per_rank, fixed=True)


def open_dataset(dataset, path, fake=False, max_pixels=None, validation=0):
    """The data source of ``dataset`` at ``path`` (random batches with ``fake``); image files
    with more than ``max_pixels`` pixels are skipped before decoding. ``validation``: hold out
    the last N training images and evaluate on them (Fashion-MNIST)."""
    if validation and (fake or dataset != "fashion-mnist"):
        raise DataError("--validation holds out Fashion-MNIST training images; %s has its own split: drop "
                         "--validation" % ("--fake data" if fake else "ImageNet (val/)"))
    if fake:
        return Fake(dataset)
    if dataset == "fashion-mnist":
        return FashionMNIST(path, validation=validation)
    return ImageNet(path, max_pixels=max_pixels)
